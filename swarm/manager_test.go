package swarm_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

const beat = 50 * time.Millisecond

// badImage's tasks fail as soon as they start.
const badImage = "example/bad:1"

// onceImage's tasks succeed as soon as they start.
const onceImage = "example/once:1"

type cluster struct {
	t       *testing.T
	m       *swarm.Manager
	workers map[string]*swarm.Worker
	execs   map[string]*agent.FakeExecutor
}

func newCluster(t *testing.T, workers int) *cluster {
	t.Helper()
	m := &swarm.Manager{HeartbeatPeriod: beat, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	select {
	case <-m.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("manager not ready")
	}
	c := &cluster{t: t, m: m, workers: map[string]*swarm.Worker{}, execs: map[string]*agent.FakeExecutor{}}
	for i := range workers {
		c.join(fmt.Sprintf("node%d", i))
	}
	return c
}

func (c *cluster) join(id string) {
	c.t.Helper()
	fe := &agent.FakeExecutor{ExitCodes: map[string]int{badImage: 1, onceImage: 0}}
	w := &swarm.Worker{NodeID: id, Executor: fe, Dispatcher: c.m, HeartbeatPeriod: beat,
		Description: api.NodeDescription{Hostname: id, Platform: api.Platform{OS: "linux", Architecture: "x86_64"},
			Resources: api.Resources{NanoCPUs: 4e9, MemoryBytes: 8 << 30}}}
	if err := w.Start(context.Background()); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { w.Close() })
	c.workers[id], c.execs[id] = w, fe
}

// running returns the service's running tasks (desired running too).
func (c *cluster) running(serviceID string) []*api.Task {
	ts, err := c.m.Tasks(serviceID)
	if err != nil {
		c.t.Fatal(err)
	}
	var out []*api.Task
	for _, t := range ts {
		if t.Status.State == api.TaskRunning && t.DesiredState == api.TaskRunning {
			out = append(out, t)
		}
	}
	return out
}

func (c *cluster) eventually(what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			ts, _ := c.m.Tasks("")
			var b strings.Builder
			for _, t := range ts {
				fmt.Fprintf(&b, "\n  %s slot %d node %q desired %s state %s %s", t.ID[:6], t.Slot, t.NodeID, t.DesiredState, t.Status.State, t.Status.Err)
			}
			c.t.Fatalf("timed out: %s; tasks:%s", what, b.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func noDelay() *api.RestartPolicy {
	d := time.Duration(0)
	return &api.RestartPolicy{Condition: api.RestartAny, Delay: &d}
}

func service(name string, mode api.ServiceMode) api.ServiceSpec {
	return api.ServiceSpec{Annotations: api.Annotations{Name: name}, Mode: mode,
		TaskTemplate: api.TaskSpec{Image: "example/web:1", RestartPolicy: noDelay()}}
}

func TestReplicatedServiceRunsHealsAndScales(t *testing.T) {
	c := newCluster(t, 3)
	ctx := context.Background()
	svc, err := c.m.CreateService(ctx, service("web", api.Replicated(3)))
	if err != nil {
		t.Fatal(err)
	}
	c.eventually("3 running tasks", func() bool { return len(c.running(svc.ID)) == 3 })
	nodes := map[string]bool{}
	slots := map[uint64]bool{}
	for _, tk := range c.running(svc.ID) {
		nodes[tk.NodeID], slots[tk.Slot] = true, true
	}
	if len(nodes) != 3 || len(slots) != 3 {
		t.Fatalf("spread: nodes %v slots %v", nodes, slots)
	}
	// A task that fails is replaced in its slot.
	victim := c.running(svc.ID)[0]
	c.execs[victim.NodeID].Exit(victim.ID, 1)
	c.eventually("replacement", func() bool {
		for _, tk := range c.running(svc.ID) {
			if tk.Slot == victim.Slot && tk.ID != victim.ID {
				return true
			}
		}
		return false
	})
	old, _ := c.m.Tasks(svc.ID)
	for _, tk := range old {
		if tk.ID == victim.ID && (tk.Status.State != api.TaskFailed || tk.DesiredState != api.TaskShutdown) {
			t.Fatalf("failed task kept as %s/%s", tk.Status.State, tk.DesiredState)
		}
	}
	// Duplicate names are refused with a clear error.
	if _, err := c.m.CreateService(ctx, service("web", api.Replicated(1))); !errors.Is(err, swarm.ErrNameInUse) {
		t.Fatalf("duplicate name: %v", err)
	}
	// Scale up, then down.
	svc, _ = c.m.Service("web")
	spec := svc.Spec
	spec.Mode = api.Replicated(5)
	if svc, err = c.m.UpdateService(ctx, svc.ID, svc.Version, spec); err != nil {
		t.Fatal(err)
	}
	c.eventually("5 running", func() bool { return len(c.running(svc.ID)) == 5 })
	spec.Mode = api.Replicated(2)
	if _, err = c.m.UpdateService(ctx, svc.ID, svc.Version, spec); err != nil {
		t.Fatal(err)
	}
	c.eventually("2 running, surplus shut down", func() bool {
		ts, _ := c.m.Tasks(svc.ID)
		live := 0
		for _, tk := range ts {
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
	if _, err := c.m.UpdateService(ctx, svc.ID, svc.Version-1, spec); err == nil {
		t.Fatal("update from a stale version accepted")
	}
}

func TestLostNodeTasksAreReplacedElsewhere(t *testing.T) {
	c := newCluster(t, 3)
	ctx := context.Background()
	svc, err := c.m.CreateService(ctx, service("api", api.Replicated(3)))
	if err != nil {
		t.Fatal(err)
	}
	c.eventually("3 running", func() bool { return len(c.running(svc.ID)) == 3 })
	c.workers["node2"].Close() // the node goes silent
	start := time.Now()
	c.eventually("replaced off node2", func() bool {
		ts := c.running(svc.ID)
		for _, tk := range ts {
			if tk.NodeID == "node2" {
				return false
			}
		}
		return len(ts) == 3
	})
	t.Logf("tasks of a silent node replaced in %v (heartbeat %v)", time.Since(start), beat)
	ns, _ := c.m.Nodes()
	for _, n := range ns {
		if n.ID == "node2" && n.Status.State != api.NodeDown {
			t.Fatalf("silent node is %s", n.Status.State)
		}
	}
}

func TestGlobalServiceFollowsNodes(t *testing.T) {
	c := newCluster(t, 2)
	ctx := context.Background()
	svc, err := c.m.CreateService(ctx, service("agent", api.Global()))
	if err != nil {
		t.Fatal(err)
	}
	c.eventually("one per node", func() bool { return len(c.running(svc.ID)) == 2 })
	c.join("node9")
	c.eventually("the new node gets one", func() bool {
		for _, tk := range c.running(svc.ID) {
			if tk.NodeID == "node9" {
				return len(c.running(svc.ID)) == 3
			}
		}
		return false
	})
	if err := c.m.SetNodeAvailability(ctx, "node0", api.NodeDrain); err != nil {
		t.Fatal(err)
	}
	c.eventually("drained node loses its task", func() bool {
		for _, tk := range c.running(svc.ID) {
			if tk.NodeID == "node0" {
				return false
			}
		}
		return len(c.running(svc.ID)) == 2
	})
	if err := c.m.SetNodeAvailability(ctx, "node0", "sleepy"); !errors.Is(err, api.ErrInvalidSpec) {
		t.Fatalf("bad availability: %v", err)
	}
}

func TestUnplaceableTaskSaysWhy(t *testing.T) {
	c := newCluster(t, 2)
	spec := service("huge", api.Replicated(1))
	spec.TaskTemplate.Resources = &api.ResourceRequirements{Reservations: &api.Resources{MemoryBytes: 64 << 30}}
	svc, err := c.m.CreateService(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	c.eventually("a reason", func() bool {
		ts, _ := c.m.Tasks(svc.ID)
		return len(ts) == 1 && ts[0].Status.State == api.TaskPending && strings.Contains(ts[0].Status.Err, "insufficient memory on 2 nodes")
	})
}

func TestRemovedServiceLeavesNoTasks(t *testing.T) {
	c := newCluster(t, 2)
	ctx := context.Background()
	svc, err := c.m.CreateService(ctx, service("tmp", api.Replicated(2)))
	if err != nil {
		t.Fatal(err)
	}
	c.eventually("2 running", func() bool { return len(c.running(svc.ID)) == 2 })
	if err := c.m.RemoveService(ctx, svc.ID); err != nil {
		t.Fatal(err)
	}
	c.eventually("tasks gone", func() bool { ts, _ := c.m.Tasks(svc.ID); return len(ts) == 0 })
	if err := c.m.RemoveService(ctx, svc.ID); !errors.Is(err, swarm.ErrNotFound) {
		t.Fatalf("second remove: %v", err)
	}
	if _, err := c.m.CreateService(ctx, api.ServiceSpec{Annotations: api.Annotations{Name: "bad name!"}}); !errors.Is(err, api.ErrInvalidSpec) {
		t.Fatalf("invalid spec: %v", err)
	}
}
