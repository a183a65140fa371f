package swarm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/swarm/api"
)

// Update defaults, as Docker's.
const (
	DefaultUpdateMonitor = 5 * time.Second
)

// slot is one replica's tasks and where a new task goes: its slot
// number, or its node (a global service), in a job's iteration.
type slot struct {
	tasks []*taskRef
	slot  uint64
	node  string
	iter  uint64
}

// place puts a new task in the slot.
func (s slot) place(t *api.Task) {
	if s.slot > 0 {
		t.Slot = s.slot
	}
	if s.node != "" {
		t.NodeID = s.node
	}
	t.JobIteration = s.iter
}

// currentTask is the newest task of a slot meant to run, or nil.
func currentTask(ts []*taskRef) *taskRef {
	var cur *taskRef
	for _, t := range ts {
		if t.DesiredState <= api.TaskRunning && (cur == nil || newer(t.Task, cur.Task)) {
			cur = t
		}
	}
	return cur
}

// proven reports whether a new task has shown it works: it runs, is
// healthy if it has a health check, and has stayed so for the monitor
// period (its status, which a health change renews, is that old).
func proven(t *api.Task, now time.Time, monitor time.Duration) bool {
	if t.Status.State != api.TaskRunning {
		return false
	}
	if hasHealthcheck(t) && t.Status.Health != agent.HealthHealthy {
		return false
	}
	return now.Sub(t.Status.Timestamp) >= monitor
}

// provenAt is when a running (and, with a health check, healthy) task
// will have been so for the monitor period; false while it is not there
// yet, which only an event about the task can change.
func provenAt(t *api.Task, monitor time.Duration) (time.Time, bool) {
	if t.Status.State != api.TaskRunning || (hasHealthcheck(t) && t.Status.Health != agent.HealthHealthy) {
		return time.Time{}, false
	}
	return t.Status.Timestamp.Add(monitor), true
}

func hasHealthcheck(t *api.Task) bool {
	h := t.Spec.Healthcheck
	return h != nil && len(h.Test) > 0 && h.Test[0] != "NONE"
}

// sameSpec reports whether a task runs the spec the service asks for now.
func sameSpec(t *api.Task, svc *api.Service) bool {
	if t.SpecVersion == svc.Version {
		return true
	}
	a, _ := json.Marshal(t.Spec)
	b, _ := json.Marshal(svc.Spec.TaskTemplate)
	return bytes.Equal(a, b)
}

func updateConfig(svc *api.Service) api.UpdateConfig {
	cfg := api.UpdateConfig{Parallelism: 1, Monitor: DefaultUpdateMonitor, FailureAction: api.ActionPause, Order: api.StopFirst}
	src := svc.Spec.UpdateConfig
	if st := svc.UpdateStatus; st != nil && (st.State == api.UpdateRollbackStarted || st.State == api.UpdateRollbackPaused) {
		// A rollback follows the rollback config of the spec that failed
		// (now PreviousSpec), the one the user set with the update.
		src = svc.Spec.RollbackConfig
		if svc.PreviousSpec != nil && svc.PreviousSpec.RollbackConfig != nil {
			src = svc.PreviousSpec.RollbackConfig
		}
	}
	if src != nil {
		cfg.Parallelism, cfg.Delay, cfg.MaxFailureRatio = src.Parallelism, src.Delay, src.MaxFailureRatio
		if src.Monitor > 0 {
			cfg.Monitor = src.Monitor
		}
		if src.FailureAction != "" {
			cfg.FailureAction = src.FailureAction
		}
		if src.Order != "" {
			cfg.Order = src.Order
		}
	}
	return cfg
}

// rollingUpdate moves the slots whose task runs an older spec to the
// service's spec, a few at a time (Parallelism), with Delay between steps,
// stopping the old task first or starting the new one first (Order). New
// tasks that fail within Monitor count as failures; past MaxFailureRatio
// the update pauses or rolls back (FailureAction). Progress is kept in the
// service's UpdateStatus.
func (r *reconciler) rollingUpdate(svc *api.Service, slots []slot, p *plan) {
	st := svc.UpdateStatus
	if st == nil || (st.State != api.UpdateUpdating && st.State != api.UpdateRollbackStarted) {
		return // no update in progress (or paused): nothing moves
	}
	cfg := updateConfig(svc)
	var dirty []slot
	inFlight, failed := 0, 0
	var lastStep time.Time
	for _, s := range slots {
		cur := currentTask(s.tasks)
		for _, t := range s.tasks {
			if sameSpec(t.Task, svc) && !t.CreatedAt.Before(st.StartedAt) {
				if t.CreatedAt.After(lastStep) {
					lastStep = t.CreatedAt
				}
				if t.Status.State == api.TaskFailed || t.Status.State == api.TaskRejected {
					failed++
				}
			}
		}
		switch {
		case cur == nil:
			// A step under way: the old task is stopping (stop-first), or
			// has stopped and its successor comes in this pass.
			inFlight++
		case !ended(cur.Task) && !sameSpec(cur.Task, svc):
			dirty = append(dirty, s)
		case sameSpec(cur.Task, svc) && !cur.CreatedAt.Before(st.StartedAt) && !proven(cur.Task, r.now, cfg.Monitor):
			inFlight++ // a new task not yet proven
			if at, ok := provenAt(cur.Task, cfg.Monitor); ok {
				p.retryAfter(at) // its monitor period ends then (other waits end with an event)
			}
		}
	}
	if failed > 0 && float64(failed) > cfg.MaxFailureRatio*float64(len(slots)) && cfg.FailureAction != api.ActionContinue {
		c := *svc
		msg := fmt.Sprintf("update paused: %d new task(s) failed", failed)
		switch {
		case cfg.FailureAction == api.ActionRollback && st.State == api.UpdateUpdating && svc.PreviousSpec != nil:
			prev := *svc.PreviousSpec
			cur := svc.Spec
			c.Spec, c.PreviousSpec = prev, &cur
			c.UpdateStatus = &api.UpdateStatus{State: api.UpdateRollbackStarted, StartedAt: r.now,
				Message: fmt.Sprintf("rollback started: %d new task(s) failed", failed)}
		case st.State == api.UpdateRollbackStarted:
			c.UpdateStatus = &api.UpdateStatus{State: api.UpdateRollbackPaused, StartedAt: st.StartedAt, Message: "rollback paused: " + msg}
		default:
			c.UpdateStatus = &api.UpdateStatus{State: api.UpdatePaused, StartedAt: st.StartedAt, Message: msg}
		}
		p.service = &c
		return
	}
	if len(dirty) == 0 {
		if inFlight == 0 {
			c := *svc
			done := api.UpdateCompleted
			msg := "update completed"
			if st.State == api.UpdateRollbackStarted {
				done, msg = api.UpdateRollbackCompleted, "rollback completed"
			}
			c.UpdateStatus = &api.UpdateStatus{State: done, StartedAt: st.StartedAt, CompletedAt: r.now, Message: msg}
			p.service = &c
		}
		return
	}
	budget := len(dirty)
	if cfg.Parallelism > 0 {
		budget = int(cfg.Parallelism) - inFlight
	}
	if budget <= 0 {
		return // the tasks in flight will tell (an event, or their monitor retry)
	}
	if next := lastStep.Add(cfg.Delay); !lastStep.IsZero() && r.now.Before(next) {
		p.retryAfter(next)
		return
	}
	for _, s := range dirty[:min(budget, len(dirty))] {
		old := currentTask(s.tasks)
		if cfg.Order == api.StartFirst {
			// The old task goes once the new one runs (keep).
			if !r.room() {
				break
			}
			t := r.newTask(svc)
			s.place(t)
			r.name(svc, t)
			r.add(t, p)
			continue
		}
		r.shutdown(old, "updating to a new spec", p)
	}
}
