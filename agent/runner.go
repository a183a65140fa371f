package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/shoalproject/shoal/swarm/api"
)

// DefaultStopGracePeriod is how long a task may take to stop before it is
// killed, as in Docker.
const DefaultStopGracePeriod = 10 * time.Second

// StatusUpdate reports a task state change.
type StatusUpdate struct {
	TaskID string
	Status api.TaskStatus
}

// Runner drives one task through its states on an Executor: ACCEPTED,
// PREPARING, READY, STARTING, RUNNING, and then COMPLETE, FAILED or
// SHUTDOWN; a task that fails before it starts is REJECTED with the reason.
// Each transition is reported, and only forward.
type Runner struct {
	Executor Executor
	// Report receives every transition; it must not block for long.
	Report func(StatusUpdate)
	// Logger receives the runner's logs; nil discards.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

func (r *Runner) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// progress reports one task's transitions, only forward; a health
// change is the one update allowed in the same state.
type progress struct {
	r      *Runner
	taskID string
	state  api.TaskState
	health string
	last   api.TaskStatus
}

func (p *progress) report(s api.TaskState, msg string, err error, exit int) api.TaskStatus {
	if !api.CanTransition(p.state, s) && !(s == p.state && p.last.Health != p.health) {
		return p.last
	}
	p.state = s
	p.last = api.TaskStatus{Timestamp: p.r.now().UTC(), State: s, Message: msg, ExitCode: exit, Health: p.health}
	if err != nil {
		p.last.Err = err.Error()
	}
	// The container's ID and PID for the report; the task's context may be
	// cancelled already (it is stopping), so Inspect gets its own bound.
	ictx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	if in, ierr := p.r.Executor.Inspect(ictx, p.taskID); ierr == nil {
		p.last.ContainerID, p.last.PID = in.ContainerID, in.PID
	}
	cancel()
	if p.r.Report != nil {
		p.r.Report(StatusUpdate{TaskID: p.taskID, Status: p.last})
	}
	return p.last
}

// Run runs the task until its process ends or ctx is cancelled (the task's
// desired state became SHUTDOWN), and returns the final status. The
// container is left in place for logs; call Executor.Remove to delete it.
func (r *Runner) Run(ctx context.Context, t *api.Task) api.TaskStatus {
	p := &progress{r: r, taskID: t.ID, state: api.TaskAssigned}
	p.report(api.TaskAccepted, "accepted", nil, 0)
	p.report(api.TaskPreparing, "preparing", nil, 0)
	if err := r.Executor.Prepare(ctx, t); err != nil {
		if ctx.Err() != nil {
			return p.report(api.TaskShutdown, "shut down before it started", nil, 0)
		}
		return p.report(api.TaskRejected, "preparing failed", err, 0)
	}
	p.report(api.TaskReady, "prepared", nil, 0)
	p.report(api.TaskStarting, "starting", nil, 0)
	if err := r.Executor.Start(ctx, t.ID); err != nil {
		if ctx.Err() != nil {
			return p.report(api.TaskShutdown, "shut down before it started", nil, 0)
		}
		return p.report(api.TaskRejected, "starting failed", err, 0)
	}
	p.report(api.TaskRunning, "started", nil, 0)
	return r.watch(ctx, t, p)
}

// Resume takes over a task whose process an earlier agent started (see
// Adopter): it reports how the process ended if it ended meanwhile, else
// RUNNING, and then watches it as Run does (exit, health checks, and a
// stop when ctx is cancelled).
func (r *Runner) Resume(ctx context.Context, t *api.Task) api.TaskStatus {
	p := &progress{r: r, taskID: t.ID, state: max(t.Status.State, api.TaskAssigned), health: t.Status.Health, last: t.Status}
	in, err := r.Executor.Inspect(ctx, t.ID)
	switch {
	case err != nil:
		return p.report(api.TaskFailed, "adopted task not found", fmt.Errorf("task: its container is gone: %w", err), -1)
	case !in.Running && in.Exit != nil:
		return p.finished(*in.Exit, nil)
	case !in.Running:
		return p.report(api.TaskFailed, "adopted task never started", errors.New("task: the earlier agent created its container but did not start it"), -1)
	}
	p.report(api.TaskRunning, "adopted after an agent restart", nil, 0)
	return r.watch(ctx, t, p)
}

// watch waits for a running task's process to end, runs its health
// checks, and stops it when ctx is cancelled.
func (r *Runner) watch(ctx context.Context, t *api.Task, p *progress) api.TaskStatus {
	type result struct {
		exit ExitStatus
		err  error
	}
	done := make(chan result, 1)
	go func() {
		exit, err := r.Executor.Wait(context.WithoutCancel(ctx), t.ID)
		done <- result{exit, err}
	}()
	healthCh := make(chan healthReport, 1)
	hctx, stopHealth := context.WithCancel(ctx)
	defer stopHealth()
	go monitorHealth(hctx, r.Executor, t.ID, t.Spec.Healthcheck, healthCh)
wait:
	for {
		select {
		case res := <-done:
			return p.finished(res.exit, res.err)
		case h := <-healthCh:
			p.health = h.state
			if h.state != HealthUnhealthy {
				p.report(api.TaskRunning, "health: "+h.state, nil, 0)
				continue
			}
			// Unhealthy: kill it, so the managers replace it.
			stopCtx := context.WithoutCancel(ctx)
			r.Executor.Terminate(stopCtx, t.ID)
			res := <-done
			return p.report(api.TaskFailed, "unhealthy container", fmt.Errorf("task: unhealthy container: %s", h.detail), res.exit.Code)
		case <-ctx.Done():
			break wait
		}
	}
	// Desired state is SHUTDOWN: stop within the grace period.
	grace := DefaultStopGracePeriod
	if t.Spec.StopGracePeriod != nil {
		grace = *t.Spec.StopGracePeriod
	}
	stopCtx := context.WithoutCancel(ctx)
	if err := r.Executor.Shutdown(stopCtx, t.ID, grace); err != nil && !errors.Is(err, ErrNotFound) {
		r.logger().Warn("agent: shutdown failed; killing", "task", t.ID, "err", err)
		r.Executor.Terminate(stopCtx, t.ID)
	}
	res := <-done
	return p.report(api.TaskShutdown, fmt.Sprintf("shut down (exit code %d)", res.exit.Code), nil, res.exit.Code)
}

func (p *progress) finished(exit ExitStatus, err error) api.TaskStatus {
	switch {
	case err != nil:
		return p.report(api.TaskFailed, "waiting for the task failed", err, -1)
	case exit.Code == 0:
		return p.report(api.TaskComplete, "finished", nil, 0)
	default:
		return p.report(api.TaskFailed, "task exited with a non-zero code", fmt.Errorf("task: non-zero exit (%d)", exit.Code), exit.Code)
	}
}

func (r *Runner) logger() *slog.Logger {
	if r.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Logger
}
