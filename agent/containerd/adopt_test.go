package containerd_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/agent/containerd"
	"github.com/shoalproject/shoal/swarm/api"
)

func TestAdoptAfterAgentRestartAndRemoveOrphans(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	// The task to keep stops with SIGUSR1, which the new agent must learn
	// from the container.
	keep := appTask("keep", "signals")
	keep.Spec.StopSignal = "SIGUSR1"
	for _, task := range []*api.Task{keep, appTask("orphan", "sleep")} {
		if err := e.Prepare(ctx, task); err != nil {
			t.Fatal(err)
		}
		if err := e.Start(ctx, task.ID); err != nil {
			t.Fatal(err)
		}
	}
	waitLog(t, e, "keep", "waiting for a signal")
	before, _ := e.Inspect(ctx, "keep")
	e.Close() // the agent goes away; containers keep running

	e2 := &containerd.Executor{Address: e.Address, Namespace: e.Namespace, StateDir: e.StateDir, ImageDir: e.ImageDir}
	if err := e2.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	ids, err := e2.Adopt(ctx)
	if err != nil || strings.Join(ids, ",") != "keep,orphan" {
		t.Fatalf("adopted %v %v", ids, err)
	}
	after, err := e2.Inspect(ctx, "keep")
	if err != nil || !after.Running || after.PID != before.PID {
		t.Fatalf("adopted task not the same running process: before %+v after %+v %v", before, after, err)
	}
	removed, err := e2.Reconcile(ctx, map[string]bool{"keep": true})
	if err != nil || len(removed) != 1 || removed[0] != "orphan" {
		t.Fatalf("reconcile removed %v %v", removed, err)
	}
	if _, err := e2.Inspect(ctx, "orphan"); err == nil {
		t.Fatal("orphan still known")
	}
	// The adopted task stops as usual, with its stop signal (a grace
	// period long enough that only the signal can end it).
	if err := e2.Shutdown(ctx, "keep", time.Minute); err != nil {
		t.Fatal(err)
	}
	exit, err := e2.Wait(ctx, "keep")
	if err != nil {
		t.Fatal(err)
	}
	if exit.Code != 0 {
		t.Fatalf("exit %+v", exit)
	}
	// Logging went on across the agent restart: the signal handler's line,
	// written after it, is in the log once Wait has returned (Wait returns
	// only when the task's output is all in).
	if got := logs(t, e2, "keep", 0); !strings.Contains(got, "waiting for a signal\ngot SIGUSR1\n") {
		t.Fatalf("logs after restart %q", got)
	}
	e2.Remove(ctx, "keep")
}

func TestExecAndMetrics(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	stop := runUntilRunning(t, e, appTask("m", "sleep"))
	defer func() { stop(); e.Remove(ctx, "m") }()
	code, out, err := e.Exec(ctx, "m", []string{"/app", "exit", "4"})
	if err != nil || code != 4 || !strings.Contains(string(out), "exiting 4") {
		t.Fatalf("exec: %d %q %v", code, out, err)
	}
	// Exec keeps only the start of a long output.
	code, out, err = e.Exec(ctx, "m", []string{"/app", "long", "10000"})
	if err != nil || code != 0 || len(out) != agent.MaxExecOutput || strings.Trim(string(out), "x") != "" {
		t.Fatalf("exec with 10000 bytes of output: %d, %d bytes kept %v; want %d", code, len(out), err, agent.MaxExecOutput)
	}
	m, err := e.Metrics(ctx, "m")
	if err != nil || m.MemoryBytes == 0 || m.Pids == 0 {
		t.Fatalf("metrics %+v %v", m, err)
	}
}

func TestNetworkNamespaceHook(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	name := fmt.Sprintf("shoaltest-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	nsPath := "/var/run/netns/" + name
	resolv := t.TempDir() + "/resolv.conf"
	os.WriteFile(resolv, []byte("nameserver 127.0.0.11\n"), 0o644)
	e.Network = func(_ context.Context, task *api.Task) (string, string, error) {
		if task.ID == "joined" {
			return nsPath, resolv, nil
		}
		return "", "", nil
	}
	stop := runUntilRunning(t, e, appTask("joined", "sleep"))
	defer func() { stop(); e.Remove(ctx, "joined") }()
	stop2 := runUntilRunning(t, e, appTask("alone", "sleep"))
	defer func() { stop2(); e.Remove(ctx, "alone") }()
	joined, _ := e.Inspect(ctx, "joined")
	alone, _ := e.Inspect(ctx, "alone")
	if inode(t, fmt.Sprintf("/proc/%d/ns/net", joined.PID)) != inode(t, nsPath) {
		t.Fatal("task not in the namespace the network layer gave")
	}
	own := inode(t, fmt.Sprintf("/proc/%d/ns/net", alone.PID))
	if own == inode(t, nsPath) || own == inode(t, "/proc/self/ns/net") {
		t.Fatal("task without a network config does not have its own namespace")
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/etc/resolv.conf", joined.PID))
	if err != nil || !strings.Contains(string(b), "127.0.0.11") {
		t.Fatalf("resolv.conf in the container: %q %v", b, err)
	}
	// The task cannot change the resolver the network layer gave it.
	code, out, err := e.Exec(ctx, "joined", []string{"/app", "write", "/etc/resolv.conf", "nameserver 192.0.2.66\n"})
	if err != nil || code == 0 || !strings.Contains(string(out), "read-only file system") {
		t.Fatalf("writing resolv.conf in the container: exit %d %q %v, want a read-only file system error", code, out, err)
	}
	if b, _ := os.ReadFile(resolv); string(b) != "nameserver 127.0.0.11\n" {
		t.Fatalf("the node's resolv.conf for the task changed: %q", b)
	}
}

func inode(t *testing.T, p string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}
