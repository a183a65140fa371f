package swarm

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm/api"
)

// stepStore starts a leader's store with nodes of cpus NanoCPUs each and
// a replicated service; the manager commits perStep created tasks a step.
func stepStore(ctx context.Context, t *testing.T, perStep, nodes int, cpus int64, replicas uint64, reserve int64) (*Manager, *raftstore.Store, *api.Service) {
	t.Helper()
	m := &Manager{ID: "m1", passStepSize: perStep}
	st := leaderStore(ctx, t, m)
	now := time.Now().UTC()
	svc := &api.Service{Meta: api.Meta{ID: "svc", CreatedAt: now},
		Spec: api.ServiceSpec{Annotations: api.Annotations{Name: "web"}, Mode: api.Replicated(replicas),
			TaskTemplate: api.TaskSpec{Image: "img", Resources: &api.ResourceRequirements{Reservations: &api.Resources{NanoCPUs: reserve}}}}}
	err := st.Update(ctx, func(tx *raftstore.Tx) error {
		for i := range nodes {
			n := &api.Node{Meta: api.Meta{ID: fmt.Sprintf("node%d", i), CreatedAt: now}, Status: api.NodeStatus{State: api.NodeReady},
				Description: api.NodeDescription{Hostname: fmt.Sprintf("node%d", i), Resources: api.Resources{NanoCPUs: cpus, MemoryBytes: 64 << 30}}}
			if err := tx.Create(TableNodes, n); err != nil {
				return err
			}
		}
		return tx.Create(TableServices, svc)
	})
	if err != nil {
		t.Fatal(err)
	}
	return m, st, svc
}

func storeTasks(t *testing.T, st *raftstore.Store) []*api.Task {
	t.Helper()
	var ts []*api.Task
	if err := st.View(func(tx *raftstore.ReadTx) (err error) {
		ts, err = list[*api.Task](tx.List(TableTasks))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return ts
}

// changeAt makes the manager's passes run change in a transaction of its
// own before their step-th step, as another writer would between two
// steps.
func changeAt(ctx context.Context, t *testing.T, m *Manager, st *raftstore.Store, step int, change func(tx *raftstore.Tx) error) {
	m.stepHook = func(i int) {
		if i != step {
			return
		}
		if err := st.Update(ctx, change); err != nil {
			t.Errorf("a change between steps: %v", err)
		}
	}
}

// passesUntilDone runs passes for the service as the leader loop would
// after res (a stopped pass drops the address book), until none asks for
// another look; at most 5. A change set with changeAt was the first
// pass's only.
func passesUntilDone(ctx context.Context, t *testing.T, m *Manager, st *raftstore.Store, res passResult, book **allocator, svcID string) {
	t.Helper()
	m.stepHook = nil
	dirty := map[string]bool{svcID: true}
	for pass := 0; len(dirty) > 0; pass++ {
		if pass == 5 {
			t.Fatal("no convergence in 5 passes")
		}
		if res.stopped {
			*book = nil
		}
		var err error
		if res, err = m.reconcile(ctx, st, dirty, false, false, book); err != nil {
			t.Fatal(err)
		}
		dirty = map[string]bool{}
		for _, id := range res.again {
			dirty[id] = true
		}
	}
}

// One pass creates and places a service of 35 replicas, 10 a step: every
// task is written and assigned after that one pass, each step in its own
// log entries (no entry creates more than a step's tasks), and nothing is
// left for another pass.
func TestPassCommitsABigServiceInSteps(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, st, svc := stepStore(ctx, t, 10, 3, 16e9, 35, 1e8)
	w, err := st.Watch(ctx, st.AppliedIndex(), func(e raftstore.Event) bool { return e.Table == TableTasks && e.Kind == raftstore.Created })
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	var book *allocator
	res, err := m.reconcile(ctx, st, map[string]bool{svc.ID: true}, false, false, &book)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.again) != 0 || res.stopped {
		t.Fatalf("one pass left work: again %v, stopped %v", res.again, res.stopped)
	}
	ts := storeTasks(t, st)
	perNode := map[string]int{}
	for _, tk := range ts {
		if tk.Status.State != api.TaskAssigned || tk.NodeID == "" {
			t.Fatalf("task %s (slot %d) is %s on %q after the pass", tk.ID, tk.Slot, tk.Status.State, tk.NodeID)
		}
		perNode[tk.NodeID]++
	}
	if len(ts) != 35 {
		t.Fatalf("%d tasks after one pass, want 35", len(ts))
	}
	for n, k := range perNode {
		if k < 11 || k > 12 {
			t.Fatalf("node %s has %d of 35 tasks over 3 nodes: the steps did not spread on what the steps before placed (%v)", n, k, perNode)
		}
	}
	perIndex := map[uint64]int{}
	for range 35 {
		select {
		case ev := <-w.Events():
			perIndex[ev.Index]++
		case <-ctx.Done():
			t.Fatalf("saw %d creations", len(perIndex))
		}
	}
	for idx, n := range perIndex {
		if n > 10 {
			t.Fatalf("the entry at %d created %d tasks; a step creates 10", idx, n)
		}
	}
	if len(perIndex) < 4 {
		t.Fatalf("35 tasks in %d entries: the steps were not cut", len(perIndex))
	}
}

// A service scaled down between two steps of a pass: the pass stops
// before its next step and asks for another look, and the passes after it
// converge on the new count with no slot given two tasks.
func TestPassStopsWhenTheServiceChangesBetweenSteps(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, st, svc := stepStore(ctx, t, 10, 3, 16e9, 35, 1e8)
	changeAt(ctx, t, m, st, 2, func(tx *raftstore.Tx) error {
		o, err := tx.Get(TableServices, svc.ID)
		if err != nil {
			return err
		}
		c := *o.(*api.Service)
		c.Spec.Mode = api.Replicated(12)
		return tx.Update(TableServices, &c)
	})
	var book *allocator
	res, err := m.reconcile(ctx, st, map[string]bool{svc.ID: true}, false, false, &book)
	m.stepHook = nil
	if err != nil {
		t.Fatal(err)
	}
	if n := len(storeTasks(t, st)); !res.stopped || len(res.again) != 1 || res.again[0] != svc.ID || n != 20 {
		t.Fatalf("after a scale between steps 1 and 2: stopped %v, again %v, %d tasks written (want the 20 of the first two steps)", res.stopped, res.again, n)
	}
	passesUntilDone(ctx, t, m, st, res, &book, svc.ID)
	live := map[uint64]int{}
	made := map[uint64]int{}
	for _, tk := range storeTasks(t, st) {
		made[tk.Slot]++
		if tk.DesiredState <= api.TaskRunning {
			live[tk.Slot]++
		}
	}
	for slot := uint64(1); slot <= 20; slot++ {
		if made[slot] != 1 {
			t.Fatalf("slot %d has %d tasks", slot, made[slot])
		}
		if want := 1; slot > 12 {
			if live[slot] != 0 {
				t.Fatalf("slot %d, scaled away, still has a live task", slot)
			}
		} else if live[slot] != want {
			t.Fatalf("slot %d has %d live tasks", slot, live[slot])
		}
	}
	if len(made) != 20 {
		t.Fatalf("tasks in %d slots, want the 20 made before the scale", len(made))
	}
}

// A node changed between two steps of a pass in a way placement reads
// (drained, down, removed, re-registered with less memory): the pass
// stops before its next step (it would place on the node as it was), and
// the passes after it place the rest on the other nodes; no task placed
// after the change goes to that node. A change placement does not read
// (the node's network attachments, which passes write themselves) does
// not stop it.
func TestPassStopsWhenANodeChangesBetweenSteps(t *testing.T) {
	for _, c := range []struct {
		name   string
		change func(tx *raftstore.Tx, n *api.Node) error
		stops  bool
	}{
		{"drained", func(tx *raftstore.Tx, n *api.Node) error {
			n.Spec.Availability = api.NodeDrain
			return tx.Update(TableNodes, n)
		}, true},
		{"down", func(tx *raftstore.Tx, n *api.Node) error {
			n.Status.State = api.NodeDown
			return tx.Update(TableNodes, n)
		}, true},
		{"removed", func(tx *raftstore.Tx, n *api.Node) error { return tx.Delete(TableNodes, n.ID) }, true},
		{"no tasks any more", func(tx *raftstore.Tx, n *api.Node) error {
			n.Description.NoTasks = true
			return tx.Update(TableNodes, n)
		}, true},
		{"addresses only", func(tx *raftstore.Tx, n *api.Node) error {
			n.Attachments = []api.NetworkAttachment{{NetworkID: "ingress", Addresses: []string{"10.255.0.9/16"}}}
			return tx.Update(TableNodes, n)
		}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			m, st, svc := stepStore(ctx, t, 10, 3, 16e9, 60, 1e8)
			changeAt(ctx, t, m, st, 1, func(tx *raftstore.Tx) error {
				o, err := tx.Get(TableNodes, "node0")
				if err != nil {
					return err
				}
				n := *o.(*api.Node)
				return c.change(tx, &n)
			})
			var book *allocator
			res, err := m.reconcile(ctx, st, map[string]bool{svc.ID: true}, false, false, &book)
			m.stepHook = nil
			if err != nil {
				t.Fatal(err)
			}
			if !c.stops {
				if res.stopped || len(storeTasks(t, st)) != 60 {
					t.Fatalf("a change placement does not read stopped the pass: stopped %v, %d tasks", res.stopped, len(storeTasks(t, st)))
				}
				return
			}
			if !res.stopped || len(res.again) != 1 || len(storeTasks(t, st)) != 10 {
				t.Fatalf("after the change between steps 0 and 1: stopped %v, again %v, %d tasks (want the 10 of step 0)", res.stopped, res.again, len(storeTasks(t, st)))
			}
			passesUntilDone(ctx, t, m, st, res, &book, svc.ID)
			// Every slot has its task (those step 0 put on a node that
			// went down or away are replaced in time, as any such task).
			slots, onChanged := map[uint64]bool{}, 0
			for _, tk := range storeTasks(t, st) {
				slots[tk.Slot] = true
				if tk.NodeID == "node0" {
					onChanged++
				}
			}
			if len(slots) != 60 {
				t.Fatalf("tasks in %d slots, want 60", len(slots))
			}
			// Step 0 (10 tasks over 3 nodes) was placed before the
			// change: its share of node0 stays; nothing after it goes
			// there.
			if onChanged > 4 {
				t.Fatalf("%d tasks on node0, changed after step 0 placed at most 4 there", onChanged)
			}
		})
	}
}

// One pass creates at most MaxTasksPerPass tasks, in steps: a service
// missing more goes on in the next pass, which completes it.
func TestPassCreatesAtMostMaxTasksPerPass(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, st, svc := stepStore(ctx, t, 10, 3, 16e9, 35, 1e8)
	m.MaxTasksPerPass = 25
	var book *allocator
	res, err := m.reconcile(ctx, st, map[string]bool{svc.ID: true}, false, false, &book)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(storeTasks(t, st)); n != 25 || res.stopped || len(res.again) != 1 || res.again[0] != svc.ID {
		t.Fatalf("first pass: %d tasks, stopped %v, again %v; want 25, not stopped, the service again", n, res.stopped, res.again)
	}
	if res, err = m.reconcile(ctx, st, map[string]bool{svc.ID: true}, false, false, &book); err != nil {
		t.Fatal(err)
	}
	if n := len(storeTasks(t, st)); n != 35 || len(res.again) != 0 {
		t.Fatalf("second pass: %d tasks, again %v; want 35 and nothing left", n, res.again)
	}
}

// Steps place on what the steps before them took: nodes with room for 6
// tasks each get 6, never more, though each step alone would fit.
func TestPassStepsCountWhatEarlierStepsPlaced(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, st, svc := stepStore(ctx, t, 10, 2, 6e8, 20, 1e8)
	var book *allocator
	if _, err := m.reconcile(ctx, st, map[string]bool{svc.ID: true}, false, false, &book); err != nil {
		t.Fatal(err)
	}
	perNode := map[string]int{}
	pending := 0
	for _, tk := range storeTasks(t, st) {
		switch tk.Status.State {
		case api.TaskAssigned:
			perNode[tk.NodeID]++
		case api.TaskPending:
			pending++
			if tk.Status.Err == "" {
				t.Errorf("pending task %d has no reason", tk.Slot)
			}
		}
	}
	if perNode["node0"] != 6 || perNode["node1"] != 6 || pending != 8 {
		t.Fatalf("assigned per node %v, %d pending; want 6 and 6 (room for 6 each), 8 pending", perNode, pending)
	}
}

// A pass that creates more tasks than supplyMin takes them from a supply
// made ahead: every task is its own object with its own ID and its slot's
// fields, and the pass still writes them all.
func TestPassWithATaskSupplyMakesDistinctTasks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const n = supplyMin + supplyChunk + 7
	m, st, svc := stepStore(ctx, t, 1000, 3, 1e12, n, 1e8)
	var book *allocator
	if _, err := m.reconcile(ctx, st, map[string]bool{svc.ID: true}, false, false, &book); err != nil {
		t.Fatal(err)
	}
	ts := storeTasks(t, st)
	ids, slots := map[string]bool{}, map[uint64]bool{}
	for _, tk := range ts {
		if tk.ID == "" || ids[tk.ID] || slots[tk.Slot] || tk.ServiceID != svc.ID || tk.Status.State != api.TaskAssigned {
			t.Fatalf("task %q slot %d of %q (%s): a repeated or empty ID or slot", tk.ID, tk.Slot, tk.ServiceID, tk.Status.State)
		}
		ids[tk.ID], slots[tk.Slot] = true, true
	}
	if len(ts) != n {
		t.Fatalf("%d tasks, want %d", len(ts), n)
	}
}

// A supply hands out n distinct zeroed tasks with IDs, then nil; stopping
// it early ends its goroutine.
func TestTaskSupply(t *testing.T) {
	k := 0
	s := supplyTasks(150, func() string { k++; return fmt.Sprint("id", k) })
	seen := map[*api.Task]bool{}
	for i := range 150 {
		tk := s.take()
		if tk == nil || seen[tk] || tk.ID == "" || tk.ServiceID != "" || tk.Slot != 0 {
			t.Fatalf("task %d: %+v (seen %v)", i, tk, seen[tk])
		}
		seen[tk] = true
	}
	if tk := s.take(); tk != nil {
		t.Fatalf("a 151st task from a supply of 150: %+v", tk)
	}
	s.stop()
	early := supplyTasks(1<<20, newID)
	early.take()
	early.stop() // returns: the goroutine ended
}
