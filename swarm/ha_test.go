package swarm_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/waitfor"
	"github.com/shoalproject/shoal/raftstore"
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
		case ev = <-nodeWatch.Events():
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
