package swarm

import (
	"testing"

	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm/api"
)

// TestOwnProgressSkipsOnlyTheNodesOwnStartSteps: a node's stream skips
// the reports of a task's way to running, and nothing else: a new or
// removed task, a placement, an end, a stop, a move or a new spec all
// make it send the set again.
func TestOwnProgressSkipsOnlyTheNodesOwnStartSteps(t *testing.T) {
	base := api.Task{Meta: api.Meta{ID: "t1"}, ServiceID: "s", NodeID: "n1", SpecVersion: 3, DesiredState: api.TaskRunning,
		Status: api.TaskStatus{State: api.TaskAssigned}}
	with := func(f func(*api.Task)) *api.Task { c := base; f(&c); return &c }
	state := func(s api.TaskState) func(*api.Task) { return func(t *api.Task) { t.Status.State = s } }
	for _, c := range []struct {
		name     string
		old, now *api.Task
		skip     bool
	}{
		{"accepted", &base, with(state(api.TaskAccepted)), true},
		{"starting to running", with(state(api.TaskStarting)), with(state(api.TaskRunning)), true},
		{"running, health", with(state(api.TaskRunning)), with(func(t *api.Task) { t.Status.State, t.Status.Health = api.TaskRunning, "healthy" }), true},
		{"created", nil, &base, false},
		{"removed", &base, nil, false},
		{"placed", with(state(api.TaskPending)), &base, false},
		{"failed", with(state(api.TaskRunning)), with(state(api.TaskFailed)), false},
		{"told to stop", with(state(api.TaskRunning)), with(func(t *api.Task) { t.Status.State, t.DesiredState = api.TaskRunning, api.TaskShutdown }), false},
		{"moved", &base, with(func(t *api.Task) { t.Status.State, t.NodeID = api.TaskAccepted, "n2" }), false},
		{"new spec", &base, with(func(t *api.Task) { t.Status.State, t.SpecVersion = api.TaskAccepted, 4 }), false},
	} {
		ev := raftstore.Event{Table: TableTasks}
		if c.now != nil {
			ev.Object = c.now
		}
		if c.old != nil {
			ev.Old = c.old
		}
		if got := ownProgress(ev); got != c.skip {
			t.Errorf("%s: ownProgress %v, want %v", c.name, got, c.skip)
		}
	}
}
