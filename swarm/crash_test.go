package swarm_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoalproject/shoal/agent/containerd"
	"github.com/shoalproject/shoal/internal/testca"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/swarmtest"
)

// The test binary doubles as a worker process for crash tests: with
// SHOAL_TEST_WORKER set it runs a worker (containerd executor, dispatcher
// over mutual TLS) until it is killed.
func TestMain(m *testing.M) {
	if swarm.RunPassCrashChild() {
		return // not reached: the child runs until killed
	}
	if os.Getenv("SHOAL_TEST_NODE_MODE") != "" {
		if err := runChildNode(); err != nil {
			fmt.Fprintln(os.Stderr, "child node:", err)
			os.Exit(1)
		}
		select {} // until killed
	}
	if os.Getenv("SHOAL_TEST_WORKER") != "" {
		if err := runChildWorker(); err != nil {
			fmt.Fprintln(os.Stderr, "child worker:", err)
			os.Exit(1)
		}
		select {} // until killed
	}
	code := m.Run()
	if os.Getenv("SHOAL_TEST_GOROUTINES") != "" {
		time.Sleep(2 * time.Second)
		fmt.Fprintln(os.Stderr, "goroutines left:", runtime.NumGoroutine())
		pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
	}
	os.Exit(code)
}

func runChildWorker() error {
	env := func(k string) string { return os.Getenv("SHOAL_TEST_" + k) }
	conf, err := testca.LoadFiles(env("CERTS"), env("NODE"))
	if err != nil {
		return err
	}
	e := &containerd.Executor{Address: env("CONTAINERD"), Namespace: env("NODE"), StateDir: env("STATE"), ImageDir: env("IMAGES")}
	ctx := context.Background()
	if err := e.Connect(ctx); err != nil {
		return err
	}
	w := &swarm.Worker{NodeID: env("NODE"), Executor: e, Dispatcher: &swarm.RemoteDispatcher{Addrs: []string{env("MANAGER")}, TLS: conf},
		Description: api.NodeDescription{Hostname: env("NODE"),
			Resources: api.Resources{NanoCPUs: 2e9, MemoryBytes: 4 << 30}}}
	if err := w.Start(ctx); err != nil {
		return err
	}
	<-w.Ready()
	fmt.Println("ready")
	return nil
}

// childWorker runs a worker process and waits until it has taken its
// first assignments.
func childWorker(t *testing.T, env []string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(out).ReadString('\n')
		if err == nil && strings.TrimSpace(line) != "ready" {
			err = fmt.Errorf("child said %q", line)
		}
		ready <- err
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatalf("child worker: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("child worker not ready")
	}
	return cmd
}

// workerProcessEnv serves the leader's API over mutual TLS and returns the
// environment of a worker process (childWorker) for node on it.
func workerProcessEnv(t *testing.T, c *swarmtest.Cluster, d *ctrdEnv, node string) []string {
	t.Helper()
	ca, err := testca.New()
	if err != nil {
		t.Fatal(err)
	}
	certs := t.TempDir()
	if err := ca.WriteFiles(certs, node); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(c.Leader().Handler(nil))
	if srv.TLS, err = ca.Config("manager"); err != nil {
		t.Fatal(err)
	}
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return []string{"SHOAL_TEST_WORKER=1", "SHOAL_TEST_NODE=" + node, "SHOAL_TEST_CERTS=" + certs,
		"SHOAL_TEST_MANAGER=" + srv.Listener.Addr().String(), "SHOAL_TEST_CONTAINERD=" + d.addr,
		"SHOAL_TEST_STATE=" + d.state(t, node), "SHOAL_TEST_IMAGES=" + d.imageDir}
}

// A worker process killed with SIGKILL and started again on the same node
// adopts its running containers (same processes), and a later update
// stops them.
func TestKilledWorkerProcessAdoptsContainers(t *testing.T) {
	c, d := containerdCluster(t) // no in-process workers
	ctx := context.Background()
	m := c.Leader()
	env := workerProcessEnv(t, c, d, "node0")
	child := childWorker(t, env)
	svc := create(t, c, sleeper("survivor", 2))
	c.WaitFor("2 containers running", func() bool { return len(c.Running(svc.ID)) == 2 })
	pids := map[string]int{}
	for _, tk := range c.Running(svc.ID) {
		if tk.Status.PID <= 0 {
			t.Fatalf("task %s reports no pid", tk.ID)
		}
		pids[tk.ID] = tk.Status.PID
	}
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	child.Wait()
	for id, pid := range pids {
		if syscall.Kill(pid, 0) != nil {
			t.Fatalf("task %s's process died with the worker process", id)
		}
	}
	childWorker(t, env)
	settle(t, c)
	running := c.Running(svc.ID)
	if len(running) != 2 {
		t.Fatalf("%d running after the worker process restart:\n%s", len(running), c.Dump())
	}
	for _, tk := range running {
		if pids[tk.ID] == 0 {
			t.Fatalf("task %s is new: the killed worker's tasks were replaced, not adopted", tk.ID)
		}
		if tk.Status.PID != 0 && tk.Status.PID != pids[tk.ID] {
			t.Fatalf("task %s reports pid %d, was %d", tk.ID, tk.Status.PID, pids[tk.ID])
		}
	}
	cur, _ := m.Service(svc.ID)
	spec := cur.Spec
	spec.TaskTemplate.Env = []string{"V=2"}
	spec.UpdateConfig = &api.UpdateConfig{Parallelism: 2}
	if _, err := m.UpdateService(ctx, svc.ID, cur.Version, spec); err != nil {
		t.Fatal(err)
	}
	c.WaitFor("the adopted containers' processes stopped by the update", func() bool {
		for _, pid := range pids {
			if syscall.Kill(pid, 0) == nil {
				return false
			}
		}
		return true
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
