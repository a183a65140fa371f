package swarm_test

import (
	"context"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/shoalproject/shoal/agent/containerd"
	"github.com/shoalproject/shoal/internal/containerdtest"
	"github.com/shoalproject/shoal/internal/testimages"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/swarmtest"
)

// ctrdEnv is the test's private containerd and images. Each node has its
// own namespace and state dir, as separate hosts would.
type ctrdEnv struct {
	addr, imageDir string
	states         map[string]string
}

// executor connects a node's executor (the same state dir every time, as
// a restarted agent on that node would find it).
func (e *ctrdEnv) executor(t *testing.T, node string) *containerd.Executor {
	t.Helper()
	x := &containerd.Executor{Address: e.addr, Namespace: node, StateDir: e.state(t, node), ImageDir: e.imageDir}
	if err := x.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.Close() })
	return x
}

func (e *ctrdEnv) state(t *testing.T, node string) string {
	if e.states[node] == "" {
		e.states[node] = t.TempDir()
	}
	return e.states[node]
}

func containerdCluster(t *testing.T, nodes ...string) (*swarmtest.Cluster, *ctrdEnv) {
	t.Helper()
	d := containerdtest.Start(t) // skips without root or containerd
	env := &ctrdEnv{addr: d.Address, imageDir: t.TempDir(), states: map[string]string{}}
	if _, err := testimages.Build(context.Background(), env.imageDir); err != nil {
		t.Fatal(err)
	}
	c := swarmtest.New(t, swarmtest.Options{HeartbeatPeriod: 2 * time.Second})
	for _, id := range nodes {
		c.AddWorkerOn(id, env.executor(t, id))
	}
	return c, env
}

func pidOf(t *testing.T, c *swarmtest.Cluster, tk *api.Task) int {
	t.Helper()
	in, err := c.Executor(tk.NodeID).Inspect(context.Background(), tk.ID)
	if err != nil || in.PID <= 0 {
		t.Fatalf("inspect %s: %+v %v", tk.ID, in, err)
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(in.PID)); err != nil {
		t.Fatalf("container process %d not found: %v", in.PID, err)
	}
	return in.PID
}

func sleeper(name string, replicas uint64) api.ServiceSpec {
	spec := service(name, api.Replicated(replicas))
	spec.TaskTemplate.Image, spec.TaskTemplate.Args = testimages.AppRef, []string{"sleep"}
	return spec
}

// The workflow on real containers: two workers run a service; a container
// killed from outside is replaced; removing the service removes the
// containers.
func TestServiceOnContainerd(t *testing.T) {
	c, _ := containerdCluster(t, "node0", "node1")
	ctx := context.Background()
	svc := create(t, c, sleeper("sleeper", 2))
	c.WaitFor("2 containers running", func() bool { return len(c.Running(svc.ID)) == 2 })
	victim := c.Running(svc.ID)[0]
	syscall.Kill(pidOf(t, c, victim), syscall.SIGKILL)
	c.WaitFor("the killed container replaced", func() bool {
		for _, tk := range c.Running(svc.ID) {
			if tk.Slot == victim.Slot && tk.ID != victim.ID {
				return len(c.Running(svc.ID)) == 2
			}
		}
		return false
	})
	tasks := c.Tasks(svc.ID)
	if err := c.Leader().RemoveService(ctx, svc.ID); err != nil {
		t.Fatal(err)
	}
	c.WaitFor("tasks gone", func() bool { return len(c.Tasks(svc.ID)) == 0 })
	c.WaitFor("containers removed", func() bool {
		for _, tk := range tasks {
			if tk.NodeID == "" {
				continue
			}
			if _, err := c.Executor(tk.NodeID).Inspect(ctx, tk.ID); err == nil {
				return false
			}
		}
		return true
	})
}

// A restarted worker adopts the containers that still run: they are not
// restarted (same process), they keep their slots, a kill is noticed, and
// a later update stops them.
func TestRestartedWorkerAdoptsContainers(t *testing.T) {
	c, env := containerdCluster(t, "node0")
	ctx := context.Background()
	svc := create(t, c, sleeper("keep", 2))
	c.WaitFor("2 containers running", func() bool { return len(c.Running(svc.ID)) == 2 })
	pids := map[string]int{}
	for _, tk := range c.Running(svc.ID) {
		pids[tk.ID] = pidOf(t, c, tk)
	}
	// The agent goes away; its containers do not.
	c.StopWorker("node0")
	c.Executor("node0").(*containerd.Executor).Close()
	for id, pid := range pids {
		if err := syscall.Kill(pid, 0); err != nil {
			t.Fatalf("task %s's process %d died with its agent: %v", id, pid, err)
		}
	}
	// A new agent on the same node, with the same containerd namespace and
	// state dir.
	c.AddWorkerOn("node0", env.executor(t, "node0"))
	settle(t, c)
	running := c.Running(svc.ID)
	if len(running) != 2 {
		t.Fatalf("%d running after the worker restart:\n%s", len(running), c.Dump())
	}
	for _, tk := range running {
		if pids[tk.ID] == 0 {
			t.Fatalf("task %s is new: the restart replaced the tasks instead of adopting them", tk.ID)
		}
		if got := pidOf(t, c, tk); got != pids[tk.ID] {
			t.Fatalf("task %s runs as pid %d, was %d: restarted instead of adopted", tk.ID, got, pids[tk.ID])
		}
	}
	// The adopted tasks are watched: a kill is noticed and replaced.
	victim := running[0]
	syscall.Kill(pids[victim.ID], syscall.SIGKILL)
	c.WaitFor("the killed adopted container replaced", func() bool {
		for _, tk := range c.Running(svc.ID) {
			if tk.Slot == victim.Slot && tk.ID != victim.ID {
				return true
			}
		}
		return false
	})
	// An update stops the adopted survivor for real.
	survivor := running[1]
	m := c.Leader()
	cur, _ := m.Service(svc.ID)
	spec := cur.Spec
	spec.TaskTemplate.Env = []string{"V=2"}
	spec.UpdateConfig = &api.UpdateConfig{Parallelism: 2}
	if _, err := m.UpdateService(ctx, svc.ID, cur.Version, spec); err != nil {
		t.Fatal(err)
	}
	c.WaitFor("the adopted container's process stopped", func() bool {
		return syscall.Kill(pids[survivor.ID], 0) != nil
	})
	c.WaitFor("2 running the new spec", func() bool {
		n := 0
		for _, tk := range c.Running(svc.ID) {
			if len(tk.Spec.Env) == 1 {
				n++
			}
		}
		return n == 2
	})
}
