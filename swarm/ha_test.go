package swarm_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/waitfor"
	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/swarmtest"
)

// Three managers, three workers: the leader dies and the cluster goes on
// under a new one, with the same tasks, healing failures again.
func TestManagerFailover(t *testing.T) {
	ctx := context.Background()
	c := swarmtest.New(t, swarmtest.Options{Managers: 3, Workers: 3, Executor: testImages})
	old := c.Leader()
	// Writes go to the leader; a follower says so.
	for _, id := range c.ManagerIDs() {
		if id != old.ID {
			if _, err := c.Manager(id).CreateService(ctx, service("nope", api.Replicated(1))); !errors.Is(err, raftstore.ErrNotLeader) {
				t.Fatalf("write on a follower: %v", err)
			}
			break
		}
	}
	svc := create(t, c, service("web", api.Replicated(3)))
	c.WaitFor("3 running", func() bool { return len(c.Running(svc.ID)) == 3 })
	before := map[string]bool{}
	for _, tk := range c.Running(svc.ID) {
		before[tk.ID] = true
	}
	// Follow every node change from a survivor, across the failover.
	var survivor string
	for _, id := range c.ManagerIDs() {
		if id != old.ID {
			survivor = id
		}
	}
	st := c.Manager(survivor).Store()
	nodeWatch, err := st.Watch(ctx, st.AppliedIndex(), func(e raftstore.Event) bool { return e.Table == "nodes" })
	if err != nil {
		t.Fatal(err)
	}
	defer nodeWatch.Stop()

	c.StopManager(old.ID)
	took := c.WaitFor("a new leader", func() bool { return c.Leader() != nil })
	m := c.Leader()
	t.Logf("new leader %s after %v", m.ID, took)
	// The new leader heals failures and takes new services.
	var victim *api.Task
	for _, tk := range c.Running(svc.ID) {
		victim = tk
	}
	c.Exec(victim.NodeID).Exit(victim.ID, 1)
	c.WaitFor("replacement under the new leader", func() bool {
		for _, tk := range c.Running(svc.ID) {
			if tk.Slot == victim.Slot && tk.ID != victim.ID {
				return true
			}
		}
		return false
	})
	svc2 := create(t, c, service("api", api.Replicated(2)))
	c.WaitFor("new service running", func() bool { return len(c.Running(svc2.ID)) == 2 })
	// The other two tasks ran on, started once.
	running := map[string]bool{}
	for _, tk := range c.Running(svc.ID) {
		running[tk.ID] = true
	}
	for id := range before {
		if id != victim.ID && !running[id] {
			t.Fatalf("task %s stopped by the failover:\n%s", id, c.Dump())
		}
	}
	for _, w := range []string{"node0", "node1", "node2"} {
		for id := range before {
			if n := c.Exec(w).Starts(id); n > 1 {
				t.Fatalf("task %s started %d times", id, n)
			}
		}
	}
	// No node was declared down by the failover: the new leader gave every
	// node a full grace. Control: a worker stopped now is declared down,
	// and only it, in the same stream of node changes.
	c.StopWorker("node2")
	deadline := time.After(waitfor.DefaultTimeout)
	for {
		var ev raftstore.Event
		select {
		case e, ok := <-nodeWatch.Events():
			if !ok {
				t.Fatalf("the watch of node changes ended: %v", nodeWatch.Err())
			}
			ev = e
		case <-deadline:
			t.Fatal("the stopped worker was never declared down")
		}
		n, ok := ev.Object.(*api.Node)
		if !ok || n.Status.State == api.NodeReady {
			continue
		}
		if n.ID != "node2" {
			t.Fatalf("node %s went %s during the failover: %s", n.ID, n.Status.State, n.Status.Message)
		}
		break
	}
}

// A new leader acts only once it has applied all that the old one
// committed: the old leader created a service's tasks and died at once;
// the new one must not create them again (each slot once).
func TestNewLeaderDoesNotActOnAStaleView(t *testing.T) {
	ctx := context.Background()
	c := swarmtest.New(t, swarmtest.Options{Managers: 3})
	old := c.Leader()
	st := old.Store()
	w, err := st.Watch(ctx, st.AppliedIndex(), func(e raftstore.Event) bool {
		return e.Table == swarm.TableTasks && e.Kind == raftstore.Created
	})
	if err != nil {
		t.Fatal(err)
	}
	svc := create(t, c, service("web", api.Replicated(5)))
	select {
	case <-w.Events():
	case <-time.After(waitfor.DefaultTimeout):
		t.Fatal("the leader made no tasks")
	}
	// The tasks are committed on the old leader: it dies now, before the
	// others have applied them.
	c.Net.Isolate(old.ID)
	c.StopManager(old.ID)
	c.Heal()
	c.Leader()
	settle(t, c)
	slots := map[uint64]int{}
	for _, tk := range c.Tasks(svc.ID) {
		slots[tk.Slot]++
	}
	if len(slots) != 5 {
		t.Fatalf("slots %v, want 1..5", slots)
	}
	for slot, n := range slots {
		if n != 1 {
			t.Fatalf("slot %d has %d tasks after the failover:\n%s", slot, n, c.Dump())
		}
	}
	cl, err := c.Leader().Services()
	if err != nil || len(cl) != 1 {
		t.Fatalf("services: %d, %v", len(cl), err)
	}
	if n := clusters(t, c); n != 1 {
		t.Fatalf("%d cluster objects", n)
	}
}

func clusters(t *testing.T, c *swarmtest.Cluster) int {
	t.Helper()
	n := 0
	c.Leader().Store().View(func(tx *raftstore.ReadTx) (err error) {
		n, err = tx.Count(swarm.TableClusters)
		return err
	})
	return n
}

// The leader cut off from the other managers: they elect a new one, the
// old one steps down and stops serving its workers, who follow the new
// leader; after the heal no slot runs twice and the tasks ran on.
func TestLeaderPartitionedFromTheManagers(t *testing.T) {
	c := swarmtest.New(t, swarmtest.Options{Managers: 3, Workers: 3, Executor: testImages})
	svc := create(t, c, service("web", api.Replicated(3)))
	c.WaitFor("3 running", func() bool { return len(c.Running(svc.ID)) == 3 })
	before := map[string]bool{}
	for _, tk := range c.Running(svc.ID) {
		before[tk.ID] = true
	}
	old := c.Leader()
	c.Net.Isolate(old.ID)
	c.WaitFor("the old leader steps down", func() bool { return !old.IsLeader() })
	m := c.Leader()
	if m.ID == old.ID {
		t.Fatal("the isolated manager leads")
	}
	// The workers follow the majority's leader: a new service runs.
	svc2 := create(t, c, service("after", api.Replicated(3)))
	c.WaitFor("a service created during the partition runs", func() bool { return len(c.Running(svc2.ID)) == 3 })
	if _, err := old.CreateService(context.Background(), service("minority", api.Replicated(1))); err == nil {
		t.Fatal("the isolated manager took a write")
	}
	c.Heal()
	settle(t, c)
	bySlot := map[uint64]int{}
	for _, tk := range c.Running(svc.ID) {
		bySlot[tk.Slot]++
		if !before[tk.ID] {
			t.Fatalf("task %s is new: the partition replaced a running task", tk.ID)
		}
	}
	for slot, n := range bySlot {
		if n != 1 {
			t.Fatalf("slot %d runs %d tasks after the heal", slot, n)
		}
	}
	if len(bySlot) != 3 {
		t.Fatalf("slots running: %v", bySlot)
	}
}

// The node of a leader that dies gets no new grace from the next leader:
// nothing heartbeats for it while it is silent, and the new leader knows
// from Raft when it last heard from it. Its silence counts from then, not
// from the new leadership (which, at every election, would put off its
// tasks' move by the time the election took).
func TestDeadLeadersNodeGetsNoNewGrace(t *testing.T) {
	ctx := context.Background()
	// Managers are nodes with a worker of their own (swarm.Node), over TLS.
	c := swarmtest.NewTLS(t, swarmtest.TLSOptions{Managers: 3, HeartbeatPeriod: time.Second})
	// Joined managers vote once they have caught up: then the two left
	// after the kill are a quorum.
	c.WaitFor("3 voters", func() bool {
		srvs, err := c.Node(c.LeaderName()).Manager().Store().Servers(ctx)
		voters := 0
		for _, s := range srvs {
			if s.Voter {
				voters++
			}
		}
		return err == nil && voters == 3
	})
	leader := c.LeaderName()
	dead := c.NodeID(leader)
	var survivor *swarm.Manager
	for _, name := range []string{"m0", "m1", "m2"} {
		if name != leader {
			survivor = c.Node(name).Manager()
		}
	}
	st := survivor.Store()
	watch, err := st.Watch(ctx, st.AppliedIndex(), func(e raftstore.Event) bool { return e.Table == "nodes" })
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Stop()
	c.Kill(leader)
	stopped := time.Now()
	deadline := time.After(waitfor.DefaultTimeout)
	for {
		var ev raftstore.Event
		select {
		case e, ok := <-watch.Events():
			if !ok {
				t.Fatalf("the watch of node changes ended: %v", watch.Err())
			}
			ev = e
		case <-deadline:
			t.Fatal("the dead leader's node was never declared down")
		}
		n, ok := ev.Object.(*api.Node)
		if !ok || n.ID != dead || n.Status.State != api.NodeDown {
			continue
		}
		// "no heartbeat for D": the new leader counted its silence from
		// UpdatedAt-D, which must be a moment the old leader still ran.
		silent, err := time.ParseDuration(strings.TrimPrefix(n.Status.Message, "no heartbeat for "))
		if err != nil {
			t.Fatalf("down with message %q: %v", n.Status.Message, err)
		}
		// A heartbeat in flight at the kill may land just after it (27 ms
		// was seen under the race detector); a new grace would start at
		// the new leader's election, a heartbeat timeout (300 ms in this
		// cluster) or more after the kill.
		if from := n.UpdatedAt.Add(-silent); from.After(stopped.Add(150 * time.Millisecond)) {
			t.Fatalf("the new leader counted the dead leader's silence from %v after it was killed: a new grace", from.Sub(stopped))
		}
		return
	}
}
