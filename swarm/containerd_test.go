package swarm_test

import (
	"context"
	"os"
	"strconv"
	"syscall"
	"testing"

	"github.com/shoalproject/shoal/agent/containerd"
	"github.com/shoalproject/shoal/internal/containerdtest"
	"github.com/shoalproject/shoal/internal/testimages"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// The same workflow on real containers: two workers, each with its own
// containerd namespace and state (two nodes sharing one private daemon),
// run a service; a container killed from outside is replaced; removing
// the service removes the containers.
func TestServiceOnContainerd(t *testing.T) {
	d := containerdtest.Start(t) // skips without root or containerd
	imageDir := t.TempDir()
	if _, err := testimages.Build(context.Background(), imageDir); err != nil {
		t.Fatal(err)
	}
	c := newCluster(t, 0)
	execs := map[string]*containerd.Executor{}
	for _, id := range []string{"node0", "node1"} {
		e := &containerd.Executor{Address: d.Address, Namespace: id, StateDir: t.TempDir(), ImageDir: imageDir}
		if err := e.Connect(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close() })
		w := &swarm.Worker{NodeID: id, Executor: e, Dispatcher: c.m, HeartbeatPeriod: beat,
			Description: api.NodeDescription{Hostname: id, Resources: api.Resources{NanoCPUs: 2e9, MemoryBytes: 4 << 30}}}
		if err := w.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { w.Close() })
		execs[id] = e
	}
	ctx := context.Background()
	spec := service("sleeper", api.Replicated(2))
	spec.TaskTemplate.Image, spec.TaskTemplate.Args = testimages.AppRef, []string{"sleep"}
	svc, err := c.m.CreateService(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	c.eventually("2 containers running", func() bool { return len(c.running(svc.ID)) == 2 })
	victim := c.running(svc.ID)[0]
	in, err := execs[victim.NodeID].Inspect(ctx, victim.ID)
	if err != nil || in.PID <= 0 {
		t.Fatalf("inspect %s: %+v %v", victim.ID, in, err)
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(in.PID)); err != nil {
		t.Fatalf("container process %d not found: %v", in.PID, err)
	}
	syscall.Kill(in.PID, syscall.SIGKILL)
	c.eventually("the killed container replaced", func() bool {
		for _, tk := range c.running(svc.ID) {
			if tk.Slot == victim.Slot && tk.ID != victim.ID {
				return len(c.running(svc.ID)) == 2
			}
		}
		return false
	})
	tasks, _ := c.m.Tasks(svc.ID)
	if err := c.m.RemoveService(ctx, svc.ID); err != nil {
		t.Fatal(err)
	}
	c.eventually("tasks gone", func() bool { ts, _ := c.m.Tasks(svc.ID); return len(ts) == 0 })
	c.eventually("containers removed", func() bool {
		for _, tk := range tasks {
			if tk.NodeID == "" {
				continue
			}
			if _, err := execs[tk.NodeID].Inspect(ctx, tk.ID); err == nil {
				return false
			}
		}
		return true
	})
}
