package swarm

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/shoalproject/shoal/agent"
)

// The worker's side of the log path: it follows the leader's log
// subscriptions for this node and, for each, reads the asked tasks' logs
// from the executor and publishes them in batches. All of it runs beside
// the assignment session, never in it: a burst of logs cannot hold up
// assignments or heartbeats. The queues between the readers and the
// publisher are bounded and the readers wait when they are full; nothing
// is dropped, since the task's log file (not memory) holds what waits.

// Bounds of the worker's log path.
const (
	// maxLogSubs bounds the subscriptions a node serves at once; more are
	// refused (the request names the node's tasks as not read).
	maxLogSubs = 64
	// logQueue bounds the lines waiting for a publication.
	logQueue = 2 * maxLogBatchLines
	// logReadersAtOnce bounds the tasks read at once for a request
	// without Follow (a follow reads all of its tasks: they go on).
	logReadersAtOnce = 8
)

// logFlushInterval is how long a line waits for others before it is sent.
var logFlushInterval = 50 * time.Millisecond

// logAliveInterval is how long a follow with nothing to send waits before
// it asks the leader, with an empty publication, whether its request still
// stands. The leader's Close ends a request at once, but it is dropped
// when the node's queue is full; without this a follow of a silent task
// would keep its place among maxLogSubs until the node's stream reconnects.
var logAliveInterval = 5 * time.Second

// logSessions follows the leader's log subscriptions, connecting again
// whenever the stream ends; the subscriptions of a stream that ended are
// dropped (their leader is gone, or will send them again).
func (w *Worker) logSessions(ctx context.Context, ld LogDispatcher) {
	var b backoff
	for ctx.Err() == nil {
		ch, err := ld.LogSubscriptions(ctx, w.NodeID)
		if err != nil {
			w.logger().Debug("swarm: worker log subscriptions", "err", err)
			b.wait(ctx)
			continue
		}
		b.reset()
		w.serveLogSubs(ctx, ld, ch)
		if ctx.Err() == nil {
			b.wait(ctx)
		}
	}
}

// serveLogSubs serves the subscriptions of one stream until it ends.
func (w *Worker) serveLogSubs(ctx context.Context, ld LogDispatcher, ch <-chan LogSubscription) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	subs := map[string]*logReader{}
	finished := make(chan *logReader)
	for {
		var s LogSubscription
		select {
		case r := <-finished:
			if subs[r.id] == r {
				delete(subs, r.id)
			}
			continue
		case v, ok := <-ch:
			if !ok {
				return
			}
			s = v
		}
		r := subs[s.ID]
		switch {
		case s.Close:
			if r != nil {
				r.cancel()
				delete(subs, s.ID)
			}
			continue
		case r == nil && len(subs) >= maxLogSubs:
			wg.Add(1)
			go func() {
				defer wg.Done()
				p := LogPublication{Subscription: s.ID, Done: true}
				for _, id := range s.Tasks {
					p.Failed = append(p.Failed, TaskLogError{TaskID: id, Err: fmt.Sprintf("the node serves %d log requests already; try again later", maxLogSubs)})
				}
				ld.PublishLogs(ctx, w.NodeID, p)
			}()
			continue
		case r == nil:
			rctx, rcancel := context.WithCancel(ctx)
			r = &logReader{id: s.ID, opts: s.Options, w: w, ld: ld, ctx: rctx, cancel: rcancel,
				tasks: map[string]bool{}, q: make(chan LogLine, logQueue), ack: make(chan struct{}, 1),
				allRead: make(chan struct{}), sem: make(chan struct{}, logReadersAtOnce)}
			subs[s.ID] = r
			wg.Add(1)
			w.logReads.Add(1)
			go func() {
				defer wg.Done()
				defer w.logReads.Add(-1)
				r.publish()
				select {
				case finished <- r:
				case <-ctx.Done():
				}
			}()
		}
		r.add(s.Tasks, s.Options, &wg)
	}
}

// logReader serves one subscription on this node.
type logReader struct {
	id     string
	opts   LogOptions
	w      *Worker
	ld     LogDispatcher
	ctx    context.Context
	cancel context.CancelFunc
	q      chan LogLine
	ack    chan struct{} // a publication is due now (the leader waits for one)
	sem    chan struct{}
	// allRead closes once every task is read (without Follow).
	allRead chan struct{}

	readers sync.WaitGroup
	tasks   map[string]bool // tasks being read or read (serveLogSubs only)
	mu      sync.Mutex
	failed  []TaskLogError
}

// add starts reading the tasks not read yet (with the options of the
// subscription message that names them), and has the publisher answer at
// once.
func (r *logReader) add(ids []string, opts LogOptions, wg *sync.WaitGroup) {
	first := len(r.tasks) == 0
	for _, id := range ids {
		if r.tasks[id] || len(r.tasks) >= maxLogSubTasks {
			continue
		}
		r.tasks[id] = true
		r.readers.Add(1)
		go r.read(id, opts)
	}
	select {
	case r.ack <- struct{}{}:
	default:
	}
	if first && !r.opts.Follow {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.readers.Wait()
			close(r.allRead)
		}()
	}
}

// read reads one task's logs into the queue, waiting while it is full.
func (r *logReader) read(id string, opts LogOptions) {
	defer r.readers.Done()
	if !r.opts.Follow {
		select {
		case r.sem <- struct{}{}:
			defer func() { <-r.sem }()
		case <-r.ctx.Done():
			return
		}
	}
	err := r.w.Executor.Logs(r.ctx, id, opts.agentOptions(), func(l agent.LogLine) error {
		if !r.opts.wants(l.Stream) {
			return nil
		}
		select {
		case r.q <- LogLine{TaskID: id, Stream: l.Stream, Time: l.Time, Line: l.Line}:
			return nil
		case <-r.ctx.Done():
			return r.ctx.Err()
		}
	})
	if err == nil || r.ctx.Err() != nil {
		return
	}
	msg := err.Error()
	if errors.Is(err, agent.ErrNotFound) {
		msg = "no logs on the node: the task's container is gone"
	}
	r.mu.Lock()
	r.failed = append(r.failed, TaskLogError{TaskID: id, Err: msg})
	r.mu.Unlock()
	select {
	case r.ack <- struct{}{}:
	default:
	}
}

// publish sends the queued lines in batches until the subscription ends
// or (without Follow) every task is read and sent.
func (r *logReader) publish() {
	defer r.cancel()
	var p LogPublication
	size := 0
	send := func(done bool) bool {
		r.mu.Lock()
		p.Failed, r.failed = append(p.Failed, r.failed...), nil
		r.mu.Unlock()
		p.Subscription, p.Done = r.id, done
		// A reader behind (or a leader busy) asks for the batch again;
		// the subscription's end, or its stream's, stops the tries.
		var b backoff
		for {
			err := r.ld.PublishLogs(r.ctx, r.w.NodeID, p)
			if err == nil {
				p, size = LogPublication{}, 0
				return true
			}
			if r.ctx.Err() != nil || errors.Is(err, ErrNotFound) || !Retryable(err) {
				if r.ctx.Err() == nil && !errors.Is(err, ErrNotFound) {
					r.w.logger().Debug("swarm: publishing logs; the request is dropped", "subscription", r.id, "err", err)
				}
				return false
			}
			if !b.wait(r.ctx) {
				return false
			}
		}
	}
	take := func(l LogLine) bool {
		p.Lines = append(p.Lines, l)
		size += len(l.Line) + 64
		if len(p.Lines) >= maxLogBatchLines || size >= maxLogBatchBytes {
			return send(false)
		}
		return true
	}
	tick := time.NewTicker(logFlushInterval)
	defer tick.Stop()
	lastSent := time.Now()
	for {
		select {
		case <-r.ctx.Done():
			return
		case l := <-r.q:
			if !take(l) {
				return
			}
		case <-r.ack:
			if !send(false) {
				return
			}
			lastSent = time.Now()
		case <-tick.C:
			alive := r.opts.Follow && time.Since(lastSent) >= logAliveInterval
			if len(p.Lines) == 0 && !alive {
				continue
			}
			if !send(false) {
				return // an ended request answers ErrNotFound
			}
			lastSent = time.Now()
		case <-r.allRead:
			// Every reader has ended: what they read is queued.
			for {
				select {
				case l := <-r.q:
					if !take(l) {
						return
					}
					continue
				default:
				}
				break
			}
			send(true)
			return
		}
	}
}
