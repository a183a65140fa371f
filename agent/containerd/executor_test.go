package containerd_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/agent/containerd"
	"github.com/shoalproject/shoal/internal/containerdtest"
	"github.com/shoalproject/shoal/internal/testimages"
	"github.com/shoalproject/shoal/internal/waitfor"
	"github.com/shoalproject/shoal/swarm/api"
)

var (
	imageOnce sync.Once
	imageDir  string
	imageErr  error
)

// setup starts a private containerd and an executor whose image directory
// holds the test image tarball.
func setup(t *testing.T) *containerd.Executor {
	t.Helper()
	e, _ := setupDaemon(t)
	return e
}

func setupDaemon(t *testing.T) (*containerd.Executor, *containerdtest.Daemon) {
	t.Helper()
	d := containerdtest.Start(t)
	imageOnce.Do(func() {
		imageDir, imageErr = os.MkdirTemp("", "shoal-images-")
		if imageErr == nil {
			_, imageErr = testimages.Build(context.Background(), imageDir)
		}
	})
	if imageErr != nil {
		t.Fatal(imageErr)
	}
	e := &containerd.Executor{Address: d.Address, Namespace: d.Namespace("test"), StateDir: t.TempDir(), ImageDir: imageDir}
	if err := e.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e, d
}

func TestMain(m *testing.M) {
	code := m.Run()
	if imageDir != "" {
		os.RemoveAll(imageDir)
	}
	os.Exit(code)
}

func appTask(id string, args ...string) *api.Task {
	return &api.Task{Meta: api.Meta{ID: id}, ServiceID: "svc", Spec: api.TaskSpec{Image: testimages.AppRef, Args: args}}
}

func logs(t *testing.T, e *containerd.Executor, id string, tail int) string {
	var buf bytes.Buffer
	if err := e.Logs(context.Background(), id, agent.LogOptions{Tail: tail}, agent.WriteLogs(&buf, false)); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func TestRunToCompletionWithExitCode(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	for code, want := range map[int]api.TaskState{0: api.TaskComplete, 3: api.TaskFailed} {
		id := fmt.Sprintf("exit%d", code)
		var states []api.TaskState
		r := &agent.Runner{Executor: e, Report: func(u agent.StatusUpdate) { states = append(states, u.Status.State) }}
		final := r.Run(ctx, appTask(id, "exit", fmt.Sprint(code)))
		if final.State != want || final.ExitCode != code {
			t.Fatalf("exit %d: final %+v (states %v)", code, final, states)
		}
		if final.ContainerID != id {
			t.Fatalf("container id %q", final.ContainerID)
		}
		if got := logs(t, e, id, 0); !strings.Contains(got, fmt.Sprintf("exiting %d", code)) {
			t.Fatalf("logs %q", got)
		}
		if err := e.Remove(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
}

// waitLog waits until the task's log holds text (for example the line a
// program prints once its signal handlers are installed).
func waitLog(t *testing.T, e *containerd.Executor, id, text string) {
	t.Helper()
	waitfor.True(t, fmt.Sprintf("%s to log %q", id, text),
		func() bool { return strings.Contains(logs(t, e, id, 0), text) },
		func() string { return fmt.Sprintf("log of %s: %q", id, logs(t, e, id, 0)) })
}

func runUntilRunning(t *testing.T, e *containerd.Executor, task *api.Task) (cancel func() api.TaskStatus) {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	running := make(chan struct{})
	var once sync.Once
	done := make(chan api.TaskStatus, 1)
	// Report runs on the runner's goroutine: it only signals, the test's
	// goroutine decides. RUNNING comes again with each health change.
	r := &agent.Runner{Executor: e, Report: func(u agent.StatusUpdate) {
		if u.Status.State == api.TaskRunning {
			once.Do(func() { close(running) })
		}
	}}
	go func() { done <- r.Run(ctx, task) }()
	select {
	case <-running:
	case st := <-done:
		t.Fatalf("task ended before running: %+v", st)
	case <-time.After(60 * time.Second):
		t.Fatal("task not running after 60s")
	}
	// Idempotent, so a test can also stop the task in a cleanup.
	return sync.OnceValue(func() api.TaskStatus { stop(); return <-done })
}

func TestShutdownWithinGraceAndKillAfterIt(t *testing.T) {
	e := setup(t)
	grace := 5 * time.Second
	polite := appTask("polite", "sleep")
	polite.Spec.StopGracePeriod = &grace
	stop := runUntilRunning(t, e, polite)
	waitLog(t, e, "polite", "sleeping")
	t0 := time.Now()
	final := stop()
	if final.State != api.TaskShutdown || final.ExitCode != 0 || time.Since(t0) > grace {
		t.Fatalf("polite task: %+v after %v", final, time.Since(t0))
	}
	if !strings.Contains(logs(t, e, "polite", 0), "terminated") {
		t.Fatal("process did not see SIGTERM")
	}

	// A task that ignores SIGTERM is killed once its own grace period is
	// over: not before it, and not after the default one.
	short := 300 * time.Millisecond
	stubborn := appTask("stubborn", "ignore-term")
	stubborn.Spec.StopGracePeriod = &short
	stop = runUntilRunning(t, e, stubborn)
	waitLog(t, e, "stubborn", "ignoring") // its SIGTERM handler is in place
	t0 = time.Now()
	final = stop()
	in, err := e.Inspect(context.Background(), "stubborn")
	if err != nil || in.Exit == nil {
		t.Fatalf("inspect stubborn: %+v %v", in, err)
	}
	if killedAfter := in.Exit.ExitedAt.Sub(t0); final.State != api.TaskShutdown || final.ExitCode != 137 || killedAfter < short || killedAfter >= agent.DefaultStopGracePeriod {
		t.Fatalf("stubborn task: %+v, killed %v after the stop (grace %v, default %v)", final, killedAfter, short, agent.DefaultStopGracePeriod)
	}
	for _, id := range []string{"polite", "stubborn"} {
		if err := e.Remove(context.Background(), id); err != nil {
			t.Fatal(err)
		}
	}
}

func TestMissingImageIsRejectedWithReason(t *testing.T) {
	e := setup(t)
	task := appTask("noimg")
	task.Spec.Image = "example/web:1.0"
	final := (&agent.Runner{Executor: e}).Run(context.Background(), task)
	if final.State != api.TaskRejected || !strings.Contains(final.Err, "example/web:1.0") || !strings.Contains(final.Err, imageDir) {
		t.Fatalf("final %+v", final)
	}
	task.Spec.Image = "Bad Ref!"
	final = (&agent.Runner{Executor: e}).Run(context.Background(), task)
	if final.State != api.TaskRejected || !strings.Contains(final.Err, "not a valid image reference") {
		t.Fatalf("bad reference: %+v", final)
	}
}

func TestLimitsAreInTheCgroup(t *testing.T) {
	e := setup(t)
	task := appTask("limited", "sleep")
	task.Spec.Resources = &api.ResourceRequirements{Limits: &api.Resources{MemoryBytes: 64 << 20, Pids: 50, NanoCPUs: 5e8}}
	stop := runUntilRunning(t, e, task)
	defer func() { stop(); e.Remove(context.Background(), "limited") }()
	in, err := e.Inspect(context.Background(), "limited")
	if err != nil || in.PID == 0 {
		t.Fatalf("inspect %+v %v", in, err)
	}
	mem := readCgroup(t, in.PID, "memory", "memory.limit_in_bytes", "memory.max")
	pids := readCgroup(t, in.PID, "pids", "pids.max", "pids.max")
	if mem != fmt.Sprint(64<<20) || pids != "50" {
		t.Fatalf("cgroup memory limit %q, pids limit %q", mem, pids)
	}
	// Half a CPU: 50 ms of every 100 ms period.
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		if got := readCgroup(t, in.PID, "cpu", "", "cpu.max"); got != "50000 100000" {
			t.Fatalf("cpu.max %q, want 50000 100000", got)
		}
		return
	}
	quota := readCgroup(t, in.PID, "cpu", "cpu.cfs_quota_us", "")
	period := readCgroup(t, in.PID, "cpu", "cpu.cfs_period_us", "")
	if quota != "50000" || period != "100000" {
		t.Fatalf("CPU quota %s per period %s, want 50000 per 100000 (half a CPU)", quota, period)
	}
}

// A task stops with its own stop signal, not always SIGTERM.
func TestStopSignal(t *testing.T) {
	e := setup(t)
	task := appTask("usr1", "signals")
	task.Spec.StopSignal = "SIGUSR1"
	stop := runUntilRunning(t, e, task)
	waitLog(t, e, "usr1", "waiting for a signal")
	if final := stop(); final.State != api.TaskShutdown || final.ExitCode != 0 {
		t.Fatalf("stop with SIGUSR1: %+v", final)
	}
	if got := logs(t, e, "usr1", 0); !strings.Contains(got, "got SIGUSR1") {
		t.Fatalf("log %q, want the program to have got SIGUSR1", got)
	}
	e.Remove(context.Background(), "usr1")
}

// readCgroup reads a control file of the process's cgroup, on cgroup v1
// (file1 in the controller's hierarchy) or v2 (file2 in the unified one).
func readCgroup(t *testing.T, pid int, controller, file1, file2 string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		var p string
		switch {
		case f[0] == "0" && f[1] == "":
			if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err != nil {
				continue // the v1 machine's empty unified hierarchy
			}
			p = filepath.Join("/sys/fs/cgroup", f[2], file2)
		case strings.Contains(","+f[1]+",", ","+controller+","):
			p = filepath.Join("/sys/fs/cgroup", controller, f[2], file1)
		default:
			continue
		}
		v, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("read %s: %v", p, err)
		}
		return strings.TrimSpace(string(v))
	}
	t.Fatalf("no %s cgroup for pid %d in %s", controller, pid, b)
	return ""
}

func TestLogsTailAndRemoveCleansUp(t *testing.T) {
	e := setup(t)
	stop := runUntilRunning(t, e, appTask("lines", "lines", "5"))
	waitLog(t, e, "lines", "line 5")
	if got := logs(t, e, "lines", 2); got != "line 4\nline 5\n" {
		t.Fatalf("tail 2: %q", got)
	}
	stop()
	if err := e.Remove(context.Background(), "lines"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Inspect(context.Background(), "lines"); err == nil {
		t.Fatal("task still known after Remove")
	}
	// Preparing the same ID again works: nothing of the old one is left.
	stop = runUntilRunning(t, e, appTask("lines", "sleep"))
	stop()
	e.Remove(context.Background(), "lines")
}

func TestHealthCheckFlipsToUnhealthy(t *testing.T) {
	e := setup(t)
	task := appTask("health", "healthy-for", "1s")
	task.Spec.Healthcheck = &api.HealthConfig{Test: []string{"CMD", "/app", "check", "/tmp/healthy"},
		Interval: 200 * time.Millisecond, Timeout: 5 * time.Second, Retries: 2}
	var mu sync.Mutex
	var healths []string
	r := &agent.Runner{Executor: e, Report: func(u agent.StatusUpdate) {
		mu.Lock()
		defer mu.Unlock()
		if h := u.Status.Health; h != "" && (len(healths) == 0 || healths[len(healths)-1] != h) {
			healths = append(healths, h)
		}
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	final := r.Run(ctx, task)
	mu.Lock()
	defer mu.Unlock()
	if final.State != api.TaskFailed || !strings.Contains(final.Err, "unhealthy") || strings.Join(healths, ",") != "starting,healthy,unhealthy" {
		t.Fatalf("final %+v, health %v", final, healths)
	}
	e.Remove(context.Background(), "health")
}
