package swarm

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/swarm/api"
)

// Dispatcher is what a worker needs of the managers. *Manager implements
// it in-process.
type Dispatcher interface {
	Register(ctx context.Context, nodeID string, desc api.NodeDescription) error
	Heartbeat(ctx context.Context, nodeID string) error
	Assignments(ctx context.Context, nodeID string) (<-chan []*api.Task, error)
	UpdateStatus(ctx context.Context, nodeID string, updates []agent.StatusUpdate) error
}

// Worker runs the tasks the managers assign to its node on an Executor
// (containerd in production, agent.FakeExecutor in simulations), reports
// every state change in batches, and heartbeats.
type Worker struct {
	// NodeID is the node's ID; required.
	NodeID string
	// Description is what the node reports: hostname, platform, resources.
	Description api.NodeDescription
	// Executor runs the tasks; required.
	Executor agent.Executor
	// Dispatcher reaches the managers; required.
	Dispatcher Dispatcher
	// HeartbeatPeriod must match the managers'; 0 means
	// DefaultHeartbeatPeriod.
	HeartbeatPeriod time.Duration
	// Logger receives the worker's logs; nil discards.
	Logger *slog.Logger

	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	running map[string]*runningTask
	updates chan agent.StatusUpdate
}

// closedChan is the done channel of tasks that never ran here.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

type runningTask struct {
	stop context.CancelFunc
	done chan struct{}
}

// Start registers the node and begins taking assignments.
func (w *Worker) Start(ctx context.Context) error {
	if w.NodeID == "" || w.Executor == nil || w.Dispatcher == nil {
		return errors.New("swarm: worker needs NodeID, Executor and Dispatcher")
	}
	if err := w.Dispatcher.Register(ctx, w.NodeID, w.Description); err != nil {
		return err
	}
	assignments, err := w.Dispatcher.Assignments(ctx, w.NodeID)
	if err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	w.running = map[string]*runningTask{}
	w.updates = make(chan agent.StatusUpdate, 1024)
	period := w.HeartbeatPeriod
	if period <= 0 {
		period = DefaultHeartbeatPeriod
	}
	w.wg.Add(3)
	go func() {
		defer w.wg.Done()
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-runCtx.Done():
				return
			case <-t.C:
				if err := w.Dispatcher.Heartbeat(runCtx, w.NodeID); err != nil && runCtx.Err() == nil {
					w.logger().Warn("swarm: heartbeat", "err", err)
				}
			}
		}
	}()
	go func() {
		defer w.wg.Done()
		w.report(runCtx)
	}()
	go func() {
		defer w.wg.Done()
		for {
			select {
			case <-runCtx.Done():
				return
			case set, ok := <-assignments:
				if ok {
					w.apply(runCtx, set)
					continue
				}
				// The manager went away: follow another one.
				for assignments = nil; assignments == nil; {
					select {
					case <-runCtx.Done():
						return
					case <-time.After(period / 2):
					}
					if ch, err := w.Dispatcher.Assignments(runCtx, w.NodeID); err == nil {
						assignments = ch
					}
				}
			}
		}
	}()
	return nil
}

// apply starts assigned tasks that do not run here yet, stops those whose
// desired state is past running, and removes what the managers dropped.
func (w *Worker) apply(ctx context.Context, set []*api.Task) {
	w.mu.Lock()
	defer w.mu.Unlock()
	want := map[string]bool{}
	for _, t := range set {
		want[t.ID] = true
		rt := w.running[t.ID]
		switch {
		case t.DesiredState > api.TaskRunning:
			if rt != nil {
				rt.stop()
			} else if !ended(t) {
				// Told to stop before it ever started here: it is done.
				w.running[t.ID] = &runningTask{stop: func() {}, done: closedChan}
				u := agent.StatusUpdate{TaskID: t.ID, Status: api.TaskStatus{Timestamp: time.Now().UTC(), State: api.TaskShutdown, Message: "shut down before it started"}}
				select {
				case w.updates <- u:
				case <-ctx.Done():
				}
			}
		case rt == nil && t.Status.State <= api.TaskAssigned:
			// Tasks outlive the worker's loops (Close), as containers
			// outlive an agent that stops.
			tctx, stop := context.WithCancel(context.WithoutCancel(ctx))
			rt = &runningTask{stop: stop, done: make(chan struct{})}
			w.running[t.ID] = rt
			task := t
			go func() {
				defer close(rt.done)
				r := &agent.Runner{Executor: w.Executor, Logger: w.Logger, Report: func(u agent.StatusUpdate) {
					select {
					case w.updates <- u:
					case <-ctx.Done():
					}
				}}
				r.Run(tctx, task)
			}()
		}
	}
	for id, rt := range w.running {
		if !want[id] {
			// Ended and dropped by the managers: clean up the container.
			rt.stop()
			delete(w.running, id)
			go func() {
				<-rt.done
				w.Executor.Remove(context.Background(), id)
			}()
		}
	}
}

// report sends status changes in batches: what arrived while the last
// batch was on its way goes in the next.
func (w *Worker) report(ctx context.Context) {
	for {
		var batch []agent.StatusUpdate
		select {
		case <-ctx.Done():
			return
		case u := <-w.updates:
			batch = append(batch, u)
		}
		for more := true; more; {
			select {
			case u := <-w.updates:
				batch = append(batch, u)
			default:
				more = false
			}
		}
		if err := w.Dispatcher.UpdateStatus(ctx, w.NodeID, batch); err != nil && ctx.Err() == nil {
			w.logger().Warn("swarm: status report", "err", err, "updates", len(batch))
		}
	}
}

// Close stops taking assignments and heartbeating; tasks keep running (a
// restarted worker adopts them), as a stopped agent leaves containers.
func (w *Worker) Close() error {
	if w.cancel != nil {
		w.cancel()
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
