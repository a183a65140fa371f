package swarm_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/testimages"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// collectLogs runs a logs request to its end.
func collectLogs(t *testing.T, ctx context.Context, m *swarm.Manager, svc string, opts swarm.LogOptions) []swarm.LogMessage {
	t.Helper()
	var out []swarm.LogMessage
	if err := m.ServiceLogs(ctx, svc, opts, func(l swarm.LogMessage) error { out = append(out, l); return nil }); err != nil {
		t.Fatalf("service logs %+v: %v", opts, err)
	}
	return out
}

// linesOf are a task's lines of a stream (all streams when stream is "").
func linesOf(msgs []swarm.LogMessage, task, stream string) []string {
	var out []string
	for _, m := range msgs {
		if m.TaskID == task && m.Warning == "" && (stream == "" || m.Stream == stream) {
			out = append(out, m.Line)
		}
	}
	return out
}

// Service logs on real containers: one task on an in-process worker, one
// on a worker process (its lines reach the leader over mutual TLS). Every
// line comes with its task, node, service and slot; stdout and stderr
// are told apart and selected; tail is per task; follow gets lines
// printed after the request and ends when its caller goes away, on the
// leader and on the nodes. Then the worker process is killed with
// SIGKILL: a request returns the other task's lines and names the task it
// could not read, within a bound.
func TestServiceLogsOnContainerd(t *testing.T) {
	c, d := containerdCluster(t, "node0")
	ctx := context.Background()
	child := childWorker(t, workerProcessEnv(t, c, d, "node1"))
	spec := service("talker", api.Replicated(2))
	spec.TaskTemplate.Image, spec.TaskTemplate.Args = testimages.AppRef, []string{"talk", "3", "100ms"}
	spec.TaskTemplate.Placement = &api.Placement{MaxReplicas: 1}
	svc := create(t, c, spec)
	c.WaitFor("2 tasks running, one per node", func() bool { return len(c.Running(svc.ID)) == 2 })
	tasks := c.Running(svc.ID)
	slices.SortFunc(tasks, func(a, b *api.Task) int { return strings.Compare(a.NodeID, b.NodeID) })
	if tasks[0].NodeID != "node0" || tasks[1].NodeID != "node1" {
		t.Fatalf("tasks on %s and %s, want node0 and node1", tasks[0].NodeID, tasks[1].NodeID)
	}
	m := c.Leader()
	c.WaitFor("both tasks ticking", func() bool {
		msgs := collectLogs(t, ctx, m, svc.ID, swarm.LogOptions{})
		for _, tk := range tasks {
			if !slices.Contains(linesOf(msgs, tk.ID, ""), "tick 2") {
				return false
			}
		}
		return true
	})

	msgs := collectLogs(t, ctx, m, "talker", swarm.LogOptions{})
	for _, tk := range tasks {
		if out := linesOf(msgs, tk.ID, swarm.StreamStdout); len(out) < 5 || fmt.Sprint(out[:5]) != "[out 1 out 2 out 3 tick 1 tick 2]" {
			t.Fatalf("stdout of %s: %q", tk.ID, out)
		}
		if errs := linesOf(msgs, tk.ID, swarm.StreamStderr); fmt.Sprint(errs) != "[err 1 err 2 err 3]" {
			t.Fatalf("stderr of %s: %q", tk.ID, errs)
		}
	}
	for _, l := range msgs {
		tk := tasks[slices.IndexFunc(tasks, func(x *api.Task) bool { return x.ID == l.TaskID })]
		if l.NodeID != tk.NodeID || l.ServiceID != svc.ID || l.Slot != tk.Slot || l.Warning != "" || time.Since(l.Time) > time.Minute {
			t.Fatalf("message %+v of task %s (node %s, slot %d)", l, tk.ID, tk.NodeID, tk.Slot)
		}
	}
	// stderr only; tail per task.
	msgs = collectLogs(t, ctx, m, svc.ID, swarm.LogOptions{Stderr: true})
	if len(msgs) != 6 || len(linesOf(msgs, tasks[1].ID, swarm.StreamStderr)) != 3 {
		t.Fatalf("stderr only: %+v", msgs)
	}
	msgs = collectLogs(t, ctx, m, svc.ID, swarm.LogOptions{Tail: 2})
	for _, tk := range tasks {
		if out := linesOf(msgs, tk.ID, ""); len(out) != 2 || !strings.HasPrefix(out[0], "tick ") {
			t.Fatalf("tail 2 of %s: %q", tk.ID, out)
		}
	}

	// Follow: the ticks printed after the request, from both nodes.
	last := map[string]int{} // the last tick of each task before the follow
	pre := collectLogs(t, ctx, m, svc.ID, swarm.LogOptions{Tail: 1})
	for _, tk := range tasks {
		for _, l := range linesOf(pre, tk.ID, "") {
			var k int
			fmt.Sscanf(l, "tick %d", &k)
			last[tk.ID] = k
		}
	}
	fctx, stop := context.WithCancel(ctx)
	followed := map[string][]string{}
	done := make(chan error, 1)
	go func() {
		done <- m.ServiceLogs(fctx, svc.ID, swarm.LogOptions{Follow: true, Tail: swarm.TailNone}, func(l swarm.LogMessage) error {
			followed[l.TaskID] = append(followed[l.TaskID], l.Line)
			var k int
			if fmt.Sscanf(l.Line, "tick %d", &k); k > last[l.TaskID]+3 && len(followed) == 2 && len(followed[tasks[0].ID]) > 3 && len(followed[tasks[1].ID]) > 3 {
				stop() // enough from both
			}
			return nil
		})
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		stop()
		<-done
		t.Fatalf("follow did not get ticks from both tasks: %v", followed)
	}
	for _, tk := range tasks {
		var k int
		if fmt.Sscanf(followed[tk.ID][0], "tick %d", &k); k <= last[tk.ID] {
			t.Fatalf("follow of %s started with %q, a line from before the request (tick %d was there)", tk.ID, followed[tk.ID][0], last[tk.ID])
		}
	}
	// The caller went away: the leader and both nodes drop the request.
	c.WaitFor("the follow forgotten on the leader and node0", func() bool {
		return m.Stats().LogRequests == 0 && c.Worker("node0").LogReads() == 0
	})

	// The worker process killed: node1's task cannot be read; the request
	// still ends, with node0's task's lines and a warning for the other.
	child.Process.Signal(syscall.SIGKILL)
	child.Wait()
	start := time.Now()
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	msgs = collectLogs(t, rctx, m, svc.ID, swarm.LogOptions{})
	took := time.Since(start)
	if rctx.Err() != nil {
		t.Fatalf("the request with a node killed ran out its %v", 30*time.Second)
	}
	if out := linesOf(msgs, tasks[0].ID, swarm.StreamStdout); len(out) < 5 {
		t.Fatalf("node0's task's lines: %q", out)
	}
	warned := slices.DeleteFunc(slices.Clone(msgs), func(l swarm.LogMessage) bool { return l.Warning == "" })
	if len(warned) != 1 || warned[0].TaskID != tasks[1].ID || warned[0].NodeID != "node1" || !strings.Contains(warned[0].Warning, "node1") {
		t.Fatalf("warnings %+v, want one for task %s on node1", warned, tasks[1].ID)
	}
	if msgs[len(msgs)-1].Warning == "" {
		t.Fatalf("the warning is not after the lines: %+v", msgs[len(msgs)-1])
	}
	t.Logf("a logs request with a killed node took %v: %s", took, warned[0].Warning)
}
