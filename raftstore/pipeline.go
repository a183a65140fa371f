package raftstore

import (
	"sync"

	"github.com/hashicorp/raft"
)

// drainedPipeline keeps reading the answers of a pipelined replication
// stream, so that the stream can always be closed.
//
// hashicorp/raft's pipeline decoder stops reading Consumer as soon as a
// follower rejects an append or answers with a newer term. The sender may
// then issue one more append before it sees that; raft's net transport
// cannot hand that append's answer over (nobody reads), so it stops taking
// appends, and the sender blocks for good inside AppendEntries, before the
// deferred Close that would free it. The follower then gets heartbeats but
// never another entry, and Shutdown waits forever for the sender
// (hashicorp/raft#612; seen here as a manager's Close that never returned).
// Here the answers are always taken from the transport and queued in order
// for raft, so the transport never stops and the sender always returns.
// The queue holds at most what was sent after raft stopped reading: a
// send or two.
type drainedPipeline struct {
	raft.AppendPipeline
	out  chan raft.AppendFuture
	stop chan struct{}
	once sync.Once
}

func drainPipeline(p raft.AppendPipeline) *drainedPipeline {
	d := &drainedPipeline{AppendPipeline: p, out: make(chan raft.AppendFuture), stop: make(chan struct{})}
	go d.forward(p.Consumer())
	return d
}

func (d *drainedPipeline) forward(in <-chan raft.AppendFuture) {
	var queue []raft.AppendFuture
	for {
		var out chan raft.AppendFuture
		var next raft.AppendFuture
		if len(queue) > 0 {
			out, next = d.out, queue[0]
		}
		select {
		case f, ok := <-in:
			if !ok {
				return
			}
			queue = append(queue, f)
		case out <- next:
			queue[0] = nil
			queue = queue[1:]
		case <-d.stop:
			return
		}
	}
}

// Consumer returns the answers in the order the transport gave them.
func (d *drainedPipeline) Consumer() <-chan raft.AppendFuture { return d.out }

// Close stops the forwarding and closes the transport's pipeline.
func (d *drainedPipeline) Close() error {
	d.once.Do(func() { close(d.stop) })
	return d.AppendPipeline.Close()
}
