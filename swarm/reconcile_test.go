package swarm

import (
	"context"
	"encoding/json"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm/api"
)

// storeObjects reads every object of the tables a pass reads, with its
// encoding now. The store hands the same decoded object to every reader,
// so the encoding of that pointer must never change.
func storeObjects(t *testing.T, st *raftstore.Store) map[raftstore.Object]string {
	t.Helper()
	out := map[raftstore.Object]string{}
	err := st.View(func(tx *raftstore.ReadTx) error {
		for _, table := range []string{TableTasks, TableServices, TableNodes, TableNetworks, TableClusters} {
			objs, err := tx.List(table)
			if err != nil {
				return err
			}
			for _, o := range objs {
				b, err := json.Marshal(o)
				if err != nil {
					return err
				}
				out[o] = string(b)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestReconcileNeverWritesStoreObjects runs passes over a store whose
// tasks take every path of a pass that changes a task (orphaned, drained,
// scaled down, rolling update, start-first replacement, global service on
// a node no longer eligible, an older job run, a removed service, the
// constraint enforcer, address allocation, placement, a placement
// failure's reason) and checks that every object read before a pass is
// unchanged after it: the pass changes its own copies only.
func TestReconcileNeverWritesStoreObjects(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, st, all := seedPassStore(ctx, t)
	var book *allocator
	for pass := range 3 {
		before := storeObjects(t, st)
		// The first pass is a full one (enforcer, node attachments),
		// the others follow events.
		if _, err := m.reconcile(ctx, st, all, pass == 0, pass == 0, &book); err != nil {
			t.Fatalf("pass %d: %v", pass, err)
		}
		for o, was := range before {
			b, _ := json.Marshal(o)
			if string(b) != was {
				t.Fatalf("pass %d changed a store object in place:\nbefore %s\nafter  %s", pass, was, b)
			}
		}
		sameAsDecoded(t, st, pass)
		if pass > 0 {
			continue
		}
		// The pass did change these tasks (in the store, as new objects):
		// the test covers each path that changes a task.
		got := map[string]*api.Task{}
		st.View(func(tx *raftstore.ReadTx) error {
			ts, err := list[*api.Task](tx.List(TableTasks))
			for _, tk := range ts {
				got[tk.ID] = tk
			}
			return err
		})
		for _, id := range []string{"orphan", "drained", "scaled", "updold", "sfold", "globdrained", "jobold", "gonerunning", "conbroken"} {
			if g := got[id]; g == nil || g.DesiredState != api.TaskShutdown {
				t.Errorf("pass 0: task %s not shut down: %+v", id, g)
			}
		}
		if g := got["orphan"]; g != nil && g.Status.State != api.TaskOrphaned {
			t.Errorf("pass 0: the task on the down node is %s, not orphaned", g.Status.State)
		}
		if g := got["pending"]; g == nil || g.Status.State != api.TaskAssigned || len(g.Networks) == 0 {
			t.Errorf("pass 0: the pending task was not given an address and placed: %+v", g)
		}
		if g := got["plainpending"]; g == nil || g.Status.State != api.TaskAssigned {
			t.Errorf("pass 0: the pending task was not placed: %+v", g)
		}
		if g := got["conpending"]; g == nil || g.Status.Err == "" {
			t.Errorf("pass 0: the unplaceable task got no reason: %+v", g)
		}
		if got["goneended"] != nil {
			t.Error("pass 0: the ended task of a removed service is still there")
		}
		removed := 0
		for i := range DefaultTaskHistory + 2 {
			if got["hist"+string(rune('a'+i))] == nil {
				removed++
			}
		}
		if removed == 0 {
			t.Error("pass 0: no task beyond the history limit reaped")
		}
	}
}

// sameAsDecoded checks that every object the leader's store holds is
// what a follower decodes from its bytes: a pass hands its objects over
// to the leader's store (raftstore.Batch.HandOver) instead of letting the
// leader decode them, so an object that does not survive its encoding
// (an empty slice that comes back nil, a time in another location) would
// make the leader see another state than the followers.
func sameAsDecoded(t *testing.T, st *raftstore.Store, pass int) {
	t.Helper()
	codec := st.Schema.Codec
	st.View(func(tx *raftstore.ReadTx) error {
		for _, table := range []string{TableTasks, TableServices, TableNodes, TableNetworks, TableClusters} {
			objs, err := tx.List(table)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range objs {
				data, err := codec.Marshal(table, o)
				if err != nil {
					t.Fatal(err)
				}
				d, err := codec.Unmarshal(table, data)
				if err != nil {
					t.Fatal(err)
				}
				d.SetObjectVersion(o.ObjectVersion())
				if !reflect.DeepEqual(o, d) {
					t.Fatalf("pass %d: the leader's %s %s differs from its decoding:\nheld    %#v\ndecoded %#v", pass, table, o.ObjectID(), o, d)
				}
			}
		}
		return nil
	})
}

// TestDirtyTasksReadsOnlyTheirServices checks both ways a pass reads the
// tasks of the services it looks at (an index lookup per service, or one
// scan of the table for services that hold most of it) give those
// services' tasks and no others: another service's task taken for one of
// a removed service would be shut down.
func TestDirtyTasksReadsOnlyTheirServices(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, st, _ := seedPassStore(ctx, t)
	dirty := map[string]bool{"rep": true, "plain": true, "gone": true}
	big := &api.Service{Spec: api.ServiceSpec{Mode: api.Replicated(1000)}}
	st.View(func(tx *raftstore.ReadTx) error {
		for _, c := range []struct {
			services []*api.Service
			scan     bool
		}{{nil, false}, {[]*api.Service{big}, true}} {
			tasks, every, err := dirtyTasks(tx, dirty, c.services, 3)
			if err != nil {
				t.Fatal(err)
			}
			if n, _ := tx.Count(TableTasks); (every != nil) != c.scan || (c.scan && len(every) != n) {
				t.Errorf("scan %v: read %d of %d tasks of the table", c.scan, len(every), n)
			}
			want := map[string]bool{}
			for id := range dirty {
				ts, _ := list[*api.Task](tx.Find(TableTasks, IndexService, id))
				for _, tk := range ts {
					want[tk.ID] = true
				}
			}
			got := map[string]bool{}
			for _, tk := range tasks {
				if !dirty[tk.ServiceID] || got[tk.ID] {
					t.Errorf("scan %v: task %s of service %s read (twice: %v)", c.scan, tk.ID, tk.ServiceID, got[tk.ID])
				}
				got[tk.ID] = true
			}
			if len(got) != len(want) || len(want) < 10 {
				t.Errorf("scan %v: read %d tasks of the services, want %d (10 or more)", c.scan, len(got), len(want))
			}
		}
		return nil
	})
}

// seedPassStore starts a store led by m with tasks that take every path
// of a pass that changes a task, and returns the services to look at.
// leaderStore starts m's store (in memory), waits until it leads and
// creates the cluster object, as a new leader does before its passes.
func leaderStore(ctx context.Context, t *testing.T, m *Manager) *raftstore.Store {
	t.Helper()
	st, err := m.startStore(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for !st.IsLeader() {
		if ctx.Err() != nil {
			t.Fatal("the store never led")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := m.ensureCluster(ctx, st); err != nil {
		t.Fatal(err)
	}
	return st
}

func seedPassStore(ctx context.Context, t *testing.T) (*Manager, *raftstore.Store, map[string]bool) {
	t.Helper()
	m := &Manager{ID: "m1"}
	st := leaderStore(ctx, t, m)

	now := time.Now().UTC()
	long := now.Add(-time.Hour)
	res := api.Resources{NanoCPUs: 4e9, MemoryBytes: 8 << 30}
	node := func(id string, state api.NodeState, avail api.NodeAvailability) *api.Node {
		return &api.Node{Meta: api.Meta{ID: id, CreatedAt: long}, Spec: api.NodeSpec{Availability: avail},
			Status:      api.NodeStatus{State: state},
			Description: api.NodeDescription{Hostname: id, Resources: res, DataAddr: "192.0.2.1"}}
	}
	svc := func(id string, mode api.ServiceMode) *api.Service {
		return &api.Service{Meta: api.Meta{ID: id, CreatedAt: long},
			Spec: api.ServiceSpec{Annotations: api.Annotations{Name: id}, Mode: mode, TaskTemplate: api.TaskSpec{Image: "img"}}}
	}
	task := func(id, service string, slot uint64, nodeID string, state api.TaskState) *api.Task {
		return &api.Task{Meta: api.Meta{ID: id, CreatedAt: long}, ServiceID: service, Slot: slot, NodeID: nodeID,
			Spec: api.TaskSpec{Image: "img"}, DesiredState: api.TaskRunning,
			Status: api.TaskStatus{State: state, Timestamp: long}}
	}

	rep := svc("rep", api.Replicated(3)) // orphan, drain, pending, scaled down, history
	ports := []api.PortConfig{{TargetPort: 80, PublishedPort: 8080, PublishMode: api.PublishIngress}}
	rep.Spec.EndpointSpec = &api.EndpointSpec{Ports: ports}
	rep.Endpoint = &api.Endpoint{Spec: *rep.Spec.EndpointSpec, Ports: ports}
	upd := svc("upd", api.Replicated(1)) // a rolling update stops the old task
	upd.UpdateStatus = &api.UpdateStatus{State: api.UpdateUpdating, StartedAt: long.Add(time.Minute)}
	sf := svc("sf", api.Replicated(1)) // a start-first replacement runs: the old task stops
	glob := svc("glob", api.Global())  // its task on the drained node stops
	job := svc("job", api.ServiceMode{ReplicatedJob: &api.ReplicatedJob{MaxConcurrent: 1, TotalCompletions: 1}})
	job.JobStatus = &api.JobStatus{JobIteration: 1} // the run-0 task stops
	con := svc("con", api.Replicated(2))            // the enforcer stops slot 1; slot 2 cannot be placed
	con.Spec.TaskTemplate.Placement = &api.Placement{Constraints: []string{"node.labels.zone==a"}}
	plain := svc("plain", api.Replicated(1)) // no network: placement is the only change

	byID := map[string]*api.Task{}
	var tasks []*api.Task
	add := func(ts ...*api.Task) {
		for _, tk := range ts {
			byID[tk.ID] = tk
			tasks = append(tasks, tk)
		}
	}
	add(task("orphan", "rep", 1, "down", api.TaskRunning),
		task("drained", "rep", 2, "drained", api.TaskRunning),
		task("pending", "rep", 3, "", api.TaskPending),
		task("scaled", "rep", 5, "n1", api.TaskRunning))
	for i := range DefaultTaskHistory + 2 {
		h := task("hist"+string(rune('a'+i)), "rep", 2, "n1", api.TaskFailed)
		h.DesiredState = api.TaskShutdown
		h.CreatedAt = long.Add(-time.Duration(i+1) * time.Minute)
		add(h)
	}
	old := task("updold", "upd", 1, "n1", api.TaskRunning)
	old.Spec.Image = "old"
	add(old)
	sfOld, sfNew := task("sfold", "sf", 1, "n1", api.TaskRunning), task("sfnew", "sf", 1, "n1", api.TaskRunning)
	sfNew.CreatedAt = long.Add(time.Minute)
	add(sfOld, sfNew,
		task("globdrained", "glob", 0, "drained", api.TaskRunning),
		task("jobold", "job", 1, "n1", api.TaskRunning),
		task("gonerunning", "gone", 1, "n1", api.TaskRunning),
		task("goneended", "gone", 2, "n1", api.TaskComplete),
		task("conbroken", "con", 1, "n1", api.TaskRunning),
		task("conpending", "con", 2, "", api.TaskPending),
		task("plainpending", "plain", 1, "", api.TaskPending))
	for _, id := range []string{"conbroken", "conpending"} {
		byID[id].Spec.Placement = con.Spec.TaskTemplate.Placement
	}
	err := st.Update(ctx, func(tx *raftstore.Tx) error {
		for _, n := range []*api.Node{node("n1", api.NodeReady, api.NodeActive), node("down", api.NodeDown, api.NodeActive),
			node("drained", api.NodeReady, api.NodeDrain)} {
			if err := tx.Create(TableNodes, n); err != nil {
				return err
			}
		}
		for _, s := range []*api.Service{rep, upd, sf, glob, job, con, plain} {
			if err := tx.Create(TableServices, s); err != nil {
				return err
			}
		}
		for _, tk := range tasks {
			if err := tx.Create(TableTasks, tk); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	all := map[string]bool{}
	for _, s := range []string{"rep", "upd", "sf", "glob", "job", "con", "plain", "gone"} {
		all[s] = true
	}
	return m, st, all
}

// TestStatusReportsHandedOverEqualTheirDecoding: the dispatcher hands the
// tasks a report changes over to the leader's store; a report made in
// this process (a clock reading with its monotonic part, an empty list
// of ports) must leave the same task there as the followers decode.
func TestStatusReportsHandedOverEqualTheirDecoding(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, st, all := seedPassStore(ctx, t)
	var book *allocator
	if _, err := m.reconcile(ctx, st, all, true, true, &book); err != nil {
		t.Fatal(err)
	}
	var tk *api.Task
	st.View(func(tx *raftstore.ReadTx) error {
		ts, err := list[*api.Task](tx.List(TableTasks))
		for _, c := range ts {
			if c.Status.State == api.TaskAssigned && c.NodeID != "" && tk == nil {
				tk = c
			}
		}
		return err
	})
	if tk == nil {
		t.Fatal("no assigned task to report on")
	}
	d := &dispatcher{store: st}
	d.serving.Store(true)
	report := api.TaskStatus{State: api.TaskAccepted, Timestamp: time.Now(), Ports: []api.PortConfig{}}
	if err := d.updateStatus(ctx, tk.NodeID, []agent.StatusUpdate{{TaskID: tk.ID, Status: report}}); err != nil {
		t.Fatal(err)
	}
	st.View(func(tx *raftstore.ReadTx) error {
		o, err := tx.Get(TableTasks, tk.ID)
		if err != nil || o.(*api.Task).Status.State != api.TaskAccepted {
			t.Fatalf("the report did not apply: %+v %v", o, err)
		}
		return nil
	})
	sameAsDecoded(t, st, 1)
}

// A pass serves the smallest services first (then by ID), so that the
// bound on its tasks leaves the biggest creation over.
func TestPassOrderSmallestFirst(t *testing.T) {
	svc := func(id string, mode api.ServiceMode) *api.Service {
		return &api.Service{Meta: api.Meta{ID: id}, Spec: api.ServiceSpec{Mode: mode}}
	}
	services := []*api.Service{
		svc("a", api.Replicated(100_000)), svc("b", api.Replicated(3)), svc("c", api.Global()),
		svc("d", api.Replicated(3)), svc("e", api.Replicated(10)),
	}
	passOrder(services, 5) // the global service has 5 tasks
	var got []string
	for _, s := range services {
		got = append(got, s.ID)
	}
	if want := []string{"b", "d", "c", "e", "a"}; !slices.Equal(got, want) {
		t.Fatalf("pass order %v, want %v", got, want)
	}
}
