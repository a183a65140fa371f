package swarm_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/swarmtest"
)

func TestReplicatedServiceRunsHealsAndScales(t *testing.T) {
	c := newCluster(t, 3)
	ctx := context.Background()
	m := c.Leader()
	svc := create(t, c, service("web", api.Replicated(3)))
	c.WaitFor("3 running tasks", func() bool { return len(c.Running(svc.ID)) == 3 })
	nodes := map[string]bool{}
	slots := map[uint64]bool{}
	for _, tk := range c.Running(svc.ID) {
		nodes[tk.NodeID], slots[tk.Slot] = true, true
	}
	if len(nodes) != 3 || len(slots) != 3 {
		t.Fatalf("spread: nodes %v slots %v", nodes, slots)
	}
	// A task that fails is replaced in its slot.
	victim := c.Running(svc.ID)[0]
	c.Exec(victim.NodeID).Exit(victim.ID, 1)
	c.WaitFor("replacement", func() bool {
		for _, tk := range c.Running(svc.ID) {
			if tk.Slot == victim.Slot && tk.ID != victim.ID {
				return true
			}
		}
		return false
	})
	for _, tk := range c.Tasks(svc.ID) {
		if tk.ID == victim.ID && (tk.Status.State != api.TaskFailed || tk.DesiredState != api.TaskShutdown) {
			t.Fatalf("failed task kept as %s/%s", tk.Status.State, tk.DesiredState)
		}
	}
	// Duplicate names are refused with a clear error.
	if _, err := m.CreateService(ctx, service("web", api.Replicated(1))); !errors.Is(err, swarm.ErrNameInUse) || !strings.Contains(err.Error(), svc.ID) {
		t.Fatalf("duplicate name: %v", err)
	}
	// Scale up, then down.
	svc, _ = m.Service("web")
	spec := svc.Spec
	spec.Mode = api.Replicated(5)
	svc, err := m.UpdateService(ctx, svc.ID, svc.Version, spec)
	if err != nil {
		t.Fatal(err)
	}
	c.WaitFor("5 running", func() bool { return len(c.Running(svc.ID)) == 5 })
	spec.Mode = api.Replicated(2)
	if _, err = m.UpdateService(ctx, svc.ID, svc.Version, spec); err != nil {
		t.Fatal(err)
	}
	c.WaitFor("2 running, surplus shut down", func() bool {
		live := 0
		for _, tk := range c.Tasks(svc.ID) {
			if tk.Status.State <= api.TaskRunning {
				live++
			}
			if tk.Slot > 2 && tk.Status.State == api.TaskRunning {
				return false
			}
		}
		return live == 2
	})
	// A stale version is a conflict, not a lost update.
	if _, err := m.UpdateService(ctx, svc.ID, svc.Version-1, spec); err == nil {
		t.Fatal("update from a stale version accepted")
	}
}

func TestLostNodeTasksAreReplacedElsewhere(t *testing.T) {
	c := newCluster(t, 3)
	svc := create(t, c, service("api", api.Replicated(3)))
	c.WaitFor("3 running", func() bool { return len(c.Running(svc.ID)) == 3 })
	c.StopWorker("node2") // the node goes silent
	took := c.WaitFor("replaced off node2", func() bool {
		ts := c.Running(svc.ID)
		for _, tk := range ts {
			if tk.NodeID == "node2" {
				return false
			}
		}
		return len(ts) == 3
	})
	t.Logf("tasks of a silent node replaced in %v", took)
	n, err := c.Leader().Node("node2")
	if err != nil || n.Status.State != api.NodeDown {
		t.Fatalf("silent node: %+v %v", n, err)
	}
}

// A leader busy with one bounded pass after another (a service far bigger
// than MaxTasksPerPass) still marks a silent node down on time: the loop
// goes from pass to pass without waiting, and must keep the node clock
// running (the node's tasks are replaced only once it is down). And the
// small services' tasks on that node are replaced during the run, not
// after it: the bound on a pass leaves the big creation over, not them.
func TestSilentNodeMarkedDownBetweenBackToBackPasses(t *testing.T) {
	const replicas = 20_000
	c := swarmtest.New(t, swarmtest.Options{Workers: 3, Executor: testImages,
		Manager: func(m *swarm.Manager) { m.MaxTasksPerPass = 1 }})
	// Three small services, one task on each node (spread over empty
	// nodes); in ID order, each sorts after the big one half the time.
	var small []*api.Service
	for i := range 3 {
		s := create(t, c, service(fmt.Sprint("small", i), api.Replicated(3)))
		c.WaitFor(s.Spec.Name+" on the 3 nodes", func() bool {
			on := map[string]bool{}
			for _, tk := range c.Running(s.ID) {
				on[tk.NodeID] = true
			}
			return len(on) == 3
		})
		small = append(small, s)
	}
	svc := create(t, c, service("big", api.Replicated(replicas)))
	c.WaitFor("the first tasks placed", func() bool { return len(c.Tasks(svc.ID)) >= 30 })
	c.StopWorker("node2") // the node goes silent
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, err := c.Leader().Node("node2")
		if err != nil {
			t.Fatal(err)
		}
		if n.Status.State == api.NodeDown {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node2 silent for 30 s while the leader creates tasks one pass at a time: still %s, %d of %d tasks made", n.Status.State, len(c.Tasks(svc.ID)), replicas)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Down while the passes went on, not only once they ended.
	if made := len(c.Tasks(svc.ID)); made >= replicas {
		t.Fatalf("node2 marked down only after all %d tasks were made: the passes kept the node clock still", made)
	}
	replaced := func(s *api.Service) bool {
		ts := c.Running(s.ID)
		for _, tk := range ts {
			if tk.NodeID == "node2" {
				return false
			}
		}
		return len(ts) == 3
	}
	for _, s := range small {
		for !replaced(s) {
			if time.Now().After(deadline) {
				t.Fatalf("%s's task on node2 not replaced 30 s in, %d of %d big tasks made", s.Spec.Name, len(c.Tasks(svc.ID)), replicas)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if made := len(c.Tasks(svc.ID)); made >= replicas {
		t.Fatalf("the small services' tasks on node2 were replaced only after all %d big tasks were made", made)
	}
}

func TestGlobalServiceFollowsNodes(t *testing.T) {
	c := newCluster(t, 2)
	ctx := context.Background()
	m := c.Leader()
	svc := create(t, c, service("agent", api.Global()))
	c.WaitFor("one per node", func() bool { return len(c.Running(svc.ID)) == 2 })
	c.AddWorker("node9")
	c.WaitFor("the new node gets one", func() bool {
		for _, tk := range c.Running(svc.ID) {
			if tk.NodeID == "node9" {
				return len(c.Running(svc.ID)) == 3
			}
		}
		return false
	})
	if err := m.SetNodeAvailability(ctx, "node0", api.NodeDrain); err != nil {
		t.Fatal(err)
	}
	c.WaitFor("drained node loses its task", func() bool {
		for _, tk := range c.Running(svc.ID) {
			if tk.NodeID == "node0" {
				return false
			}
		}
		return len(c.Running(svc.ID)) == 2
	})
	if err := m.SetNodeAvailability(ctx, "node0", "sleepy"); !errors.Is(err, api.ErrInvalidSpec) {
		t.Fatalf("bad availability: %v", err)
	}
}

func TestUnplaceableTaskSaysWhy(t *testing.T) {
	c := newCluster(t, 2)
	spec := service("huge", api.Replicated(1))
	spec.TaskTemplate.Resources = &api.ResourceRequirements{Reservations: &api.Resources{MemoryBytes: 64 << 30}}
	svc := create(t, c, spec)
	c.WaitFor("a reason", func() bool {
		ts := c.Tasks(svc.ID)
		return len(ts) == 1 && ts[0].Status.State == api.TaskPending && strings.Contains(ts[0].Status.Err, "insufficient memory on 2 nodes")
	})
}

func TestRemovedServiceLeavesNoTasks(t *testing.T) {
	c := newCluster(t, 2)
	ctx := context.Background()
	m := c.Leader()
	svc := create(t, c, service("tmp", api.Replicated(2)))
	c.WaitFor("2 running", func() bool { return len(c.Running(svc.ID)) == 2 })
	if err := m.RemoveService(ctx, svc.ID); err != nil {
		t.Fatal(err)
	}
	c.WaitFor("tasks gone", func() bool { return len(c.Tasks(svc.ID)) == 0 })
	if err := m.RemoveService(ctx, svc.ID); !errors.Is(err, swarm.ErrNotFound) {
		t.Fatalf("second remove: %v", err)
	}
	if _, err := m.CreateService(ctx, api.ServiceSpec{Annotations: api.Annotations{Name: "bad name!"}}); !errors.Is(err, api.ErrInvalidSpec) {
		t.Fatalf("invalid spec: %v", err)
	}
}
