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
