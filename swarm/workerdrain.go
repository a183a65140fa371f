package swarm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/netagent"
)

// Draining, the worker's side (the managers' side and the reasons are in
// drain.go): the worker confirms each network view its agent applied, and
// a task it was told to stop runs on until the managers list it as
// drained, then lingers for the requests under way (at least
// DefaultFixedDrainDelay, then until its clients' connections are gone,
// where the network agent can count them, at most DrainDelay), then
// stops.

// Who decides the bounds: the managers. Their DrainTimeout and DrainDelay
// come in every session (as the heartbeat period does), and a worker
// whose host set neither Worker.DrainTimeout nor Worker.DrainDelay takes
// its bounds from there: the linger as told, and its own wait, for when
// no leader answers, the managers' DrainTimeout plus DrainTimeoutMargin,
// so that while a leader answers it is the leader's bound (which knows
// which nodes are down) that ends a wait. A session without them (a
// manager from before they were sent) leaves the defaults below.

// DrainTimeoutMargin is how much longer than the managers' DrainTimeout
// a worker waits for their word: the time for that word to reach it
// (the managers' bound starts when the leader sees the drain, a little
// before the worker does).
const DrainTimeoutMargin = 5 * time.Second

// DefaultWorkerDrainTimeout is how long a task waits at most for the
// managers' word that it has drained when they did not say their bound:
// longer than DefaultDrainTimeout, for the reason above.
const DefaultWorkerDrainTimeout = DefaultDrainTimeout + DrainTimeoutMargin

// Bounds on the drain bounds a session may set: a broken answer must not
// keep a stopping task running for days.
const (
	maxSessionDrainTimeout = time.Hour
	maxSessionDrainDelay   = time.Minute
)

// checkDrainBounds refuses managers' drain bounds above what a session
// may set: workers cap what the session says at these, so beyond them a
// worker, not the managers, would decide the bound.
func checkDrainBounds(timeout, delay time.Duration) error {
	if timeout > maxSessionDrainTimeout || delay > maxSessionDrainDelay {
		return fmt.Errorf("%w: DrainTimeout %v and DrainDelay %v: at most %v and %v", api.ErrInvalidSpec, timeout, delay,
			maxSessionDrainTimeout, maxSessionDrainDelay)
	}
	return nil
}

// sessionDrain is what the last session said of the managers' drain
// bounds (0: nothing).
type sessionDrain struct{ timeout, delay atomic.Int64 }

// set keeps a session's drain bounds.
func (s *sessionDrain) set(sess Session) {
	s.timeout.Store(int64(min(max(sess.DrainTimeout, 0), maxSessionDrainTimeout)))
	s.delay.Store(int64(min(sess.DrainDelay, maxSessionDrainDelay)))
}

// drainTimeout is the worker's bound on a drain: its host's setting, else
// the managers' bound plus the margin, else the default.
func (w *Worker) drainTimeout() time.Duration {
	if w.DrainTimeout != 0 {
		return w.DrainTimeout
	}
	if t := time.Duration(w.drains.timeout.Load()); t > 0 {
		return t + DrainTimeoutMargin
	}
	return DefaultWorkerDrainTimeout
}

// drainDelay is the linger's bound: its host's setting, else the
// managers', else the default, which depends on whether the worker counts
// the task's client connections (counted: the wait ends early, so the
// bound can be long) (negative: none).
func (w *Worker) drainDelay(counted bool) time.Duration {
	if w.DrainDelay != 0 {
		return w.DrainDelay
	}
	if d := time.Duration(w.drains.delay.Load()); d != 0 {
		return d
	}
	if counted {
		return DefaultDrainDelay
	}
	return DefaultFixedDrainDelay
}

// viewAcks is the version of the last network view the node applied, and
// a wake-up for the loop that confirms it.
type viewAcks struct {
	version atomic.Uint64
	wake    atomic.Pointer[chan struct{}]
}

func (v *viewAcks) wakeChan() chan struct{} {
	if c := v.wake.Load(); c != nil {
		return *c
	}
	c := make(chan struct{}, 1)
	if v.wake.CompareAndSwap(nil, &c) {
		return c
	}
	return *v.wake.Load()
}

// applied records that the network agent applied a view.
func (v *viewAcks) applied(version uint64) {
	v.version.Store(version)
	select {
	case v.wakeChan() <- struct{}{}:
	default:
	}
}

// ackViews confirms the latest applied view to the leader until it takes
// it, coalescing views applied meanwhile; a leader change brings a view of
// a new version, confirmed in turn.
func (w *Worker) ackViews(ctx context.Context, na NetworkAcker) {
	var b backoff
	var sent uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.views.wakeChan():
		}
		for ctx.Err() == nil {
			v := w.views.version.Load()
			if v == sent {
				break
			}
			cctx, cancel := context.WithTimeout(ctx, w.callTimeout())
			err := na.AckNetwork(cctx, w.NodeID, v)
			cancel()
			switch {
			case err == nil:
				sent = v
				b.reset()
			case ctx.Err() != nil:
			case errors.Is(err, errors.ErrUnsupported):
				w.logger().Warn("swarm: the managers cannot take this node's network confirmations; stopping tasks wait for their bound", "err", err)
				return
			case Retryable(err) || errors.Is(err, context.DeadlineExceeded):
				w.logger().Debug("swarm: network view confirmation not taken; will send again", "version", v, "err", err)
				b.wait(ctx)
			default:
				// Not this leader's view (it changed meanwhile): the
				// next view brings a version it knows.
				w.logger().Debug("swarm: network view confirmation refused", "version", v, "err", err)
				sent = v
			}
		}
	}
}

// reachable reports whether clients may reach a task through a backend
// set (it is on a network, or publishes a port): only those drain.
func reachable(t *api.Task) bool {
	return len(t.Networks) > 0 || (t.Endpoint != nil && len(t.Endpoint.Ports) > 0)
}

// startDrain begins a task's stop (under w.mu): at once for a task no
// client reaches, else once the managers list it as drained (drained),
// or after DrainTimeout.
func (w *Worker) startDrain(rt *taskRun, t *api.Task) {
	rt.draining = true
	bound := w.drainTimeout()
	if bound < 0 || !reachable(t) {
		rt.released = true
		rt.stop()
		return
	}
	id := t.ID
	rt.bound = time.AfterFunc(bound, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		// A closed worker stops nothing: its tasks run on, and the worker
		// started after it (which may have adopted this one) decides.
		if !rt.released && !w.closed {
			w.logger().Warn("swarm: the managers did not say that a stopping task left every node's backends; stopping it anyway", "task", id, "waited", bound)
			w.release(id, rt)
		}
	})
}

// drained releases the tasks the managers list as drained.
func (w *Worker) drained(ids []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, id := range ids {
		if rt := w.tasks[id]; rt != nil && rt.draining && !rt.released {
			w.release(id, rt)
		}
	}
}

// clientCounter is a network agent that can tell whether clients still
// have connections open to a task (swarm/netagent): a drained task's
// linger ends once they are done.
type clientCounter interface {
	ClientConnections(ctx context.Context, taskID string) (int, error)
}

var _ clientCounter = (*netagent.Agent)(nil)

// lingerSchedule is when a lingering task's connections are counted.
type lingerSchedule struct {
	// floor is the least a drained task lingers, counted or not: what
	// its TCP connections cannot show (UDP, a SYN translated to the task
	// just before a node's rule changed and then lost, a node the leader
	// did not wait for) gets what the fixed linger always gave it.
	floor time.Duration
	// first is the wait from the floor's count to the next; it doubles
	// up to most. A count walks the kernel's whole TCP hash table (about
	// 2.5 ms of CPU here, however small the task), so many tasks
	// lingering at once (a node drain) must not count often.
	first, most time.Duration
}

// defaultLinger is the schedule within a bound.
func defaultLinger(bound time.Duration) lingerSchedule {
	return lingerSchedule{floor: min(DefaultFixedDrainDelay, bound), first: 100 * time.Millisecond, most: time.Second}
}

// release schedules a drained task's stop (under w.mu): once no client
// has a connection to it any more, when the network agent can tell, and
// DrainDelay from now at the latest.
func (w *Worker) release(id string, rt *taskRun) {
	rt.released = true
	if rt.bound != nil {
		rt.bound.Stop()
	}
	cc, _ := w.Network.(clientCounter)
	linger := w.drainDelay(cc != nil)
	if linger <= 0 {
		rt.stop()
		return
	}
	w.logger().Debug("swarm: a stopping task is out of the backends; it stops after the linger", "task", id, "linger", linger)
	go w.linger(id, rt, linger, cc, defaultLinger(linger))
}

// linger stops a drained task once it has lingered sched.floor and no
// client has a connection to it (cc, when not nil, counts them), or once
// bound has passed, whichever comes first. A worker closed meanwhile
// stops nothing: its tasks run on, and the worker started after it
// (which may have adopted this one) decides.
func (w *Worker) linger(id string, rt *taskRun, bound time.Duration, cc clientCounter, sched lingerSchedule) {
	start := time.Now()
	deadline := time.NewTimer(bound)
	defer deadline.Stop()
	var count *time.Timer
	var counted <-chan time.Time
	if cc != nil && sched.floor < bound {
		count = time.NewTimer(sched.floor)
		defer count.Stop()
		counted = count.C
	}
	next := sched.first
	why := "the linger's bound"
wait:
	for {
		select {
		case <-rt.done:
			why = "it ended on its own"
			break wait
		case <-deadline.C:
			if counted != nil {
				// Slow requests or idle keep-alive connections: say so,
				// their clients are cut off.
				if n, err := cc.ClientConnections(context.Background(), id); err == nil && n > 0 {
					w.logger().Info("swarm: a drained task stops with client connections still open (its linger's bound)", "task", id, "connections", n, "bound", bound)
				}
			}
			break wait
		case <-counted:
			if w.isClosed() {
				return
			}
			n, err := countClients(cc, id)
			if err != nil {
				// The fixed linger, as a worker that cannot count.
				w.countFailed(id, err)
				why = "its connections cannot be counted"
				break wait
			}
			if n == 0 {
				why = "no client connection left"
				break wait
			}
			count.Reset(next)
			next = min(2*next, sched.most)
		}
	}
	if w.isClosed() {
		return
	}
	w.logger().Debug("swarm: a drained task stops", "task", id, "lingered", time.Since(start).Round(time.Millisecond), "why", why)
	rt.stop()
}

// countClients counts a task's client connections, reading a zero twice:
// the kernel's table is not read at one instant, and a socket can be
// skipped when another one of its bucket goes meanwhile.
func countClients(cc clientCounter, id string) (int, error) {
	for range 2 {
		if n, err := cc.ClientConnections(context.Background(), id); err != nil || n > 0 {
			return n, err
		}
	}
	return 0, nil
}

// countFailed logs a failed count: a warning the first time (it is
// likely to fail for every task: a masked /proc, an unknown format),
// then at debug level.
func (w *Worker) countFailed(id string, err error) {
	level := slog.LevelDebug
	if !w.countWarned.Swap(true) {
		level = slog.LevelWarn
	}
	w.logger().Log(context.Background(), level, "swarm: cannot count a stopping task's client connections; it lingers a fixed time, as where they cannot be counted", "task", id, "err", err)
}

// isClosed reports whether Close was called.
func (w *Worker) isClosed() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.closed
}
