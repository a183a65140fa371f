package swarm_test

// One test per fault that the review of swarm's first cut found (issue
// "swarm, correct and in shape"); each failed before its fix.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/swarmtest"
)

// Fault 1: a manager restarted from a data dir that holds a snapshot
// watched from index 0, was refused, and never reconciled again.
func TestManagerRestartedFromSnapshotReconciles(t *testing.T) {
	ctx := context.Background()
	c := swarmtest.New(t, swarmtest.Options{Workers: 2, OnDisk: true})
	svc := create(t, c, service("before", api.Replicated(2)))
	c.WaitFor("2 running", func() bool { return len(c.Running(svc.ID)) == 2 })
	if err := c.Leader().Store().Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	c.RestartManager("m0")
	svc2 := create(t, c, service("after", api.Replicated(2)))
	c.WaitFor("the new service runs after the restart", func() bool { return len(c.Running(svc2.ID)) == 2 })
	c.WaitFor("the old one still runs", func() bool { return len(c.Running(svc.ID)) == 2 })
}

// Fault 1, the whole cluster: three managers restarted from disk after
// snapshots, with services converging again.
func TestWholeClusterRestartsFromDisk(t *testing.T) {
	ctx := context.Background()
	c := swarmtest.New(t, swarmtest.Options{Managers: 3, Workers: 3, OnDisk: true, Executor: testImages})
	svc := create(t, c, service("web", api.Replicated(3)))
	c.WaitFor("3 running", func() bool { return len(c.Running(svc.ID)) == 3 })
	for _, id := range c.ManagerIDs() {
		if err := c.Manager(id).Store().Snapshot(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range c.ManagerIDs() {
		c.StopManager(id)
	}
	for _, id := range c.ManagerIDs() {
		c.StartManager(id)
	}
	m := c.Leader()
	svc2 := create(t, c, service("api", api.Replicated(3)))
	c.WaitFor("a new service runs on the restarted cluster", func() bool { return len(c.Running(svc2.ID)) == 3 })
	// The restarted cluster heals failures too.
	victim := c.Running(svc.ID)[0]
	c.Exec(victim.NodeID).Exit(victim.ID, 1)
	c.WaitFor("replacement after the restart", func() bool {
		for _, tk := range c.Running(svc.ID) {
			if tk.Slot == victim.Slot && tk.ID != victim.ID {
				return true
			}
		}
		return false
	})
	if m.ID == "" {
		t.Fatal("no leader")
	}
}

// Fault 1, the event buffer: a burst of changes larger than the store's
// watch buffer makes every watcher resync; the leader loop and the
// workers' assignment streams read the state again and go on.
func TestWatchersSurviveResync(t *testing.T) {
	c := swarmtest.New(t, swarmtest.Options{Workers: 4, Raft: swarm.RaftTuning{WatchBuffer: 64}})
	svc := create(t, c, service("wide", api.Replicated(300)))
	c.WaitFor("300 running through resyncs", func() bool { return len(c.Running(svc.ID)) == 300 })
	svc2 := create(t, c, service("after", api.Replicated(4)))
	c.WaitFor("a later service runs", func() bool { return len(c.Running(svc2.ID)) == 4 })
}

// flaky fails UpdateStatus (as a manager without a leader would) while
// down is set, counting the reports it refused.
type flaky struct {
	swarm.Dispatcher
	down    *atomic.Bool
	refused *atomic.Int64
}

func (f *flaky) UpdateStatus(ctx context.Context, nodeID string, updates []agent.StatusUpdate) error {
	if f.down.Load() {
		f.refused.Add(1)
		return fmt.Errorf("%w: election in progress (injected)", swarm.ErrNotManagerLeader)
	}
	return f.Dispatcher.UpdateStatus(ctx, nodeID, updates)
}

// Fault 2: a status reported while there is no leader was dropped for
// good; a task that failed then was never replaced.
func TestStatusReportedWithoutLeaderIsNotLost(t *testing.T) {
	var down atomic.Bool
	var refused atomic.Int64
	c := swarmtest.New(t, swarmtest.Options{Workers: 1, Dispatcher: func(_ string, d swarm.Dispatcher) swarm.Dispatcher {
		return &flaky{Dispatcher: d, down: &down, refused: &refused}
	}})
	svc := create(t, c, service("web", api.Replicated(1)))
	c.WaitFor("running", func() bool { return len(c.Running(svc.ID)) == 1 })
	victim := c.Running(svc.ID)[0]
	down.Store(true)
	c.Exec("node0").Exit(victim.ID, 1)
	c.WaitFor("the failure report refused", func() bool { return refused.Load() > 0 })
	time.Sleep(200 * time.Millisecond) // the dispatcher stays down for 200 ms
	down.Store(false)
	c.WaitFor("the failed task replaced", func() bool {
		for _, tk := range c.Running(svc.ID) {
			if tk.ID != victim.ID {
				return true
			}
		}
		return false
	})
	for _, tk := range c.Tasks(svc.ID) {
		if tk.ID == victim.ID && tk.Status.State != api.TaskFailed {
			t.Fatalf("the failed task is %s", tk.Status.State)
		}
	}
	t.Logf("%d reports refused while down", refused.Load())
}

// Fault 3: drain moved global tasks and jobs but not replicated ones.
func TestDrainMovesReplicatedTasks(t *testing.T) {
	c := newCluster(t, 3)
	svc := create(t, c, service("web", api.Replicated(6)))
	c.WaitFor("6 running", func() bool { return len(c.Running(svc.ID)) == 6 })
	if err := c.Leader().SetNodeAvailability(context.Background(), "node0", api.NodeDrain); err != nil {
		t.Fatal(err)
	}
	c.WaitFor("6 running off the drained node, and none on it", func() bool {
		on := 0
		for _, tk := range c.Tasks(svc.ID) {
			if tk.NodeID == "node0" && !tk.Status.State.Terminal() {
				on++
			}
		}
		ts := c.Running(svc.ID)
		for _, tk := range ts {
			if tk.NodeID == "node0" {
				return false
			}
		}
		return on == 0 && len(ts) == 6
	})
}

// Fault 4, with the fake executor: a restarted worker adopts its running
// tasks (not started again), reports the ones it lost, and stops for real
// those it is told to stop.
func TestRestartedWorkerAdoptsTasks(t *testing.T) {
	ctx := context.Background()
	// Slow heartbeats: the worker's restarts fit in the grace period, so
	// its node is not declared down meanwhile.
	c := swarmtest.New(t, swarmtest.Options{Workers: 1, HeartbeatPeriod: time.Second})
	svc := create(t, c, service("web", api.Replicated(3)))
	c.WaitFor("3 running", func() bool { return len(c.Running(svc.ID)) == 3 })
	before := c.Running(svc.ID)
	c.RestartWorker("node0")
	settle(t, c)
	for _, tk := range before {
		if n := c.Exec("node0").Starts(tk.ID); n != 1 {
			t.Fatalf("task %s started %d times; want 1 (adopted)", tk.ID, n)
		}
	}
	if got := c.Running(svc.ID); len(got) != 3 {
		t.Fatalf("%d running after the restart:\n%s", len(got), c.Dump())
	}
	// Scaled down while the worker is away: the restarted worker stops the
	// surplus task for real (its process ends with SIGTERM's code).
	c.StopWorker("node0")
	m := c.Leader()
	cur, _ := m.Service(svc.ID)
	spec := cur.Spec
	spec.Mode = api.Replicated(2)
	if _, err := m.UpdateService(ctx, svc.ID, cur.Version, spec); err != nil {
		t.Fatal(err)
	}
	var surplus *api.Task
	c.WaitFor("the surplus task told to stop", func() bool {
		for _, tk := range c.Tasks(svc.ID) {
			if tk.Slot == 3 && tk.DesiredState == api.TaskShutdown {
				surplus = tk
				return true
			}
		}
		return false
	})
	c.StartWorker("node0")
	c.WaitFor("the surplus task shut down", func() bool {
		for _, tk := range c.Tasks(svc.ID) {
			if tk.ID == surplus.ID {
				return tk.Status.State == api.TaskShutdown
			}
		}
		return true // removed once ended
	})
	// Its container stays, stopped, while the task is in the service's
	// history (for its logs), and goes with the task.
	inHistory := func() bool {
		return slices.ContainsFunc(c.Tasks(svc.ID), func(tk *api.Task) bool { return tk.ID == surplus.ID })
	}
	c.WaitFor("its process stopped, its container kept while the task is in the history", func() bool {
		in, err := c.Exec("node0").Inspect(ctx, surplus.ID)
		if errors.Is(err, agent.ErrNotFound) {
			return !inHistory()
		}
		return err == nil && !in.Running && in.Exit != nil
	})
	if c.Exec("node0").Stopped(surplus.ID) == 0 {
		t.Fatal("the surplus task was reported shut down without being stopped")
	}
	// (Its removal with the task: TestServiceOnContainerd.)
	// A worker restarted on an executor that lost its tasks (a new
	// machine image, say) reports them lost, and they are replaced.
	c.StopWorker("node0")
	c.AddWorker("node0") // a fresh executor under the same node ID
	c.WaitFor("lost tasks replaced", func() bool {
		ts := c.Running(svc.ID)
		for _, tk := range ts {
			for _, b := range before {
				if tk.ID == b.ID {
					return false
				}
			}
		}
		return len(ts) == 2
	})
}

// Fault 5: identity and lifecycle.
func TestManagerIdentityAndLifecycle(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	var m swarm.Manager
	// Before Start: errors, not panics.
	if _, err := m.Tasks(""); !errors.Is(err, swarm.ErrNotStarted) {
		t.Fatalf("Tasks before Start: %v", err)
	}
	if _, err := m.Register(ctx, "n1", api.NodeDescription{}); !errors.Is(err, swarm.ErrNotStarted) {
		t.Fatalf("Register before Start: %v", err)
	}
	if _, err := m.CreateService(ctx, service("x", api.Replicated(1))); !errors.Is(err, swarm.ErrNotStarted) {
		t.Fatalf("CreateService before Start: %v", err)
	}
	start := func(id string) *swarm.Manager {
		m := &swarm.Manager{ID: id, Dir: dir}
		if err := m.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if err := m.Start(ctx); err != nil {
			t.Fatalf("second Start: %v", err)
		}
		ready(t, m)
		// Ready means usable: the cluster object is there.
		if _, err := m.Cluster(); err != nil {
			t.Fatalf("ready, but: %v", err)
		}
		return m
	}
	m1 := start("")
	id := m1.ID
	svc, err := m1.CreateService(ctx, service("kept", api.Replicated(1)))
	if err != nil {
		t.Fatal(err)
	}
	if err := m1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m1.Close(); !errors.Is(err, netErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	if err := m1.Start(ctx); !errors.Is(err, netErrClosed) {
		t.Fatalf("Start after Close: %v", err)
	}
	// The same identity after a restart from the same dir, and the data.
	m2 := start("")
	if m2.ID != id {
		t.Fatalf("restarted with ID %s, was %s", m2.ID, id)
	}
	if got, err := m2.Service("kept"); err != nil || got.ID != svc.ID {
		t.Fatalf("service after restart: %v %v", got, err)
	}
	m2.Close()
	// Another ID for this dir is refused.
	other := &swarm.Manager{ID: "someone-else", Dir: dir}
	if err := other.Start(ctx); err == nil || !strings.Contains(err.Error(), id) {
		t.Fatalf("a different ID on the dir: %v", err)
	}
}

// Fault 5: Shutdown hands leadership over; the cluster does not wait for
// an election timeout. The timeouts here are long (5 s), so a new leader
// within 3 s can only come from the handover.
func TestShutdownTransfersLeadership(t *testing.T) {
	ctx := context.Background()
	c := swarmtest.New(t, swarmtest.Options{Managers: 3,
		Raft: swarm.RaftTuning{HeartbeatTimeout: 5 * time.Second, ElectionTimeout: 5 * time.Second, LeaderLeaseTimeout: 2 * time.Second}})
	for _, id := range c.ManagerIDs() {
		m := c.Manager(id)
		select {
		case <-m.Ready():
		case <-time.After(10 * time.Second):
			t.Fatalf("manager %s (a follower or the leader) never ready", id)
		}
	}
	old := c.Leader()
	if err := old.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	found := false
	waitForWithin(t, 3*time.Second, "a new leader by handover", func() bool {
		for _, id := range c.ManagerIDs() {
			if m := c.Manager(id); m != nil && m != old && m.IsLeader() {
				found = true
			}
		}
		return found
	})
}

// Fault 6: the scheduler adapter now counts generic resources of running
// tasks, gives out named units and records them, takes host ports into
// account, and node labels can be set.
func TestSchedulerSeesResourcesPortsAndLabels(t *testing.T) {
	ctx := context.Background()
	c := swarmtest.New(t, swarmtest.Options{Workers: 2, Description: func(id string) api.NodeDescription {
		d := api.NodeDescription{Hostname: id, Platform: api.Platform{OS: "linux", Architecture: "x86_64"},
			Resources: api.Resources{NanoCPUs: 4e9, MemoryBytes: 8 << 30}}
		if id == "node0" {
			d.Resources.Generic = []api.GenericResource{{Kind: "fpga", Value: 2}}
		} else {
			d.Resources.Generic = []api.GenericResource{{Kind: "gpu", Named: "GPU-a"}, {Kind: "gpu", Named: "GPU-b"}}
		}
		return d
	}})
	m := c.Leader()
	// Discrete: 2 units on node0; the third task waits, also when it comes
	// in a later pass (the running tasks' units are counted).
	fp := service("fpga", api.Replicated(2))
	fp.TaskTemplate.Resources = &api.ResourceRequirements{Reservations: &api.Resources{Generic: []api.GenericResource{{Kind: "fpga", Value: 1}}}}
	fsvc := create(t, c, fp)
	c.WaitFor("2 fpga tasks on node0", func() bool { return len(c.Running(fsvc.ID)) == 2 })
	fp.Mode = api.Replicated(3)
	cur, _ := m.Service(fsvc.ID)
	if _, err := m.UpdateService(ctx, fsvc.ID, cur.Version, fp); err != nil {
		t.Fatal(err)
	}
	c.WaitFor("the third waits for an fpga", func() bool {
		for _, tk := range c.Tasks(fsvc.ID) {
			if tk.Status.State == api.TaskPending && strings.Contains(tk.Status.Err, "insufficient generic resource fpga") {
				return true
			}
		}
		return false
	})
	// Named: each task gets its own unit, recorded on the task.
	gp := service("gpu", api.Replicated(2))
	gp.TaskTemplate.Resources = &api.ResourceRequirements{Reservations: &api.Resources{Generic: []api.GenericResource{{Kind: "gpu", Value: 1}}}}
	gsvc := create(t, c, gp)
	c.WaitFor("2 gpu tasks", func() bool { return len(c.Running(gsvc.ID)) == 2 })
	units := map[string]bool{}
	for _, tk := range c.Running(gsvc.ID) {
		for _, g := range tk.AssignedGenericResources {
			if g.Kind == "gpu" && g.Named != "" {
				units[g.Named] = true
			}
		}
	}
	if !units["GPU-a"] || !units["GPU-b"] {
		t.Fatalf("named units given out: %v, want GPU-a and GPU-b", units)
	}
	// Host ports: one task per node for a host-mode port.
	hp := service("hostport", api.Replicated(3))
	hp.EndpointSpec = &api.EndpointSpec{Ports: []api.PortConfig{{TargetPort: 80, PublishedPort: 8080, PublishMode: api.PublishHost}}}
	hsvc := create(t, c, hp)
	c.WaitFor("2 host-port tasks, one per node, and one waiting on the port", func() bool {
		nodes := map[string]bool{}
		for _, tk := range c.Running(hsvc.ID) {
			nodes[tk.NodeID] = true
		}
		waiting := false
		for _, tk := range c.Tasks(hsvc.ID) {
			if tk.Status.State == api.TaskPending && strings.Contains(tk.Status.Err, "8080/tcp") {
				waiting = true
			}
		}
		return len(nodes) == 2 && len(c.Running(hsvc.ID)) == 2 && waiting
	})
	// Node labels: set on node1, matched by a constraint.
	editNode(t, m, m.Node, "node1", func(s *api.NodeSpec) { s.Labels = map[string]string{"zone": "east"} })
	lp := service("east", api.Replicated(2))
	lp.TaskTemplate.Placement = &api.Placement{Constraints: []string{"node.labels.zone==east"}}
	lsvc := create(t, c, lp)
	c.WaitFor("both on the labelled node", func() bool {
		ts := c.Running(lsvc.ID)
		for _, tk := range ts {
			if tk.NodeID != "node1" {
				return false
			}
		}
		return len(ts) == 2
	})
}

// Fault 7: a spec asking for too many tasks is refused, the bound is the
// cluster's to raise, and one pass creates a bounded number of tasks.
func TestReplicasAreBoundedAndPassesToo(t *testing.T) {
	ctx := context.Background()
	c := swarmtest.New(t, swarmtest.Options{Workers: 2, Manager: func(m *swarm.Manager) { m.MaxTasksPerPass = 10 }})
	m := c.Leader()
	_, err := m.CreateService(ctx, service("huge", api.Replicated(api.DefaultMaxReplicas+1)))
	var ve *api.ValidationError
	if !errors.As(err, &ve) || ve.Problems[0].Path != "spec.mode.replicated.replicas" {
		t.Fatalf("too many replicas: %v", err)
	}
	job := service("jobs", api.ServiceMode{ReplicatedJob: &api.ReplicatedJob{MaxConcurrent: 1, TotalCompletions: api.DefaultMaxReplicas + 1}})
	if _, err := m.CreateService(ctx, job); !errors.Is(err, api.ErrInvalidSpec) {
		t.Fatalf("too many completions: %v", err)
	}
	cl, err := m.Cluster()
	if err != nil {
		t.Fatal(err)
	}
	cs := cl.Spec
	cs.Orchestration.MaxReplicas = 20
	if _, err := m.UpdateCluster(ctx, cl.Version, cs); err != nil {
		t.Fatal(err)
	}
	if _, err := m.CreateService(ctx, service("over", api.Replicated(21))); !errors.Is(err, api.ErrInvalidSpec) || !strings.Contains(err.Error(), "at most 20") {
		t.Fatalf("over the cluster's bound: %v", err)
	}
	// Count the tasks each committed entry creates.
	st := m.Store()
	w, err := st.Watch(ctx, st.AppliedIndex(), func(e raftstore.Event) bool { return e.Table == swarm.TableTasks && e.Kind == raftstore.Created })
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	svc := create(t, c, service("many", api.Replicated(20)))
	c.WaitFor("20 running, made in bounded passes", func() bool { return len(c.Running(svc.ID)) == 20 })
	perIndex := map[uint64]int{}
	for sum(perIndex) < 20 {
		select {
		case ev := <-w.Events():
			perIndex[ev.Index]++
		case <-time.After(10 * time.Second):
			t.Fatalf("saw %d task creations", sum(perIndex))
		}
	}
	for idx, n := range perIndex {
		if n > 10 {
			t.Fatalf("entry %d created %d tasks; a pass may create 10", idx, n)
		}
	}
}

func sum(m map[uint64]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// Fault 8: two concurrent creates could both take one name.
func TestConcurrentCreatesKeepNamesUnique(t *testing.T) {
	c := newCluster(t, 0)
	m := c.Leader()
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, errs[i] = m.CreateService(context.Background(), service("same", api.Replicated(1)))
		}()
	}
	close(start)
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, swarm.ErrNameInUse):
			t.Fatalf("unexpected error: %v", err)
		}
	}
	svcs, _ := m.Services()
	if ok != 1 || len(svcs) != 1 {
		t.Fatalf("%d creates succeeded, %d services named same; want 1 and 1", ok, len(svcs))
	}
}

// Fault 9: rolling updates are gated on health, and an unhealthy task is
// replaced.
func TestHealthGatesUpdatesAndReplacesUnhealthy(t *testing.T) {
	var (
		mu        sync.Mutex
		unhealthy = map[string]bool{} // tasks whose checks fail
		holdNew   bool                // checks of tasks not in old fail
		old       = map[string]bool{}
	)
	c := swarmtest.New(t, swarmtest.Options{Workers: 2, Executor: func(_ string, e *agent.FakeExecutor) {
		e.ExecResult = func(taskID string, _ []string) int {
			mu.Lock()
			defer mu.Unlock()
			if unhealthy[taskID] || (holdNew && !old[taskID]) {
				return 1
			}
			return 0
		}
	}})
	spec := service("web", api.Replicated(2))
	spec.TaskTemplate.Healthcheck = &api.HealthConfig{Test: []string{"CMD", "check"}, Interval: 20 * time.Millisecond, Retries: 2}
	svc := create(t, c, spec)
	c.WaitFor("2 running and healthy", func() bool {
		n := 0
		for _, tk := range c.Running(svc.ID) {
			if tk.Status.Health == agent.HealthHealthy {
				n++
			}
		}
		return n == 2
	})
	// An unhealthy task is killed and replaced.
	victim := c.Running(svc.ID)[0]
	mu.Lock()
	unhealthy[victim.ID] = true
	mu.Unlock()
	c.WaitFor("the unhealthy task replaced", func() bool {
		for _, tk := range c.Tasks(svc.ID) {
			if tk.ID == victim.ID && tk.Status.State != api.TaskFailed {
				return false
			}
		}
		return len(c.Running(svc.ID)) == 2
	})
	// An update waits for each new task to be healthy: a task whose checks
	// fail inside a long start period stays "starting", and the update
	// does not take its next step (with a monitor of 1 ms, it would at
	// once without the health gate); once it turns healthy, it goes on.
	m := c.Leader()
	cur, _ := m.Service(svc.ID)
	mu.Lock()
	for _, tk := range c.Tasks(svc.ID) {
		old[tk.ID] = true
	}
	holdNew = true
	mu.Unlock()
	up := cur.Spec
	up.TaskTemplate.Image = "example/web:2"
	up.TaskTemplate.Healthcheck = &api.HealthConfig{Test: []string{"CMD", "check"}, Interval: 20 * time.Millisecond, Retries: 2, StartPeriod: time.Hour}
	up.UpdateConfig = &api.UpdateConfig{Parallelism: 1, Monitor: time.Millisecond, FailureAction: api.ActionPause}
	if _, err := m.UpdateService(context.Background(), svc.ID, cur.Version, up); err != nil {
		t.Fatal(err)
	}
	c.WaitFor("the first new task runs, health starting", func() bool {
		for _, tk := range c.Running(svc.ID) {
			if tk.Spec.Image == "example/web:2" && tk.Status.Health == agent.HealthStarting {
				return true
			}
		}
		return false
	})
	settle(t, c)
	if got := images(c, svc.ID); got["example/web:1"] != 1 || got["example/web:2"] != 1 || updateState(c, "web") != api.UpdateUpdating {
		t.Fatalf("the update went past a task not yet healthy: running %v, state %s:\n%s", got, updateState(c, "web"), c.Dump())
	}
	mu.Lock()
	holdNew = false
	mu.Unlock()
	c.WaitFor("the update completes once the new tasks are healthy", func() bool {
		return updateState(c, "web") == api.UpdateCompleted && images(c, svc.ID)["example/web:2"] == 2
	})
}

// The constraint enforcer: tasks leave nodes that stop meeting their
// constraints, or whose resources shrink below what they reserve.
func TestConstraintEnforcer(t *testing.T) {
	var memMu sync.Mutex
	mem := map[string]int64{"node0": 8 << 30, "node1": 8 << 30}
	c := swarmtest.New(t, swarmtest.Options{Workers: 2, HeartbeatPeriod: time.Second, Description: func(id string) api.NodeDescription {
		memMu.Lock()
		defer memMu.Unlock()
		return api.NodeDescription{Hostname: id, Resources: api.Resources{NanoCPUs: 4e9, MemoryBytes: mem[id]}}
	}})
	m := c.Leader()
	for _, id := range []string{"node0", "node1"} {
		editNode(t, m, m.Node, id, func(s *api.NodeSpec) { s.Labels = map[string]string{"zone": "east"} })
	}
	spec := service("east", api.Replicated(2))
	spec.TaskTemplate.Placement = &api.Placement{Constraints: []string{"node.labels.zone==east"}}
	spec.TaskTemplate.Resources = &api.ResourceRequirements{Reservations: &api.Resources{MemoryBytes: 1 << 30}}
	svc := create(t, c, spec)
	c.WaitFor("spread over both", func() bool {
		nodes := map[string]bool{}
		for _, tk := range c.Running(svc.ID) {
			nodes[tk.NodeID] = true
		}
		return len(nodes) == 2
	})
	editNode(t, m, m.Node, "node0", func(s *api.NodeSpec) { s.Labels = map[string]string{"zone": "west"} })
	c.WaitFor("both on node1, the east node left", func() bool {
		ts := c.Running(svc.ID)
		for _, tk := range ts {
			if tk.NodeID != "node1" {
				return false
			}
		}
		return len(ts) == 2
	})
	// node1 comes back with 1.5 GiB: one of its two 1 GiB tasks must go,
	// and it has nowhere to go.
	memMu.Lock()
	mem["node1"] = 3 << 29
	memMu.Unlock()
	c.RestartWorker("node1")
	c.WaitFor("one task left node1 for lack of memory", func() bool {
		pending := false
		for _, tk := range c.Tasks(svc.ID) {
			if tk.Status.State == api.TaskPending && strings.Contains(tk.Status.Err, "insufficient memory") {
				pending = true
			}
		}
		return len(c.Running(svc.ID)) == 1 && pending
	})
}

// The history limit is kept exactly, and the restart policy still counts
// restarts whose tasks it reaped.
func TestHistoryLimitAndAttemptsBeyondIt(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, 1)
	m := c.Leader()
	cl, _ := m.Cluster()
	cs := cl.Spec
	cs.Orchestration.TaskHistoryRetentionLimit = 2
	if _, err := m.UpdateCluster(ctx, cl.Version, cs); err != nil {
		t.Fatal(err)
	}
	spec := service("crashy", api.Replicated(1))
	spec.TaskTemplate.Image = badImage
	spec.TaskTemplate.RestartPolicy.MaxAttempts = 6
	svc := create(t, c, spec)
	var last *api.Task
	c.WaitFor("6 restarts made", func() bool {
		for _, tk := range c.Tasks(svc.ID) {
			if len(tk.Restarts) == 6 && tk.Status.State == api.TaskFailed {
				last = tk
				return true
			}
		}
		return false
	})
	settle(t, c)
	ts := c.Tasks(svc.ID)
	kept := 0
	for _, tk := range ts {
		if tk.ID != last.ID {
			kept++
			if tk.DesiredState != api.TaskShutdown || !tk.Status.State.Terminal() {
				t.Fatalf("history task %s is %s/%s", tk.ID, tk.DesiredState, tk.Status.State)
			}
		}
	}
	if kept != 2 || len(ts) != 3 {
		t.Fatalf("%d tasks, %d kept as history; want exactly 2 beside the last:\n%s", len(ts), kept, c.Dump())
	}
}
