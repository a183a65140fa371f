package swarm_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/swarmtest"
)

// What a node sends is bounded and checked: it cannot write whatever it
// likes into the managers' store.
func TestDispatcherBoundsWhatNodesSend(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, 1)
	m := c.Leader()
	svc := create(t, c, service("web", api.Replicated(1)))
	c.WaitFor("running", func() bool { return len(c.Running(svc.ID)) == 1 })
	tk := c.Running(svc.ID)[0]
	report := func(st api.TaskStatus) error {
		return m.UpdateStatus(ctx, "node0", []agent.StatusUpdate{{TaskID: tk.ID, Status: st}})
	}
	for name, st := range map[string]api.TaskStatus{
		"made-up health": {State: api.TaskRunning, Health: "fine-ish"},
		"made-up state":  {State: api.TaskState(99)},
		"too many ports": {State: api.TaskRunning, Ports: make([]api.PortConfig, 300)},
		"long container": {State: api.TaskRunning, ContainerID: strings.Repeat("c", 300)},
	} {
		if err := report(st); !errors.Is(err, api.ErrInvalidSpec) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// A long message is cut, not refused.
	if err := report(api.TaskStatus{State: api.TaskFailed, Message: strings.Repeat("m", 100_000)}); err != nil {
		t.Fatal(err)
	}
	got, err := m.Task(tk.ID)
	if err != nil || got.Status.State != api.TaskFailed || len(got.Status.Message) > 5000 {
		t.Fatalf("task after a long message: %s, %d bytes of message, %v", got.Status.State, len(got.Status.Message), err)
	}
	if err := m.UpdateStatus(ctx, "node0", make([]agent.StatusUpdate, swarm.MaxStatusUpdates+1)); !errors.Is(err, api.ErrInvalidSpec) {
		t.Fatalf("too many updates in one call: %v", err)
	}
	// A description that cannot be right is refused at registration.
	for name, d := range map[string]api.NodeDescription{
		"negative memory": {Resources: api.Resources{MemoryBytes: -1}},
		"huge hostname":   {Hostname: strings.Repeat("h", 300)},
		"many labels": {Engine: api.Engine{Labels: func() map[string]string {
			l := map[string]string{}
			for i := range 300 {
				l[fmt.Sprint("k", i)] = "v"
			}
			return l
		}()}},
		"unnamed generic": {Resources: api.Resources{Generic: []api.GenericResource{{Value: 1}}}},
	} {
		if _, err := m.Register(ctx, "nodeX", d); !errors.Is(err, api.ErrInvalidSpec) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := m.Heartbeat(ctx, "never-registered"); !errors.Is(err, swarm.ErrNotFound) {
		t.Fatalf("heartbeat of an unknown node: %v", err)
	}
}

// poisoned refuses, as a bad request, any batch of reports that holds one
// about the poisoned task.
type poisoned struct {
	swarm.Dispatcher
	mu      sync.Mutex
	task    string
	refused int
}

func (p *poisoned) UpdateStatus(ctx context.Context, nodeID string, updates []agent.StatusUpdate) error {
	p.mu.Lock()
	for _, u := range updates {
		if u.TaskID == p.task {
			p.refused++
			p.mu.Unlock()
			return fmt.Errorf("%w: a report the managers will never take (injected)", api.ErrInvalidSpec)
		}
	}
	p.mu.Unlock()
	return p.Dispatcher.UpdateStatus(ctx, nodeID, updates)
}

// One report the managers refuse does not hold up the others: the worker
// sends smaller batches until it is alone, then drops it.
func TestRefusedReportDoesNotBlockOthers(t *testing.T) {
	var p *poisoned
	c := swarmtest.New(t, swarmtest.Options{Workers: 1, Dispatcher: func(_ string, d swarm.Dispatcher) swarm.Dispatcher {
		p = &poisoned{Dispatcher: d}
		return p
	}})
	svc := create(t, c, service("web", api.Replicated(2)))
	c.WaitFor("2 running", func() bool { return len(c.Running(svc.ID)) == 2 })
	ts := c.Running(svc.ID)
	bad, good := ts[0], ts[1]
	p.mu.Lock()
	p.task = bad.ID
	p.mu.Unlock()
	// Both change at once, so their reports travel together.
	c.Exec("node0").Exit(bad.ID, 1)
	c.Exec("node0").Exit(good.ID, 1)
	c.WaitFor("the good report got through and its task was replaced", func() bool {
		for _, tk := range c.Running(svc.ID) {
			if tk.Slot == good.Slot && tk.ID != good.ID {
				return true
			}
		}
		return false
	})
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.refused == 0 {
		t.Fatal("the poisoned report was never sent")
	}
}

// The heartbeat period comes from the managers: the cluster's setting, or
// the manager's, and longer with many nodes.
func TestHeartbeatPeriodIsTheClusters(t *testing.T) {
	ctx := context.Background()
	c := swarmtest.New(t, swarmtest.Options{Workers: 1, Manager: func(m *swarm.Manager) { m.HeartbeatsPerSecond = 10 }})
	m := c.Leader()
	if p, err := m.Heartbeat(ctx, "node0"); err != nil || p != swarmtest.DefaultHeartbeatPeriod {
		t.Fatalf("period %v, %v; want the manager's %v", p, err, swarmtest.DefaultHeartbeatPeriod)
	}
	cur, _ := m.Cluster()
	cs := cur.Spec
	cs.Dispatcher.HeartbeatPeriod = 700 * time.Millisecond
	if _, err := m.UpdateCluster(ctx, cur.Version, cs); err != nil {
		t.Fatal(err)
	}
	if p, _ := m.Heartbeat(ctx, "node0"); p != 700*time.Millisecond {
		t.Fatalf("period %v after the cluster set 700ms", p)
	}
	// 20 nodes at 10 heartbeats a second: every 2 s.
	for i := range 19 {
		if _, err := m.Register(ctx, fmt.Sprint("extra", i), api.NodeDescription{}); err != nil {
			t.Fatal(err)
		}
	}
	if p, _ := m.Heartbeat(ctx, "node0"); p != 2*time.Second {
		t.Fatalf("period %v with 20 nodes at 10 a second, want 2s", p)
	}
}

// registrations counts the registrations the managers refused.
type registrations struct {
	swarm.Dispatcher
	mu      sync.Mutex
	refused int
	lastErr error
}

func (r *registrations) Register(ctx context.Context, nodeID string, desc api.NodeDescription) (swarm.Session, error) {
	s, err := r.Dispatcher.Register(ctx, nodeID, desc)
	if err != nil {
		r.mu.Lock()
		r.refused++
		r.lastErr = err
		r.mu.Unlock()
	}
	return s, err
}

// A live node removed by force stays removed: its session ends, and the
// registration it tries next is refused, so it never comes back as a node
// object (the fault: it re-registered and reappeared in node ls).
func TestRemovedNodeCannotRegisterAgain(t *testing.T) {
	ctx := context.Background()
	var r *registrations
	c := swarmtest.New(t, swarmtest.Options{Workers: 1, Dispatcher: func(_ string, d swarm.Dispatcher) swarm.Dispatcher {
		r = &registrations{Dispatcher: d}
		return r
	}})
	m := c.Leader()
	c.WaitFor("node0 ready", func() bool {
		n, err := m.Node("node0")
		return err == nil && n.Status.State == api.NodeReady
	})
	if err := m.RemoveNode(ctx, "node0", false); err == nil {
		t.Fatal("a ready node was removed without force")
	}
	if err := m.RemoveNode(ctx, "node0", true); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Register(ctx, "node0", swarmtest.DefaultDescription("node0")); err == nil || !strings.Contains(err.Error(), "removed") {
		t.Fatalf("a removed node registered again: %v", err)
	}
	// The live worker's own attempt is refused too.
	c.WaitFor("the worker's registration refused", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.refused > 0
	})
	if _, err := m.Node("node0"); !errors.Is(err, swarm.ErrNotFound) {
		t.Fatalf("the removed node is back: %v", err)
	}
}

// A node that registers again with nothing new (every node does after a
// leader change) costs no Raft write; a new description, or a node marked
// down, still does.
func TestRegisterAgainWritesOnlyChanges(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, 0)
	m := c.Leader()
	desc := swarmtest.DefaultDescription("n1")
	if _, err := m.Register(ctx, "n1", desc); err != nil {
		t.Fatal(err)
	}
	version := func() uint64 {
		n, err := m.Node("n1")
		if err != nil {
			t.Fatal(err)
		}
		return n.Version
	}
	v1 := version()
	if _, err := m.Register(ctx, "n1", desc); err != nil {
		t.Fatal(err)
	}
	if v := version(); v != v1 {
		t.Fatalf("registering again unchanged wrote the node (version %d -> %d)", v1, v)
	}
	desc.Hostname = "renamed"
	if _, err := m.Register(ctx, "n1", desc); err != nil {
		t.Fatal(err)
	}
	n, err := m.Node("n1")
	if err != nil || n.Version == v1 || n.Description.Hostname != "renamed" {
		t.Fatalf("a new description: version %d (was %d), hostname %q, %v", n.Version, v1, n.Description.Hostname, err)
	}
}

// A pass places the tasks it creates: they are committed ASSIGNED to a
// node, not PENDING for a later pass to place (and write again).
func TestNewTasksAreCreatedPlaced(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, 2)
	m := c.Leader()
	st := m.Store()
	w, err := st.Watch(ctx, st.AppliedIndex(), func(e raftstore.Event) bool { return e.Table == swarm.TableTasks })
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	create(t, c, service("web", api.Replicated(4)))
	created := 0
	for created < 4 {
		ev, ok := <-w.Events()
		if !ok {
			t.Fatalf("watch ended: %v", w.Err())
		}
		if ev.Old != nil {
			continue // a later change
		}
		tk := ev.Object.(*api.Task)
		if tk.Status.State != api.TaskAssigned || tk.NodeID == "" {
			t.Fatalf("task %s created %s on node %q, not placed", tk.ID, tk.Status.State, tk.NodeID)
		}
		created++
	}
}
