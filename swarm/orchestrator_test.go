package swarm

import (
	"fmt"
	"testing"
	"time"

	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm/api"
)

var t0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func testReconciler(now time.Time) *reconciler {
	n := 0
	return &reconciler{now: now, history: DefaultTaskHistory, newID: func() string { n++; return fmt.Sprintf("new%d", n) }}
}

// reconcileTasks runs r.reconcile on refs of ts and copies what it
// changed back into ts (the test's own objects), as a commit would.
func (r *reconciler) reconcileTasks(svc *api.Service, ts []*api.Task, nodes map[string]*api.Node) plan {
	refs := refsOf(ts)
	p := r.reconcile(svc, refs, nodes)
	for i, ref := range refs {
		if ref.owned {
			*ts[i] = *ref.Task
		}
	}
	return p
}

func ready(ids ...string) map[string]*api.Node {
	out := map[string]*api.Node{}
	for _, id := range ids {
		out[id] = &api.Node{Meta: api.Meta{ID: id}, Spec: api.NodeSpec{Availability: api.NodeActive}, Status: api.NodeStatus{State: api.NodeReady}}
	}
	return out
}

func svcWith(rp *api.RestartPolicy, replicas uint64) *api.Service {
	return &api.Service{Meta: api.Meta{ID: "s", Version: 7}, Spec: api.ServiceSpec{Annotations: api.Annotations{Name: "web"},
		Mode: api.Replicated(replicas), TaskTemplate: api.TaskSpec{Image: "x", RestartPolicy: rp}}}
}

func endedTask(id string, slot uint64, state api.TaskState, at time.Time) *api.Task {
	return &api.Task{Meta: api.Meta{ID: id, CreatedAt: at.Add(-time.Minute)}, ServiceID: "s", Slot: slot, NodeID: "n1",
		DesiredState: api.TaskRunning, Status: api.TaskStatus{State: state, Timestamp: at}}
}

func TestRestartPolicy(t *testing.T) {
	zero := time.Duration(0)
	for _, c := range []struct {
		name    string
		rp      *api.RestartPolicy
		state   api.TaskState
		restart bool
	}{
		{"default restarts a completed task", &api.RestartPolicy{Delay: &zero}, api.TaskComplete, true},
		{"any restarts a failed task", &api.RestartPolicy{Condition: api.RestartAny, Delay: &zero}, api.TaskFailed, true},
		{"on-failure leaves a completed task", &api.RestartPolicy{Condition: api.RestartOnFailure, Delay: &zero}, api.TaskComplete, false},
		{"on-failure restarts a failed task", &api.RestartPolicy{Condition: api.RestartOnFailure, Delay: &zero}, api.TaskFailed, true},
		{"on-failure restarts a rejected task", &api.RestartPolicy{Condition: api.RestartOnFailure, Delay: &zero}, api.TaskRejected, true},
		{"none leaves a failed task", &api.RestartPolicy{Condition: api.RestartNone}, api.TaskFailed, false},
	} {
		old := endedTask("old", 1, c.state, t0)
		p := testReconciler(t0).reconcileTasks(svcWith(c.rp, 1), []*api.Task{old}, ready("n1"))
		if got := len(p.create) == 1; got != c.restart {
			t.Errorf("%s: restarted %v", c.name, got)
			continue
		}
		if c.restart {
			nt := p.create[0]
			if nt.Slot != 1 || nt.SpecVersion != 7 || nt.Status.State != api.TaskPending || nt.DesiredState != api.TaskRunning || nt.Annotations.Name != "web.1.new1" {
				t.Errorf("%s: new task %+v", c.name, nt)
			}
			if old.DesiredState != api.TaskShutdown {
				t.Errorf("%s: replaced task still desired %s", c.name, old.DesiredState)
			}
		}
	}
}

func TestRestartDelayAndAttempts(t *testing.T) {
	delay := 5 * time.Second
	rp := &api.RestartPolicy{Delay: &delay, MaxAttempts: 2, Window: time.Hour}
	old := endedTask("old", 1, api.TaskFailed, t0)
	p := testReconciler(t0.Add(2*time.Second)).reconcileTasks(svcWith(rp, 1), []*api.Task{old}, ready("n1"))
	if len(p.create) != 0 || !p.retryAt.Equal(t0.Add(delay)) {
		t.Fatalf("within the delay: created %d, retry at %v", len(p.create), p.retryAt)
	}
	p = testReconciler(t0.Add(delay)).reconcileTasks(svcWith(rp, 1), []*api.Task{old}, ready("n1"))
	if len(p.create) != 1 {
		t.Fatal("not restarted after the delay")
	}
	// Two earlier attempts in the window: no third.
	// (The reconciler marked old as replaced; start again from a fresh one.)
	old = endedTask("old", 1, api.TaskFailed, t0)
	tasks := []*api.Task{endedTask("a", 1, api.TaskFailed, t0.Add(-3*time.Minute)), endedTask("b", 1, api.TaskFailed, t0.Add(-2*time.Minute)), old}
	tasks[0].DesiredState, tasks[1].DesiredState = api.TaskShutdown, api.TaskShutdown
	if p := testReconciler(t0.Add(time.Minute)).reconcileTasks(svcWith(rp, 1), tasks, ready("n1")); len(p.create) != 0 {
		t.Fatal("restarted beyond MaxAttempts")
	}
	// Outside the window they no longer count.
	old = endedTask("old", 1, api.TaskFailed, t0)
	tasks[2] = old
	if p := testReconciler(t0.Add(2*time.Hour)).reconcileTasks(svcWith(rp, 1), tasks, ready("n1")); len(p.create) != 1 {
		t.Fatal("attempts outside the window still counted")
	}
}

func TestHistoryIsReaped(t *testing.T) {
	var tasks []*api.Task
	for i := range 8 {
		tk := endedTask(fmt.Sprint("t", i), 1, api.TaskFailed, t0.Add(time.Duration(i)*time.Minute))
		tk.DesiredState = api.TaskShutdown
		tasks = append(tasks, tk)
	}
	running := &api.Task{Meta: api.Meta{ID: "live", CreatedAt: t0.Add(time.Hour)}, ServiceID: "s", Slot: 1, NodeID: "n1",
		DesiredState: api.TaskRunning, Status: api.TaskStatus{State: api.TaskRunning}}
	p := testReconciler(t0.Add(2*time.Hour)).reconcileTasks(svcWith(nil, 1), append(tasks, running), ready("n1"))
	if len(p.create) != 0 || len(p.remove) != 3 {
		t.Fatalf("created %d, removed %d; want 0 and 3", len(p.create), len(p.remove))
	}
	for _, r := range p.remove {
		if r.ID != "t0" && r.ID != "t1" && r.ID != "t2" {
			t.Fatalf("removed %s, not one of the 3 oldest", r.ID)
		}
	}
}

func TestTasksOnDownNodesAreOrphaned(t *testing.T) {
	zero := time.Duration(0)
	live := &api.Task{Meta: api.Meta{ID: "live", CreatedAt: t0}, ServiceID: "s", Slot: 1, NodeID: "gone",
		DesiredState: api.TaskRunning, Status: api.TaskStatus{State: api.TaskRunning}}
	p := testReconciler(t0).reconcileTasks(svcWith(&api.RestartPolicy{Delay: &zero}, 1), []*api.Task{live}, ready("n1"))
	if live.Status.State != api.TaskOrphaned || live.DesiredState != api.TaskShutdown || len(p.create) != 1 {
		t.Fatalf("task on a gone node: %s/%s, created %d", live.Status.State, live.DesiredState, len(p.create))
	}
}

// The restart delay is for tasks that ended by themselves: a task whose
// node went down (or was drained) gets its replacement at once, while one
// that exited with an error waits the delay (the default, 5 s, here).
func TestNodeLossIsReplacedWithoutTheRestartDelay(t *testing.T) {
	svc := svcWith(nil, 1) // default restart policy: any condition, 5 s delay
	nodes := ready("n1", "n2")
	nodes["n2"].Status.State = api.NodeDown
	later := t0.Add(time.Second) // within the delay of anything that ended at t0

	// The pass that finds the node down orphans the task and replaces it.
	live := &api.Task{Meta: api.Meta{ID: "live", CreatedAt: t0.Add(-time.Hour)}, ServiceID: "s", Slot: 1, NodeID: "n2",
		DesiredState: api.TaskRunning, Status: api.TaskStatus{State: api.TaskRunning, Timestamp: t0.Add(-time.Hour)}}
	p := testReconciler(t0).reconcileTasks(svc, []*api.Task{live}, nodes)
	if live.Status.State != api.TaskOrphaned || len(p.create) != 1 || !p.retryAt.IsZero() {
		t.Fatalf("node down: task %s, created %d, retry at %v; want ORPHANED, a replacement now, no retry",
			live.Status.State, len(p.create), p.retryAt)
	}
	if nt := p.create[0]; nt.Slot != 1 || live.DesiredState != api.TaskShutdown {
		t.Fatalf("replacement in slot %d, orphan desired %s", nt.Slot, live.DesiredState)
	}

	// A task orphaned by an earlier pass (whose replacement did not
	// commit, say) is replaced at the next one, within the delay.
	orphan := endedTask("orphan", 1, api.TaskOrphaned, t0)
	orphan.NodeID = "n2"
	if p := testReconciler(later).reconcileTasks(svc, []*api.Task{orphan}, nodes); len(p.create) != 1 {
		t.Fatalf("orphaned task: created %d within the restart delay, want 1 (retry at %v)", len(p.create), p.retryAt)
	}

	// A drained node: the task is stopped first, then replaced as soon as
	// it has stopped, without the delay.
	drained := ready("n1", "n2")
	drained["n2"].Spec.Availability = api.NodeDrain
	onDrained := &api.Task{Meta: api.Meta{ID: "d", CreatedAt: t0.Add(-time.Hour)}, ServiceID: "s", Slot: 1, NodeID: "n2",
		DesiredState: api.TaskRunning, Status: api.TaskStatus{State: api.TaskRunning, Timestamp: t0.Add(-time.Hour)}}
	if p := testReconciler(t0).reconcileTasks(svc, []*api.Task{onDrained}, drained); onDrained.DesiredState != api.TaskShutdown || len(p.create) != 0 {
		t.Fatalf("drained node: desired %s, created %d; want SHUTDOWN and none until it stops", onDrained.DesiredState, len(p.create))
	}
	onDrained.Status = api.TaskStatus{State: api.TaskShutdown, Timestamp: t0}
	if p := testReconciler(later).reconcileTasks(svc, []*api.Task{onDrained}, drained); len(p.create) != 1 {
		t.Fatalf("drained task stopped: created %d within the restart delay, want 1", len(p.create))
	}

	// A task that exited 1 on a node that is up waits the delay.
	failed := endedTask("failed", 1, api.TaskFailed, t0)
	failed.Status.Err = "task: non-zero exit (1)"
	p = testReconciler(later).reconcileTasks(svc, []*api.Task{failed}, nodes)
	if len(p.create) != 0 || !p.retryAt.Equal(t0.Add(DefaultRestartDelay)) {
		t.Fatalf("failed task: created %d, retry at %v; want none until %v", len(p.create), p.retryAt, t0.Add(DefaultRestartDelay))
	}
	if p := testReconciler(t0.Add(DefaultRestartDelay)).reconcileTasks(svc, []*api.Task{failed}, nodes); len(p.create) != 1 {
		t.Fatal("failed task not replaced after the delay")
	}
}

// A rolling update waits for a new task with a health check to be healthy
// before its next step, whatever the monitor period says.
func TestUpdateStepWaitsForHealth(t *testing.T) {
	svc := svcWith(nil, 2)
	svc.Spec.TaskTemplate.Healthcheck = &api.HealthConfig{Test: []string{"CMD", "check"}}
	svc.Spec.UpdateConfig = &api.UpdateConfig{Parallelism: 1}
	svc.UpdateStatus = &api.UpdateStatus{State: api.UpdateUpdating, StartedAt: t0}
	old := &api.Task{Meta: api.Meta{ID: "old2", CreatedAt: t0.Add(-time.Hour)}, ServiceID: "s", Slot: 2, NodeID: "n1",
		Spec: api.TaskSpec{Image: "previous"}, SpecVersion: 6, DesiredState: api.TaskRunning, Status: api.TaskStatus{State: api.TaskRunning}}
	for _, c := range []struct {
		health  string
		stepsOn bool
	}{{"starting", false}, {"", false}, {"unhealthy", false}, {"healthy", true}} {
		fresh := &api.Task{Meta: api.Meta{ID: "new1", CreatedAt: t0.Add(time.Second)}, ServiceID: "s", Slot: 1, NodeID: "n1",
			Spec: svc.Spec.TaskTemplate, SpecVersion: 7, DesiredState: api.TaskRunning,
			Status: api.TaskStatus{State: api.TaskRunning, Health: c.health, Timestamp: t0.Add(2 * time.Second)}}
		o := *old
		p := testReconciler(t0.Add(time.Hour)).reconcileTasks(svc, []*api.Task{fresh, &o}, ready("n1"))
		stopped := o.DesiredState == api.TaskShutdown
		if stopped != c.stepsOn {
			t.Fatalf("new task health %q: next slot stopped = %v, want %v", c.health, stopped, c.stepsOn)
		}
		if !c.stepsOn && !p.retryAt.IsZero() {
			t.Fatalf("health %q: a retry at %v; only the task's next report can move the update", c.health, p.retryAt)
		}
	}
}

// A replacement carries the slot's restart times, so MaxAttempts holds
// when the history limit has reaped the earlier tasks.
func TestRestartsAreCarriedPastTheHistory(t *testing.T) {
	zero := time.Duration(0)
	rp := &api.RestartPolicy{Condition: api.RestartAny, Delay: &zero, MaxAttempts: 3}
	r := testReconciler(t0)
	r.history = 1
	cur := endedTask("t", 1, api.TaskFailed, t0)
	for i := range 3 {
		p := r.reconcileTasks(svcWith(rp, 1), []*api.Task{cur}, ready("n1"))
		if len(p.create) != 1 {
			t.Fatalf("restart %d not made", i+1)
		}
		next := p.create[0].Task
		if len(next.Restarts) != i+1 {
			t.Fatalf("restart %d carries %d times", i+1, len(next.Restarts))
		}
		next.Status = api.TaskStatus{State: api.TaskFailed, Timestamp: t0}
		cur = next
	}
	if p := r.reconcileTasks(svcWith(rp, 1), []*api.Task{cur}, ready("n1")); len(p.create) != 0 {
		t.Fatal("a fourth restart with MaxAttempts 3 and only the last task left")
	}
	// Out of the window, restarts no longer count.
	rp.Window = time.Minute
	if p := testReconciler(t0.Add(time.Hour)).reconcileTasks(svcWith(rp, 1), []*api.Task{cur}, ready("n1")); len(p.create) != 1 {
		t.Fatal("restarts an hour old still counted against a 1-minute window")
	}
}

// The pass's bound on new tasks reaches the reconciler: it builds only
// that many, says it left work, and does not stop a task whose
// replacement it cannot make.
func TestReconcilerBuildsOnlyItsBudget(t *testing.T) {
	zero := time.Duration(0)
	r := testReconciler(t0)
	r.budget = 3
	p := r.reconcileTasks(svcWith(&api.RestartPolicy{Delay: &zero}, 10), nil, ready("n1"))
	if len(p.create) != 3 || r.made != 3 || !r.cut {
		t.Fatalf("budget 3 of 10 slots: created %d, made %d, cut %v", len(p.create), r.made, r.cut)
	}
	failed := endedTask("f", 1, api.TaskFailed, t0.Add(-time.Minute))
	r = testReconciler(t0)
	r.budget, r.made = 1, 1 // spent
	p = r.reconcileTasks(svcWith(&api.RestartPolicy{Delay: &zero}, 1), []*api.Task{failed}, ready("n1"))
	if len(p.create) != 0 || failed.DesiredState != api.TaskRunning || !r.cut {
		t.Fatalf("no budget left: created %d, the failed task desired %s, cut %v", len(p.create), failed.DesiredState, r.cut)
	}
}

// The leader loop skips the reports of a task starting on its node (no
// pass acts on them) and follows everything else about tasks.
func TestLeaderSkipsOnlyStartingSteps(t *testing.T) {
	task := func(state, desired api.TaskState) *api.Task {
		return &api.Task{Meta: api.Meta{ID: "t"}, ServiceID: "s", NodeID: "n1", DesiredState: desired, Status: api.TaskStatus{State: state}}
	}
	for _, c := range []struct {
		name     string
		old, new *api.Task
		marks    bool
	}{
		{"placed", task(api.TaskPending, api.TaskRunning), task(api.TaskAssigned, api.TaskRunning), false},
		{"preparing", task(api.TaskAccepted, api.TaskRunning), task(api.TaskPreparing, api.TaskRunning), false},
		{"running", task(api.TaskStarting, api.TaskRunning), task(api.TaskRunning, api.TaskRunning), true},
		{"failed", task(api.TaskRunning, api.TaskRunning), task(api.TaskFailed, api.TaskRunning), true},
		{"failed while starting", task(api.TaskPreparing, api.TaskRunning), task(api.TaskRejected, api.TaskRunning), true},
		{"told to stop", task(api.TaskAssigned, api.TaskRunning), task(api.TaskAssigned, api.TaskShutdown), true},
		{"created", nil, task(api.TaskPending, api.TaskRunning), true},
		{"removed", task(api.TaskAssigned, api.TaskShutdown), nil, true},
	} {
		s := &leaderState{dirty: map[string]bool{}}
		ev := raftstore.Event{Table: TableTasks, ID: "t"}
		if c.new != nil {
			ev.Object = c.new
		}
		if c.old != nil {
			ev.Old = c.old
		}
		s.mark(ev)
		if s.dirty["s"] != c.marks {
			t.Errorf("%s: service marked %v, want %v", c.name, s.dirty["s"], c.marks)
		}
	}
}
