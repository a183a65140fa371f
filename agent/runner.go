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

// Run runs the task until its process ends or ctx is cancelled (the task's
// desired state became SHUTDOWN), and returns the final status. The
// container is left in place for logs; call Executor.Remove to delete it.
func (r *Runner) Run(ctx context.Context, t *api.Task) api.TaskStatus {
	state := api.TaskAssigned
	health := ""
	var last api.TaskStatus
	report := func(s api.TaskState, msg string, err error, exit int) api.TaskStatus {
		// Only forward; a health change is the one update in the same state.
		if !api.CanTransition(state, s) && !(s == state && last.Health != health) {
			return last
		}
		state = s
		last = api.TaskStatus{Timestamp: r.now().UTC(), State: s, Message: msg, ExitCode: exit, Health: health}
		if err != nil {
			last.Err = err.Error()
		}
		if in, ierr := r.Executor.Inspect(context.WithoutCancel(ctx), t.ID); ierr == nil {
			last.ContainerID, last.PID = in.ContainerID, in.PID
		}
		if r.Report != nil {
			r.Report(StatusUpdate{TaskID: t.ID, Status: last})
		}
		return last
	}
	report(api.TaskAccepted, "accepted", nil, 0)
	report(api.TaskPreparing, "preparing", nil, 0)
	if err := r.Executor.Prepare(ctx, t); err != nil {
		if ctx.Err() != nil {
			return report(api.TaskShutdown, "shut down before it started", nil, 0)
		}
		return report(api.TaskRejected, "preparing failed", err, 0)
	}
	report(api.TaskReady, "prepared", nil, 0)
	report(api.TaskStarting, "starting", nil, 0)
	if err := r.Executor.Start(ctx, t.ID); err != nil {
		if ctx.Err() != nil {
			return report(api.TaskShutdown, "shut down before it started", nil, 0)
		}
		return report(api.TaskRejected, "starting failed", err, 0)
	}
	report(api.TaskRunning, "started", nil, 0)

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
			return r.finished(report, res.exit, res.err)
		case h := <-healthCh:
			health = h.state
			if h.state != HealthUnhealthy {
				report(api.TaskRunning, "health: "+h.state, nil, 0)
				continue
			}
			// Unhealthy: kill it, so the managers replace it.
			stopCtx := context.WithoutCancel(ctx)
			r.Executor.Terminate(stopCtx, t.ID)
			res := <-done
			return report(api.TaskFailed, "unhealthy container", fmt.Errorf("task: unhealthy container: %s", h.detail), res.exit.Code)
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
	return report(api.TaskShutdown, fmt.Sprintf("shut down (exit code %d)", res.exit.Code), nil, res.exit.Code)
}

func (r *Runner) finished(report func(api.TaskState, string, error, int) api.TaskStatus, exit ExitStatus, err error) api.TaskStatus {
	switch {
	case err != nil:
		return report(api.TaskFailed, "waiting for the task failed", err, -1)
	case exit.Code == 0:
		return report(api.TaskComplete, "finished", nil, 0)
	default:
		return report(api.TaskFailed, "task exited with a non-zero code", fmt.Errorf("task: non-zero exit (%d)", exit.Code), exit.Code)
	}
}

func (r *Runner) logger() *slog.Logger {
	if r.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Logger
}
