package agent_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/internal/waitfor"
	"github.com/shoalproject/shoal/swarm/api"
)

type recorder struct {
	mu     sync.Mutex
	states []api.TaskState
}

func (r *recorder) report(u agent.StatusUpdate) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.states = append(r.states, u.Status.State)
}

func (r *recorder) got() []api.TaskState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.states)
}

func task(id, image string) *api.Task {
	return &api.Task{Meta: api.Meta{ID: id}, Spec: api.TaskSpec{Image: image}}
}

var started = []api.TaskState{api.TaskAccepted, api.TaskPreparing, api.TaskReady, api.TaskStarting, api.TaskRunning}

func TestRunnerCompleteAndFailed(t *testing.T) {
	f := &agent.FakeExecutor{ExitCodes: map[string]int{"ok": 0, "bad": 3}}
	for image, want := range map[string]api.TaskState{"ok": api.TaskComplete, "bad": api.TaskFailed} {
		rec := &recorder{}
		final := (&agent.Runner{Executor: f, Report: rec.report}).Run(context.Background(), task("t-"+image, image))
		if final.State != want || !slices.Equal(rec.got(), append(slices.Clone(started), want)) {
			t.Fatalf("%s: final %v, states %v", image, final.State, rec.got())
		}
		if image == "bad" && (final.ExitCode != 3 || final.Err == "") {
			t.Fatalf("failed status %+v", final)
		}
	}
}

func TestRunnerRejectsMissingImage(t *testing.T) {
	f := &agent.FakeExecutor{MissingImages: map[string]bool{"nope": true}}
	rec := &recorder{}
	final := (&agent.Runner{Executor: f, Report: rec.report}).Run(context.Background(), task("t", "nope"))
	if final.State != api.TaskRejected || !strings.Contains(final.Err, "image not found: nope") {
		t.Fatalf("final %+v", final)
	}
	if want := []api.TaskState{api.TaskAccepted, api.TaskPreparing, api.TaskRejected}; !slices.Equal(rec.got(), want) {
		t.Fatalf("states %v", rec.got())
	}
}

func TestRunnerShutdownWithinGraceAndKillAfter(t *testing.T) {
	grace := 50 * time.Millisecond
	f := &agent.FakeExecutor{IgnoreStop: map[string]bool{"stubborn": true}}
	for image, code := range map[string]int{"polite": 143, "stubborn": 137} {
		tk := task("t-"+image, image)
		tk.Spec.StopGracePeriod = &grace
		ctx, cancel := context.WithCancel(context.Background())
		rec := &recorder{}
		done := make(chan api.TaskStatus)
		go func() { done <- (&agent.Runner{Executor: f, Report: rec.report}).Run(ctx, tk) }()
		waitfor.True(t, image+" running", func() bool { return slices.Contains(rec.got(), api.TaskRunning) })
		cancel()
		final := <-done
		if final.State != api.TaskShutdown || final.ExitCode != code {
			t.Fatalf("%s: %+v", image, final)
		}
	}
}

func TestFakeLogsTail(t *testing.T) {
	f := &agent.FakeExecutor{ExitCodes: map[string]int{"x": 0}}
	(&agent.Runner{Executor: f}).Run(context.Background(), task("t", "x"))
	var buf bytes.Buffer
	if err := f.Logs(context.Background(), "t", agent.LogOptions{Tail: 1}, agent.WriteLogs(&buf, false)); err != nil || buf.String() != "exited 0\n" {
		t.Fatalf("tail 1: %q %v", buf.String(), err)
	}
	if err := f.Remove(context.Background(), "t"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Inspect(context.Background(), "t"); !errors.Is(err, agent.ErrNotFound) {
		t.Fatal(err)
	}
}

func TestHealthCheckHealthyThenUnhealthyFails(t *testing.T) {
	var mu sync.Mutex
	failing := false
	f := &agent.FakeExecutor{ExecResult: func(string, []string) int {
		mu.Lock()
		defer mu.Unlock()
		if failing {
			return 1
		}
		return 0
	}}
	tk := task("h", "x")
	tk.Spec.Healthcheck = &api.HealthConfig{Test: []string{"CMD", "check"}, Interval: 10 * time.Millisecond, Retries: 3}
	var mu2 sync.Mutex
	var healths []string
	r := &agent.Runner{Executor: f, Report: func(u agent.StatusUpdate) {
		mu2.Lock()
		defer mu2.Unlock()
		if u.Status.Health != "" && (len(healths) == 0 || healths[len(healths)-1] != u.Status.Health) {
			healths = append(healths, u.Status.Health)
		}
		if u.Status.Health == agent.HealthHealthy {
			mu.Lock()
			failing = true
			mu.Unlock()
		}
	}}
	final := r.Run(context.Background(), tk)
	if final.State != api.TaskFailed || final.Health != agent.HealthUnhealthy || !strings.Contains(final.Err, "unhealthy container: health check failed 3 times") {
		t.Fatalf("final %+v", final)
	}
	mu2.Lock()
	defer mu2.Unlock()
	if strings.Join(healths, ",") != "starting,healthy,unhealthy" {
		t.Fatalf("health states %v", healths)
	}
}

func TestHealthFailuresInStartPeriodDoNotCount(t *testing.T) {
	f := &agent.FakeExecutor{ExecResult: func(string, []string) int { return 1 }}
	tk := task("s", "x")
	tk.Spec.Healthcheck = &api.HealthConfig{Test: []string{"CMD-SHELL", "false"}, Interval: 10 * time.Millisecond, Retries: 1, StartPeriod: 200 * time.Millisecond}
	t0 := time.Now()
	final := (&agent.Runner{Executor: f}).Run(context.Background(), tk)
	if final.State != api.TaskFailed || time.Since(t0) < 200*time.Millisecond {
		t.Fatalf("unhealthy after %v (start period 200ms): %+v", time.Since(t0), final)
	}
}

// Resume takes over a task an earlier agent started: it does not start it
// again, watches it to its end, and stops it when told; a task that ended
// or vanished while no agent watched is reported so.
func TestRunnerResumesAdoptedTasks(t *testing.T) {
	ctx := context.Background()
	f := &agent.FakeExecutor{}
	// An earlier agent prepared and started these.
	for _, id := range []string{"runs", "stops", "ended"} {
		if err := f.Prepare(ctx, task(id, "app")); err != nil {
			t.Fatal(err)
		}
		if err := f.Start(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	f.Exit("ended", 0)
	adopted := func(id string) *api.Task {
		tk := task(id, "app")
		tk.Status = api.TaskStatus{State: api.TaskRunning}
		return tk
	}

	rec := &recorder{}
	done := make(chan api.TaskStatus, 1)
	go func() { done <- (&agent.Runner{Executor: f, Report: rec.report}).Resume(ctx, adopted("runs")) }()
	f.Exit("runs", 2) // before or after Resume looks: the end is reported either way
	if final := <-done; final.State != api.TaskFailed || final.ExitCode != 2 {
		t.Fatalf("adopted task that exited 2: %+v", final)
	}
	if f.Starts("runs") != 1 {
		t.Fatalf("the adopted task was started again (%d starts)", f.Starts("runs"))
	}

	sctx, stop := context.WithCancel(ctx)
	rec = &recorder{}
	go func() { done <- (&agent.Runner{Executor: f, Report: rec.report}).Resume(sctx, adopted("stops")) }()
	stop()
	if final := <-done; final.State != api.TaskShutdown || final.ExitCode != 143 {
		t.Fatalf("adopted task told to stop: %+v", final)
	}

	if final := (&agent.Runner{Executor: f}).Resume(ctx, adopted("ended")); final.State != api.TaskComplete {
		t.Fatalf("adopted task that ended meanwhile: %+v", final)
	}
	if final := (&agent.Runner{Executor: f}).Resume(ctx, adopted("gone")); final.State != api.TaskFailed || !strings.Contains(final.Err, "gone") {
		t.Fatalf("adopted task whose container is gone: %+v", final)
	}
}

// graceRecorder records the grace period the runner gives Shutdown.
type graceRecorder struct {
	*agent.FakeExecutor
	mu    sync.Mutex
	grace []time.Duration
}

func (g *graceRecorder) Shutdown(ctx context.Context, id string, grace time.Duration) error {
	g.mu.Lock()
	g.grace = append(g.grace, grace)
	g.mu.Unlock()
	return g.FakeExecutor.Shutdown(ctx, id, grace)
}

// A task is given its own stop grace period, or Docker's 10 s without one.
func TestRunnerStopGracePeriod(t *testing.T) {
	three := 3 * time.Second
	for _, c := range []struct {
		spec *time.Duration
		want time.Duration
	}{{nil, 10 * time.Second}, {&three, three}} {
		g := &graceRecorder{FakeExecutor: &agent.FakeExecutor{}}
		tk := task("g", "x")
		tk.Spec.StopGracePeriod = c.spec
		ctx, cancel := context.WithCancel(context.Background())
		rec := &recorder{}
		done := make(chan api.TaskStatus)
		go func() { done <- (&agent.Runner{Executor: g, Report: rec.report}).Run(ctx, tk) }()
		waitfor.True(t, "running", func() bool { return slices.Contains(rec.got(), api.TaskRunning) })
		cancel()
		if final := <-done; final.State != api.TaskShutdown {
			t.Fatalf("final %+v", final)
		}
		g.mu.Lock()
		got := slices.Clone(g.grace)
		g.mu.Unlock()
		if len(got) != 1 || got[0] != c.want {
			t.Fatalf("spec grace %v: Shutdown got %v, want [%v]", c.spec, got, c.want)
		}
	}
}

// probeCounter answers health probes: healthy until the first healthy
// report, failing after, and counts the failing ones.
type probeCounter struct {
	mu       sync.Mutex
	failing  bool
	failures int
}

func (p *probeCounter) exec(string, []string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failing {
		p.failures++
		return 1
	}
	return 0
}

func (p *probeCounter) report(u agent.StatusUpdate) {
	if u.Status.Health == agent.HealthHealthy {
		p.mu.Lock()
		p.failing = true
		p.mu.Unlock()
	}
}

// Without Retries, a task is unhealthy after Docker's 3 failed probes in a
// row: not fewer, and no probe runs after that.
func TestHealthDefaultRetries(t *testing.T) {
	p := &probeCounter{}
	tk := task("r", "x")
	tk.Spec.Healthcheck = &api.HealthConfig{Test: []string{"CMD", "check"}, Interval: 10 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	final := (&agent.Runner{Executor: &agent.FakeExecutor{ExecResult: p.exec}, Report: p.report}).Run(ctx, tk)
	p.mu.Lock()
	defer p.mu.Unlock()
	if final.State != api.TaskFailed || p.failures != 3 || !strings.Contains(final.Err, "failed 3 times in a row") {
		t.Fatalf("final %+v after %d failed probes, want FAILED after 3", final, p.failures)
	}
}

// Once a probe succeeds, the start period is over: failures count at once,
// even while the start period would still run.
func TestHealthSuccessEndsStartPeriod(t *testing.T) {
	p := &probeCounter{}
	tk := task("sp", "x")
	tk.Spec.Healthcheck = &api.HealthConfig{Test: []string{"CMD", "check"}, Interval: 10 * time.Millisecond, Retries: 2, StartPeriod: time.Hour}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	final := (&agent.Runner{Executor: &agent.FakeExecutor{ExecResult: p.exec}, Report: p.report}).Run(ctx, tk)
	if final.State != api.TaskFailed || final.Health != agent.HealthUnhealthy {
		t.Fatalf("failing after a success in the start period: %+v, want FAILED unhealthy", final)
	}
}

// hungProbes is an executor whose health probes never answer on their own.
type hungProbes struct{ *agent.FakeExecutor }

func (h hungProbes) Exec(ctx context.Context, id string, cmd []string) (int, []byte, error) {
	<-ctx.Done()
	return -1, nil, ctx.Err()
}

// A probe that does not answer within Timeout counts as failed.
func TestHealthProbeTimeout(t *testing.T) {
	tk := task("hung", "x")
	tk.Spec.Healthcheck = &api.HealthConfig{Test: []string{"CMD", "check"}, Interval: 10 * time.Millisecond, Timeout: 20 * time.Millisecond, Retries: 2}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	final := (&agent.Runner{Executor: hungProbes{&agent.FakeExecutor{}}}).Run(ctx, tk)
	if final.State != api.TaskFailed || !strings.Contains(final.Err, "failed 2 times in a row: context deadline exceeded") {
		t.Fatalf("hung probes: %+v, want FAILED after 2 timed-out probes", final)
	}
}
