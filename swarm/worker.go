package swarm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/swarm/api"
)

// Worker runs the tasks the managers assign to its node on an Executor
// (containerd in production, agent.FakeExecutor in simulations), reports
// every state change, and heartbeats.
//
// Nothing reported is lost: the worker keeps the latest status of each
// task and sends it until a manager acknowledges it, retrying with backoff
// while there is no leader, and sends its whole state again after every
// reconnection. A worker restarted on the same node adopts the tasks that
// still run there (when its Executor is an agent.Adopter): they go on
// without a restart, and those no longer assigned are stopped.
type Worker struct {
	// NodeID is the node's ID; required.
	NodeID string
	// Description is what the node reports: hostname, platform, resources.
	Description api.NodeDescription
	// Describe, when set, gives the description at each registration
	// instead; when its answer changes (a rotated key), the worker
	// registers again to tell the managers: at once when told so
	// (DescriptionChanged), else at the next heartbeat.
	Describe func() api.NodeDescription
	// Executor runs the tasks; required.
	Executor agent.Executor
	// Dispatcher reaches the managers; required. The heartbeat period
	// comes from them.
	Dispatcher Dispatcher
	// Network, when set, wires the node's networks from the network view
	// of each assignment (swarm/netagent in production). It is applied
	// before the assignment's tasks start, and told when a task's
	// container is gone.
	Network NetworkAgent
	// DrainDelay bounds how long a task with network endpoints keeps
	// running once the managers say that every node has taken it out of
	// its backends (Assignment.Drained): no new connection reaches it any
	// more, and the requests under way get up to this long to finish
	// before the stop signal (many programs exit at once on SIGTERM). A
	// network agent that can count the task's client connections
	// (swarm/netagent) ends the wait as soon as none is left, so a task
	// nobody talks to stops at once and a slow request is not cut off.
	// Zero means the managers' (Manager.DrainDelay, told in the session),
	// else DefaultDrainDelay where the network agent counts connections
	// and DefaultFixedDrainDelay where it cannot; negative means none.
	DrainDelay time.Duration
	// DrainTimeout bounds how long a task with network endpoints waits,
	// after it was asked to stop, for the managers to say it has left
	// every node's backends (their own bound, Manager.DrainTimeout,
	// normally decides first); it matters when no leader answers. Zero
	// means the managers' bound (told in the session) plus
	// DrainTimeoutMargin, else DefaultWorkerDrainTimeout; negative means
	// no wait at all. Set it only to override the managers.
	DrainTimeout time.Duration
	// Logger receives the worker's logs; nil discards.
	Logger *slog.Logger

	startMu   sync.Mutex // serializes Start, which must not hold mu while it waits
	mu        sync.Mutex
	started   bool
	closed    bool
	abort     context.CancelFunc // ends a Start under way (Close)
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	tasks     map[string]*taskRun // tasks this worker runs or ran, until the managers drop them
	adopted   map[string]bool     // tasks found at start, until the first assignments say which stay
	kept      map[string]bool     // ended tasks whose containers stay for their logs (Assignment.Kept)
	status    *statusQueue
	readyOnce sync.Once
	ready     chan struct{}
	beat      atomic.Int64 // the heartbeat period the managers asked for, in ns
	data      atomic.Pointer[taskData]
	told      atomic.Pointer[api.NodeDescription] // what the last registration said
	newDesc   chan struct{}                       // DescriptionChanged's wake-up, buffered 1
	newDescMu sync.Once
	logReads  atomic.Int64 // log subscriptions being served
	views     viewAcks     // the network views applied, to confirm (workerdrain.go)
	drains    sessionDrain // the managers' drain bounds (workerdrain.go)
	// countWarned is set once a count of a task's connections failed
	// and was logged as a warning (workerdrain.go).
	countWarned atomic.Bool
}

// NetworkAgent is what a worker needs of the node's network agent.
type NetworkAgent interface {
	// Apply brings the node's networks to a view (idempotent).
	Apply(ctx context.Context, v *api.NetworkView) error
	// ReleaseTask frees what a task had of the network: its container is
	// gone.
	ReleaseTask(ctx context.Context, taskID string) error
}

// taskNetworker is a network agent that wires a task's network, or takes
// up again that of a task an earlier agent wired (swarm/netagent).
type taskNetworker interface {
	TaskNetwork(ctx context.Context, t *api.Task) (netnsPath, resolvConf string, err error)
}

// pruner is a network agent that can forget tasks an earlier agent left
// (swarm/netagent).
type pruner interface {
	Prune(ctx context.Context, keep map[string]bool) error
}

// DefaultDrainDelay bounds how long a task with network endpoints runs on
// once no node sends it new connections: time for the requests under way
// to finish. With swarm/netagent the wait ends once the task's clients
// have closed their connections, so the bound is met only by slow
// requests and by clients that keep idle connections open.
const DefaultDrainDelay = 5 * time.Second

// DefaultFixedDrainDelay is the linger of a worker whose network agent
// cannot count a task's connections (none, or not swarm/netagent): a
// fixed wait, so a short one.
const DefaultFixedDrainDelay = time.Second

// taskData is the secrets and configs of the last assignment, by ID, in
// memory only.
type taskData struct {
	secrets map[string][]byte
	configs map[string][]byte
}

// taskRun is one task on this worker.
type taskRun struct {
	stop     context.CancelFunc
	done     chan struct{} // closed when the task's process has ended here
	draining bool          // a stop is on its way, once the task has drained
	released bool          // drained (or given up on): the stop is scheduled
	bound    *time.Timer   // stops it if the managers' word never comes
}

// Start adopts what an earlier worker left running, registers the node
// (retrying while no manager can take it, until ctx ends or Close) and
// begins taking assignments. A second Start does nothing.
func (w *Worker) Start(ctx context.Context) error {
	w.startMu.Lock()
	defer w.startMu.Unlock()
	w.mu.Lock()
	switch {
	case w.closed:
		w.mu.Unlock()
		return fmt.Errorf("swarm: worker start: %w", net.ErrClosed)
	case w.started:
		w.mu.Unlock()
		return nil
	case w.NodeID == "" || w.Executor == nil || w.Dispatcher == nil:
		w.mu.Unlock()
		return errors.New("swarm: worker needs NodeID, Executor and Dispatcher")
	}
	ctx, abort := context.WithCancel(ctx)
	defer abort()
	w.abort = abort
	w.mu.Unlock()
	if err := checkNodeID(w.NodeID); err != nil {
		return err
	}
	adopted := map[string]bool{}
	if a, ok := w.Executor.(agent.Adopter); ok {
		ids, err := a.Adopt(ctx)
		if err != nil {
			return fmt.Errorf("swarm: worker adopting the tasks left on this node: %w", err)
		}
		for _, id := range ids {
			adopted[id] = true
		}
		if len(ids) > 0 {
			w.logger().Info("swarm: worker found tasks left running", "count", len(ids))
		}
	}
	if err := w.register(ctx); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return fmt.Errorf("swarm: worker start: %w", net.ErrClosed)
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w.cancel = cancel
	w.adopted = adopted
	w.tasks = map[string]*taskRun{}
	w.status = newStatusQueue()
	w.readyChan()
	w.wg.Add(3)
	go func() { defer w.wg.Done(); w.session(runCtx) }()
	go func() { defer w.wg.Done(); w.heartbeats(runCtx) }()
	go func() { defer w.wg.Done(); w.report(runCtx) }()
	if na, ok := w.Dispatcher.(NetworkAcker); ok && w.Network != nil {
		w.wg.Add(1)
		go func() { defer w.wg.Done(); w.ackViews(runCtx, na) }()
	}
	if ld, ok := w.Dispatcher.(LogDispatcher); ok {
		// The log path, beside the session: see logworker.go.
		w.wg.Add(1)
		go func() { defer w.wg.Done(); w.logSessions(runCtx, ld) }()
	}
	w.started = true
	return nil
}

// register registers the node, retrying with backoff while the error is
// one another try may fix (no leader yet, a manager away).
func (w *Worker) register(ctx context.Context) error {
	var b backoff
	for {
		desc := w.describe()
		cctx, cancel := context.WithTimeout(ctx, w.callTimeout())
		s, err := w.Dispatcher.Register(cctx, w.NodeID, desc)
		cancel()
		if err == nil {
			w.setPeriod(s.HeartbeatPeriod)
			w.drains.set(s)
			w.told.Store(&desc)
			return nil
		}
		if !Retryable(err) {
			return err
		}
		w.logger().Debug("swarm: worker registration", "err", err)
		if !b.wait(ctx) {
			return fmt.Errorf("swarm: worker could not register: %w (last error: %v)", ctx.Err(), err)
		}
	}
}

func (w *Worker) describe() api.NodeDescription {
	if w.Describe != nil {
		return w.Describe()
	}
	return w.Description
}

func deref[T any](p *T) (v T) {
	if p != nil {
		v = *p
	}
	return v
}

// LogReads reports how many logs requests the worker serves now.
func (w *Worker) LogReads() int { return int(w.logReads.Load()) }

// Ready is closed once the worker has applied its first assignments.
func (w *Worker) Ready() <-chan struct{} { return w.readyChan() }

func (w *Worker) readyChan() chan struct{} {
	w.readyOnce.Do(func() { w.ready = make(chan struct{}) })
	return w.ready
}

func (w *Worker) period() time.Duration {
	if p := time.Duration(w.beat.Load()); p > 0 {
		return p
	}
	return DefaultHeartbeatPeriod
}

// setPeriod keeps the heartbeat period the managers asked for (bounded:
// a broken answer must not stop heartbeats or flood them).
func (w *Worker) setPeriod(p time.Duration) {
	if p > 0 {
		w.beat.Store(int64(min(max(p, 10*time.Millisecond), time.Minute)))
	}
}

// session follows the managers' assignments, reconnecting (and
// registering again) whenever the stream ends.
func (w *Worker) session(ctx context.Context) {
	var b backoff
	first, pruned := true, false
	for ctx.Err() == nil {
		if !first {
			if err := w.register(ctx); err != nil {
				if ctx.Err() == nil {
					w.logger().Warn("swarm: worker registration refused", "err", err)
					b.wait(ctx)
				}
				continue
			}
		}
		first = false
		ch, err := w.Dispatcher.Assignments(ctx, w.NodeID)
		if err != nil {
			w.logger().Debug("swarm: worker assignments", "err", err)
			b.wait(ctx)
			first = !errors.Is(err, ErrNotFound) // unknown node: register again
			continue
		}
		b.reset()
		// A new session: the manager may not have heard what happened
		// while the last one was down.
		w.status.resendAll()
		for a := range ch {
			w.keepData(a)
			if w.Network != nil && a.Network != nil {
				// Before the tasks: a new task's networks must exist
				// when it is prepared. A failure is logged; the tasks
				// that need what is missing fail and are replaced.
				if err := w.Network.Apply(ctx, a.Network); err != nil {
					// Not confirmed: a stopping task may still be a
					// backend here.
					w.logger().Warn("swarm: wiring the node's networks", "err", err)
				} else {
					w.views.applied(a.Network.Version)
				}
			}
			w.apply(ctx, a.Tasks, a.Kept)
			w.drained(a.Drained)
			if p, ok := w.Network.(pruner); ok && !pruned {
				// Once the node knows its tasks: what an earlier agent
				// left for tasks that ended meanwhile goes.
				keep := make(map[string]bool, len(a.Tasks))
				for _, t := range a.Tasks {
					keep[t.ID] = true
				}
				if err := p.Prune(ctx, keep); err != nil {
					w.logger().Warn("swarm: pruning stale task networks", "err", err)
				}
				pruned = true
			}
		}
		if ctx.Err() == nil {
			w.logger().Info("swarm: worker lost its manager; reconnecting")
			b.wait(ctx)
		}
	}
}

// DescriptionChanged tells the worker that Describe's answer changed (the
// network agent rotated its WireGuard key): it registers again at once, so
// that the managers hand the new key to the other nodes without waiting for
// a heartbeat, during which encrypted traffic to this node would be lost.
// It does not block; calls while one is pending merge.
func (w *Worker) DescriptionChanged() {
	select {
	case w.descChanged() <- struct{}{}:
	default:
	}
}

func (w *Worker) descChanged() chan struct{} {
	w.newDescMu.Do(func() { w.newDesc = make(chan struct{}, 1) })
	return w.newDesc
}

// redescribe registers again if the description changed since the last
// registration.
func (w *Worker) redescribe(ctx context.Context) {
	if w.Describe == nil || reflect.DeepEqual(w.describe(), deref(w.told.Load())) {
		return
	}
	if err := w.register(ctx); err != nil && ctx.Err() == nil {
		w.logger().Warn("swarm: worker registering its new description", "err", err)
	}
}

func (w *Worker) heartbeats(ctx context.Context) {
	current, fails := w.period(), 0
	t := time.NewTicker(current)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.descChanged():
			w.redescribe(ctx)
			continue
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, w.callTimeout())
		p, err := w.Dispatcher.Heartbeat(cctx, w.NodeID)
		cancel()
		switch {
		case ctx.Err() != nil:
		case err == nil:
			w.setPeriod(p)
			// A change nobody announced (DescriptionChanged) is told
			// here.
			w.redescribe(ctx)
		case errors.Is(err, ErrNotFound):
			// The managers forgot this node (removed, or state lost):
			// register again; the session picks up from there.
			if err := w.register(ctx); err != nil {
				w.logger().Warn("swarm: worker registering again", "err", err)
			}
		default:
			w.logger().Debug("swarm: heartbeat", "err", err)
		}
		next := w.period()
		if err != nil && ctx.Err() == nil && Retryable(err) {
			next = heartbeatRetry(next, fails)
			fails++
		} else {
			fails = 0
		}
		if next != current {
			current = next
			t.Reset(next)
		}
	}
}

// heartbeatRetry is the wait before the next try after fails+1 heartbeats
// failed for a reason that passes (the managers were electing, or this
// worker just left a silent one) at period p: a quarter period (250 ms at
// most) at first, doubling up to the period, each drawn in its upper half
// so that workers that failed together spread out. A whole period's wait
// spent a third of the grace a new leader gives.
func heartbeatRetry(p time.Duration, fails int) time.Duration {
	d := min(min(p/4, 250*time.Millisecond)<<min(fails, 8), p)
	return d/2 + rand.N(d/2+1)
}

// apply brings the node to an assignment set: it starts new tasks, stops
// those whose desired state is past running, resumes adopted ones, reports
// tasks lost in a restart, and removes what the managers dropped. The
// containers of ended tasks the managers keep in their history (kept)
// stay, stopped, for their logs; their network goes at once (the
// managers gave their addresses to others).
func (w *Worker) apply(ctx context.Context, set []*api.Task, kept []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	keep := make(map[string]bool, len(kept))
	for _, id := range kept {
		keep[id] = true
	}
	if w.kept == nil {
		w.kept = map[string]bool{}
	}
	want := make(map[string]bool, len(set))
	for _, t := range set {
		want[t.ID] = true
		if rt := w.tasks[t.ID]; rt != nil {
			if t.DesiredState > api.TaskRunning && !rt.draining {
				w.startDrain(rt, t)
			}
			continue
		}
		adopted := w.adopted[t.ID]
		delete(w.adopted, t.ID)
		switch {
		case t.DesiredState > api.TaskRunning && adopted && t.Status.State == api.TaskRunning:
			// Told to stop while no worker ran here: other nodes may
			// still send it connections, so it drains as it would have
			// (its bound starts over). Only a task the managers list as
			// running can be a backend (backendOf); any other stops at
			// once below.
			w.run(ctx, t, true)
			w.startDrain(w.tasks[t.ID], t)
		case t.DesiredState > api.TaskRunning:
			if !ended(t) {
				w.stopUnknown(ctx, t)
			}
		case adopted:
			w.run(ctx, t, true)
		case t.Status.State <= api.TaskAssigned:
			w.run(ctx, t, false)
		case !ended(t):
			// Accepted here once, but nothing of it is left: the worker
			// restarted and the container is gone (or the executor cannot
			// adopt). Say so, so that the managers replace it.
			w.tasks[t.ID] = &taskRun{stop: func() {}, done: closedChan}
			w.status.put(agent.StatusUpdate{TaskID: t.ID, Status: api.TaskStatus{Timestamp: time.Now().UTC(), State: api.TaskFailed,
				Message: "task lost", Err: "the worker restarted and the task's container is gone"}})
		}
	}
	// Left by an earlier worker and not assigned any more: stop them.
	for id := range w.adopted {
		w.logger().Info("swarm: stopping a task no longer assigned to this node", "task", id)
		if keep[id] {
			w.kept[id] = true
		}
		go w.removeContainer(context.WithoutCancel(ctx), id, closedChan, true, !keep[id])
	}
	w.adopted = nil
	for id, rt := range w.tasks {
		if !want[id] {
			// Ended and dropped by the managers: clean up the container,
			// or only its network while the managers keep its history.
			rt.stop()
			delete(w.tasks, id)
			w.status.forget(id)
			if keep[id] {
				w.kept[id] = true
			}
			go w.removeContainer(context.WithoutCancel(ctx), id, rt.done, false, !keep[id])
		}
	}
	for id := range w.kept {
		if !keep[id] && !want[id] {
			// Out of the history now: the container goes.
			delete(w.kept, id)
			go w.removeKept(context.WithoutCancel(ctx), id)
		}
	}
	ready := w.readyChan()
	select {
	case <-ready:
	default:
		close(ready)
	}
}

// run starts (or, for an adopted task, resumes) a task's runner. Tasks
// outlive the worker's loops (Close), as containers outlive an agent that
// stops.
func (w *Worker) run(ctx context.Context, t *api.Task, resume bool) {
	tctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	rt := &taskRun{stop: stop, done: make(chan struct{})}
	w.tasks[t.ID] = rt
	go func() {
		defer close(rt.done)
		r := &agent.Runner{Executor: w.Executor, Logger: w.Logger, Report: w.put}
		if resume {
			// The container kept its namespace; the agent before this one
			// served its DNS and load balancing: take them up again.
			if tn, ok := w.Network.(taskNetworker); ok {
				if _, _, err := tn.TaskNetwork(tctx, t); err != nil {
					w.logger().Warn("swarm: resuming an adopted task's network (DNS, load balancing)", "task", t.ID, "err", err)
				}
			}
			r.Resume(tctx, t)
		} else {
			r.Run(tctx, t)
		}
	}()
}

// stopUnknown stops a task this worker does not run but the managers want
// stopped: its container may still exist (an agent restart on an executor
// that cannot adopt), so it is stopped for real before SHUTDOWN is
// reported.
func (w *Worker) stopUnknown(ctx context.Context, t *api.Task) {
	rt := &taskRun{stop: func() {}, done: make(chan struct{})}
	w.tasks[t.ID] = rt
	go func() {
		defer close(rt.done)
		grace := agent.DefaultStopGracePeriod
		if t.Spec.StopGracePeriod != nil {
			grace = *t.Spec.StopGracePeriod
		}
		sctx := context.WithoutCancel(ctx)
		msg := "shut down before it started"
		switch err := w.Executor.Shutdown(sctx, t.ID, grace); {
		case err == nil:
			msg = "shut down"
		case !errors.Is(err, agent.ErrNotFound):
			w.logger().Warn("swarm: stopping a task; killing it", "task", t.ID, "err", err)
			w.Executor.Terminate(sctx, t.ID)
			msg = "killed"
		}
		w.put(agent.StatusUpdate{TaskID: t.ID, Status: api.TaskStatus{Timestamp: time.Now().UTC(), State: api.TaskShutdown, Message: msg}})
	}()
}

// removeContainer deletes a task's container (unless remove is false: it
// stays for its logs) and network once its process ended; stop first
// kills a task that may still run.
func (w *Worker) removeContainer(ctx context.Context, id string, done <-chan struct{}, stop, remove bool) {
	<-done
	if stop {
		if err := w.Executor.Shutdown(ctx, id, agent.DefaultStopGracePeriod); err != nil && !errors.Is(err, agent.ErrNotFound) {
			w.Executor.Terminate(ctx, id)
		}
	}
	if remove {
		w.removeKept(ctx, id)
	}
	if w.Network != nil {
		if err := w.Network.ReleaseTask(ctx, id); err != nil {
			w.logger().Warn("swarm: releasing a task's network", "task", id, "err", err)
		}
	}
}

// removeKept deletes a task's container, with its logs.
func (w *Worker) removeKept(ctx context.Context, id string) {
	if err := w.Executor.Remove(ctx, id); err != nil && !errors.Is(err, agent.ErrNotFound) {
		w.logger().Warn("swarm: removing a task's container", "task", id, "err", err)
	}
}

// keepData keeps the secrets and configs of an assignment for the tasks
// about to start (SecretSource).
func (w *Worker) keepData(a *api.Assignment) {
	d := &taskData{secrets: make(map[string][]byte, len(a.Secrets)), configs: make(map[string][]byte, len(a.Configs))}
	for _, s := range a.Secrets {
		d.secrets[s.ID] = s.Spec.Data
	}
	for _, c := range a.Configs {
		d.configs[c.ID] = c.Spec.Data
	}
	w.data.Store(d)
}

// SecretData gives a task the data of a secret its node was sent: the
// worker is the executor's agent.SecretSource.
func (w *Worker) SecretData(_ context.Context, ref api.SecretReference) ([]byte, error) {
	if d := w.data.Load(); d != nil {
		if b, ok := d.secrets[ref.SecretID]; ok {
			return b, nil
		}
	}
	return nil, fmt.Errorf("swarm: secret %s (%s) was not sent to this node: %w", ref.SecretName, ref.SecretID, agent.ErrNotFound)
}

// ConfigData gives a task the data of a config its node was sent.
func (w *Worker) ConfigData(_ context.Context, ref api.ConfigReference) ([]byte, error) {
	if d := w.data.Load(); d != nil {
		if b, ok := d.configs[ref.ConfigID]; ok {
			return b, nil
		}
	}
	return nil, fmt.Errorf("swarm: config %s (%s) was not sent to this node: %w", ref.ConfigName, ref.ConfigID, agent.ErrNotFound)
}

var _ agent.SecretSource = (*Worker)(nil)

// put queues a runner's report, unless the managers dropped its task
// meanwhile (nobody needs it, and it would stay in memory).
func (w *Worker) put(u agent.StatusUpdate) {
	// Under mu, so that apply cannot forget the task in between.
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, known := w.tasks[u.TaskID]; known {
		w.status.put(u)
	}
}

// closedChan is the done channel of tasks that never ran here.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// report sends status changes until a manager takes them: what arrives
// while a batch is on its way goes in the next; a batch that fails is
// sent again (with whatever replaced it meanwhile) after a backoff.
func (w *Worker) report(ctx context.Context) {
	var b backoff
	limit := MaxStatusUpdates
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.status.wake:
		}
		for ctx.Err() == nil {
			batch, sent := w.status.pending(limit, maxReportBytes)
			if len(batch) == 0 {
				break
			}
			cctx, cancel := context.WithTimeout(ctx, w.callTimeout())
			err := w.Dispatcher.UpdateStatus(cctx, w.NodeID, batch)
			cancel()
			switch {
			case err == nil:
				b.reset()
				limit = MaxStatusUpdates
				w.status.ack(sent)
			case ctx.Err() != nil:
			case Retryable(err) || errors.Is(err, context.DeadlineExceeded):
				w.logger().Debug("swarm: status report not taken; will send again", "err", err, "updates", len(batch))
				b.wait(ctx)
			case len(batch) > 1:
				// Refused for what it holds: send it in halves until the
				// report at fault is alone, so one bad report cannot hold
				// up every later one.
				limit = len(batch) / 2
			default:
				w.logger().Error("swarm: a status report refused by the managers is dropped", "task", batch[0].TaskID, "err", err)
				w.status.ack(sent)
				limit = MaxStatusUpdates
			}
		}
	}
}

// maxReportBytes bounds a status batch's size on the wire (well under the
// managers' request limit).
const maxReportBytes = 4 << 20

// callTimeout bounds one call to the managers, so that a call lost with a
// manager (closed mid-call, a dead connection) is given up and retried.
func (w *Worker) callTimeout() time.Duration { return max(5*w.period(), 10*time.Second) }

// Shutdown sends the reports still pending (until ctx ends), then closes
// the worker. Tasks keep running, as with Close.
func (w *Worker) Shutdown(ctx context.Context) error {
	w.mu.Lock()
	q := w.status
	w.mu.Unlock()
	if q != nil {
		for {
			batch, sent := q.pending(MaxStatusUpdates, maxReportBytes)
			if len(batch) == 0 || ctx.Err() != nil {
				break
			}
			if err := w.Dispatcher.UpdateStatus(ctx, w.NodeID, batch); err != nil {
				break
			}
			q.ack(sent)
		}
	}
	return w.Close()
}

// Close stops taking assignments and heartbeating; tasks keep running (a
// restarted worker adopts them), as a stopped agent leaves containers. A
// second Close returns an error wrapping net.ErrClosed.
func (w *Worker) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return fmt.Errorf("swarm: worker close: %w", net.ErrClosed)
	}
	w.closed = true
	cancel := w.cancel
	if w.abort != nil {
		w.abort()
	}
	w.mu.Unlock()
	if cancel != nil {
		cancel()
		w.wg.Wait()
	}
	return nil
}

func (w *Worker) logger() *slog.Logger {
	if w.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return w.Logger
}

// backoff waits longer after each failure: 50 ms doubling to 2 s, with
// jitter so that many workers do not retry in step.
// backoff waits 50 ms, doubling, jittered, up to max (0: 2 s).
type backoff struct {
	n   int
	max time.Duration
}

func (b *backoff) wait(ctx context.Context) bool {
	d := min(50*time.Millisecond<<min(b.n, 6), cmpOr(b.max, 2*time.Second))
	b.n++
	d = d/2 + rand.N(d/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (b *backoff) reset() { b.n = 0 }
