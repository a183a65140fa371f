package swarm_test

import (
	"context"
	"testing"
	"time"

	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/swarmtest"
)

// A drain, a rolling update and a leader failover at once; then every
// worker and the whole manager cluster restarted from disk. The service
// converges through all of it, and the restarts adopt what runs.
func TestDrainUpdateFailoverAndRestarts(t *testing.T) {
	ctx := context.Background()
	c := swarmtest.New(t, swarmtest.Options{Managers: 3, Workers: 4, OnDisk: true, HeartbeatPeriod: 300 * time.Millisecond, Executor: testImages})
	svc := create(t, c, service("web", api.Replicated(8)))
	c.WaitFor("8 running", func() bool { return len(c.Running(svc.ID)) == 8 })

	update(t, c, "web", "example/web:2", &api.UpdateConfig{Parallelism: 2, Monitor: 100 * time.Millisecond})
	if err := c.Leader().SetNodeAvailability(ctx, "node0", api.NodeDrain); err != nil {
		t.Fatal(err)
	}
	old := c.Leader().ID
	c.StopManager(old)
	converged := func() bool {
		ts := c.Running(svc.ID)
		if len(ts) != 8 {
			return false
		}
		for _, tk := range ts {
			if tk.NodeID == "node0" || tk.Spec.Image != "example/web:2" {
				return false
			}
		}
		for _, tk := range c.Tasks(svc.ID) {
			if tk.NodeID == "node0" && !tk.Status.State.Terminal() {
				return false
			}
		}
		return true
	}
	c.WaitFor("the update finished under the new leader, off the drained node", func() bool {
		return updateState(c, "web") == api.UpdateCompleted && converged()
	})
	c.StartManager(old) // back from its data dir

	ids := func() map[string]bool {
		out := map[string]bool{}
		for _, tk := range c.Running(svc.ID) {
			out[tk.ID] = true
		}
		return out
	}
	before := ids()
	for _, w := range []string{"node1", "node2", "node3"} {
		c.RestartWorker(w)
	}
	for _, id := range c.ManagerIDs() {
		c.StopManager(id)
	}
	for _, id := range c.ManagerIDs() {
		c.StartManager(id)
	}
	c.Leader()
	settle(t, c)
	c.WaitFor("converged after the restarts", converged)
	after := ids()
	for id := range before {
		if !after[id] {
			t.Fatalf("task %s did not survive the restarts:\n%s", id, c.Dump())
		}
	}
	for _, w := range []string{"node1", "node2", "node3"} {
		for id := range before {
			if n := c.Exec(w).Starts(id); n > 1 {
				t.Fatalf("task %s started %d times on %s", id, n, w)
			}
		}
	}
	// The cluster still works: a failure is healed.
	var victim *api.Task
	for _, tk := range c.Running(svc.ID) {
		victim = tk
	}
	c.Exec(victim.NodeID).Exit(victim.ID, 1)
	c.WaitFor("a failure healed after the restarts", func() bool {
		for _, tk := range c.Running(svc.ID) {
			if tk.Slot == victim.Slot && tk.ID != victim.ID {
				return len(c.Running(svc.ID)) == 8
			}
		}
		return false
	})
}
