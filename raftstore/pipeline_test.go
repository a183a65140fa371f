package raftstore

import (
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// When raft stops reading a pipeline's answers (its decoder returns on a
// rejected append), further appends still return instead of blocking the
// replication goroutine for good, and the pipeline closes.
func TestPipelineAppendsReturnWhenAnswersAreNotRead(t *testing.T) {
	follower, err := raft.NewTCPTransport("127.0.0.1:0", nil, 2, 5*time.Second, io.Discard)
	if err != nil {
		t.Skipf("no loopback TCP: %v", err)
	}
	defer follower.Close()
	leader, err := raft.NewTCPTransport("127.0.0.1:0", nil, 2, 5*time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer leader.Close()
	stop := make(chan struct{})
	defer close(stop)
	go func() { // the follower rejects every append, as one that lost its log would
		for {
			select {
			case rpc := <-follower.Consumer():
				rpc.Respond(&raft.AppendEntriesResponse{Term: 1, Success: false}, nil)
			case <-stop:
				return
			}
		}
	}()
	g := guardCommits(leader, func() uint64 { return ^uint64(0) })
	p, err := g.AppendEntriesPipeline("f", follower.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	const appends = 8
	sent := make(chan error, appends)
	go func() {
		for i := range appends {
			_, err := p.AppendEntries(&raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax}, Term: 1, PrevLogEntry: uint64(i)}, &raft.AppendEntriesResponse{})
			sent <- err
		}
	}()
	// Nobody reads p.Consumer(), as after raft's decoder has returned.
	deadline := time.After(30 * time.Second)
	for i := range appends {
		select {
		case err := <-sent:
			if err != nil {
				t.Fatalf("append %d: %v", i, err)
			}
		case <-deadline:
			p.Close() // frees the blocked sender before failing
			t.Fatalf("append %d of %d never returned: the replication goroutine would hang for good", i+1, appends)
		}
	}
	// The answers are all kept, in order, for a reader that comes late.
	for i := range appends {
		select {
		case f := <-p.Consumer():
			if got := f.Request().PrevLogEntry; got != uint64(i) {
				t.Fatalf("answer %d is for append %d", i, got)
			}
			if f.Error() != nil || f.Response().Success {
				t.Fatalf("answer %d: %v %+v, want the follower's rejection", i, f.Error(), f.Response())
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("answer %d of %d missing", i+1, appends)
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
}
