package swarm_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/internal/waitfor"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/swarmtest"
)

// readLogs reads a log stream to its end (or until n messages when n > 0).
func readLogs(t *testing.T, s *swarm.LogStream, n int) ([]swarm.LogMessage, error) {
	t.Helper()
	var out []swarm.LogMessage
	for n <= 0 || len(out) < n {
		m, err := s.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return out, err
		}
		out = append(out, m)
	}
	return out, nil
}

// tlsService creates a service of fake tasks and waits until they run.
func tlsService(t *testing.T, c *swarmtest.TLSCluster, name string, replicas uint64) (*api.Service, []*api.Task) {
	t.Helper()
	ctx := context.Background()
	cli := c.Client()
	svc, err := cli.CreateService(ctx, service(name, api.Replicated(replicas)))
	if err != nil {
		t.Fatal(err)
	}
	var running []*api.Task
	c.WaitFor(fmt.Sprintf("%d tasks of %s running", replicas, name), func() bool {
		ts, err := cli.Tasks(ctx, swarm.Filter{Services: []string{svc.ID}})
		if err != nil {
			return false
		}
		running = slices.DeleteFunc(ts, func(tk *api.Task) bool { return tk.Status.State != api.TaskRunning })
		return len(running) == int(replicas)
	})
	return svc, running
}

// settleTLS waits until the workers have applied what the managers
// decided until now: a probe service's task running on each worker.
func settleTLS(t *testing.T, c *swarmtest.TLSCluster) {
	t.Helper()
	ctx := context.Background()
	cli := c.Client()
	svc, err := cli.CreateService(ctx, service(fmt.Sprint("probe-", probes.Add(1)), api.Global()))
	if err != nil {
		t.Fatal(err)
	}
	c.WaitFor("the probe running everywhere", func() bool {
		ts, _ := cli.Tasks(ctx, swarm.Filter{Services: []string{svc.ID}})
		n := 0
		for _, tk := range ts {
			if tk.Status.State == api.TaskRunning {
				n++
			}
		}
		return n == len(c.Names())
	})
	cli.RemoveService(ctx, svc.ID)
}

// execOf finds the fake executor of the node a task runs on.
func execOf(c *swarmtest.TLSCluster, nodeID string) string {
	for _, nm := range c.Names() {
		if c.NodeID(nm) == nodeID {
			return nm
		}
	}
	return ""
}

// Service logs come from every node that runs a task, through a follower
// (which passes the request to the leader, the holder of the nodes'
// sessions), tagged with the task, node, service and slot; tail is per
// task; stream selection; task logs; bad input and unknown services are
// refused clearly.
func TestServiceLogsFromEveryNode(t *testing.T) {
	c := swarmtest.NewTLS(t, swarmtest.TLSOptions{Managers: 3, Workers: 2})
	ctx := context.Background()
	svc, tasks := tlsService(t, c, "talker", 4)
	for _, tk := range tasks {
		e := c.Exec(execOf(c, tk.NodeID))
		for i := 1; i <= 3; i++ {
			e.Log(tk.ID, "stdout", fmt.Sprintf("out %d of %s", i, tk.ID))
		}
		e.Log(tk.ID, "stderr", "err of "+tk.ID)
	}
	leader := c.LeaderName()
	follower := "m0"
	if leader == follower {
		follower = "m1"
	}
	cli := c.Node(follower).Client()
	s, err := cli.ServiceLogs(ctx, "talker", swarm.LogOptions{})
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := readLogs(t, s, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 4*5 { // started, 3 out, 1 err
		t.Fatalf("%d messages, want 20: %+v", len(msgs), msgs)
	}
	nodes := map[string]bool{}
	for _, tk := range tasks {
		var got []string
		for _, m := range msgs {
			if m.TaskID == tk.ID {
				if m.NodeID != tk.NodeID || m.ServiceID != svc.ID || m.Slot != tk.Slot || m.Warning != "" || m.Time.IsZero() {
					t.Fatalf("message %+v of task %s (node %s, slot %d)", m, tk.ID, tk.NodeID, tk.Slot)
				}
				got = append(got, m.Stream+":"+m.Line)
			}
		}
		want := []string{"stdout:started " + tk.ID, "stdout:out 1 of " + tk.ID, "stdout:out 2 of " + tk.ID, "stdout:out 3 of " + tk.ID, "stderr:err of " + tk.ID}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("task %s: %q, want %q", tk.ID, got, want)
		}
		nodes[tk.NodeID] = true
	}
	if len(nodes) < 2 {
		t.Fatalf("the tasks ran on %d node(s); the test wants several", len(nodes))
	}

	// Tail per task (over both streams, as in Docker), and stdout only.
	s, err = cli.ServiceLogs(ctx, svc.ID, swarm.LogOptions{Tail: 3, Stdout: true})
	if err != nil {
		t.Fatal(err)
	}
	msgs, err = readLogs(t, s, 0)
	if err != nil || len(msgs) != 8 {
		t.Fatalf("tail 3 of stdout: %d messages (%v), want 8", len(msgs), err)
	}
	for _, m := range msgs {
		if m.Stream != swarm.StreamStdout || !strings.HasPrefix(m.Line, "out 2") && !strings.HasPrefix(m.Line, "out 3") {
			t.Fatalf("tail 3 of stdout: %+v", m)
		}
	}
	s, err = cli.ServiceLogs(ctx, svc.ID, swarm.LogOptions{Stderr: true})
	if err != nil {
		t.Fatal(err)
	}
	if msgs, err = readLogs(t, s, 0); err != nil || len(msgs) != 4 || msgs[0].Stream != swarm.StreamStderr {
		t.Fatalf("stderr: %+v %v", msgs, err)
	}
	// One task.
	s, err = cli.TaskLogs(ctx, tasks[0].ID, swarm.LogOptions{Tail: 1})
	if err != nil {
		t.Fatal(err)
	}
	if msgs, err = readLogs(t, s, 0); err != nil || len(msgs) != 1 || msgs[0].Line != "err of "+tasks[0].ID {
		t.Fatalf("task logs tail 1: %+v %v", msgs, err)
	}
	// A task stopped by a scale down stays in the service's history, and
	// its logs stay readable (its node keeps its container).
	if _, err := cli.ScaleService(ctx, svc.ID, 3); err != nil {
		t.Fatal(err)
	}
	var stopped *api.Task
	c.WaitFor("a task shut down", func() bool {
		ts, _ := cli.Tasks(ctx, swarm.Filter{Services: []string{svc.ID}})
		for _, tk := range ts {
			if tk.Status.State == api.TaskShutdown {
				stopped = tk
				return true
			}
		}
		return false
	})
	settleTLS(t, c)
	s, err = cli.TaskLogs(ctx, stopped.ID, swarm.LogOptions{Stdout: true})
	if err != nil {
		t.Fatal(err)
	}
	if msgs, err = readLogs(t, s, 0); err != nil || len(msgs) < 4 || msgs[1].Line != "out 1 of "+stopped.ID {
		t.Fatalf("logs of a task in the history: %+v %v", msgs, err)
	}
	// Bad input.
	if _, err := cli.ServiceLogs(ctx, "nope", swarm.LogOptions{}); !errors.Is(err, swarm.ErrNotFound) {
		t.Fatalf("an unknown service: %v", err)
	}
	if _, err := cli.ServiceLogs(ctx, svc.ID, swarm.LogOptions{Tail: -5}); !errors.Is(err, api.ErrInvalidSpec) || !strings.Contains(err.Error(), "log tail -5") {
		t.Fatalf("tail -5: %v", err)
	}
}

// Follow gets the lines printed after the request, and the tasks started
// after it (a scale up); it ends when the service is removed, and the
// leader forgets the subscription when the caller goes away.
func TestServiceLogsFollow(t *testing.T) {
	c := swarmtest.NewTLS(t, swarmtest.TLSOptions{Managers: 1, Workers: 2})
	ctx := context.Background()
	cli := c.Client()
	svc, tasks := tlsService(t, c, "follow", 2)
	s, err := cli.ServiceLogs(ctx, svc.ID, swarm.LogOptions{Follow: true, Tail: swarm.TailNone})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan swarm.LogMessage, 100)
	ended := make(chan error, 1)
	go func() {
		for {
			m, err := s.Recv()
			if err != nil {
				ended <- err
				return
			}
			got <- m
		}
	}()
	want := func(line string) swarm.LogMessage {
		t.Helper()
		select {
		case m := <-got:
			if m.Line != line {
				t.Fatalf("followed %+v, want line %q", m, line)
			}
			return m
		case err := <-ended:
			t.Fatalf("follow ended: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatalf("line %q never came", line)
		}
		return swarm.LogMessage{}
	}
	// The subscriptions reach the nodes after the request starts: a
	// line printed before they do is a past line (tail none).
	time.Sleep(time.Second)
	tk := tasks[1]
	c.Exec(execOf(c, tk.NodeID)).Log(tk.ID, "stdout", "after the request")
	if m := want("after the request"); m.TaskID != tk.ID || m.Slot != tk.Slot {
		t.Fatalf("followed %+v from task %s", m, tk.ID)
	}
	// A new task of the service is followed too.
	if _, err := cli.ScaleService(ctx, svc.ID, 3); err != nil {
		t.Fatal(err)
	}
	m := want("started " + func() string {
		var id string
		c.WaitFor("the third task running", func() bool {
			ts, _ := cli.Tasks(ctx, swarm.Filter{Services: []string{svc.ID}})
			for _, x := range ts {
				if x.Slot == 3 && x.Status.State == api.TaskRunning {
					id = x.ID
					return true
				}
			}
			return false
		})
		return id
	}())
	if m.Slot != 3 {
		t.Fatalf("new task's line %+v", m)
	}
	// Removing the service ends the follow.
	if err := cli.RemoveService(ctx, svc.ID); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case <-got: // lines of the tasks stopping
			continue
		case err := <-ended:
			if !errors.Is(err, io.EOF) {
				t.Fatalf("follow ended with %v, want io.EOF", err)
			}
		case <-deadline:
			t.Fatal("the follow did not end with its service")
		}
		break
	}
	s.Close()
}

// BenchmarkAssignmentDuringLogBurst prints how long a new task takes to
// run on a worker (create to RUNNING, through the control API) while that
// worker streams a burst of logs to the leader, and without: the log path
// must not hold up assignments. Run with -benchtime=20x.
func BenchmarkAssignmentDuringLogBurst(b *testing.B) {
	for _, burst := range []bool{false, true} {
		b.Run(fmt.Sprint("burst=", burst), func(b *testing.B) {
			c := swarmtest.NewTLS(b, swarmtest.TLSOptions{Managers: 1, Workers: 1})
			ctx, stop := context.WithCancel(context.Background())
			defer stop()
			cli := c.Client()
			onWorker := &api.Placement{Constraints: []string{"node.role==worker"}}
			spec := service("talker", api.Replicated(1))
			spec.TaskTemplate.Placement = onWorker
			svc, err := cli.CreateService(ctx, spec)
			if err != nil {
				b.Fatal(err)
			}
			var talker *api.Task
			c.WaitFor("the talker running", func() bool {
				ts, _ := cli.Tasks(ctx, swarm.Filter{Services: []string{svc.ID}})
				for _, tk := range ts {
					if tk.Status.State == api.TaskRunning {
						talker = tk
					}
				}
				return talker != nil
			})
			e := c.Exec("node0")
			for i := range 200_000 {
				e.Log(talker.ID, "stdout", fmt.Sprintf("line %d of a burst of logs, long enough to weigh something on the wire", i))
			}
			lines := 0
			done := make(chan struct{})
			go func() {
				defer close(done)
				for burst && ctx.Err() == nil {
					s, err := cli.ServiceLogs(ctx, svc.ID, swarm.LogOptions{})
					if err != nil {
						return
					}
					for {
						if _, err := s.Recv(); err != nil {
							break
						}
						lines++
					}
					s.Close()
				}
			}()
			var took []time.Duration
			began := time.Now()
			b.ResetTimer()
			for i := range b.N {
				p := service(fmt.Sprint("probe-", i), api.Replicated(1))
				p.TaskTemplate.Placement = onWorker
				start := time.Now()
				ps, err := cli.CreateService(ctx, p)
				if err != nil {
					b.Fatal(err)
				}
				c.WaitFor("the probe running", func() bool {
					ts, _ := cli.Tasks(ctx, swarm.Filter{Services: []string{ps.ID}})
					return len(ts) == 1 && ts[0].Status.State == api.TaskRunning
				})
				took = append(took, time.Since(start))
				cli.RemoveService(ctx, ps.ID)
			}
			b.StopTimer()
			elapsed := time.Since(began)
			stop()
			<-done
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2].Milliseconds()), "ms-p50")
			b.ReportMetric(float64(took[len(took)*9/10].Milliseconds()), "ms-p90")
			b.ReportMetric(float64(lines)/elapsed.Seconds(), "loglines/s")
		})
	}
}

// fakeCloseLosingDispatcher is the real manager as a worker's dispatcher,
// except that the Close of a log request never reaches the worker, as when
// the node's queue at the leader is full (the broker drops it then).
type fakeCloseLosingDispatcher struct{ *swarm.Manager }

func (d fakeCloseLosingDispatcher) LogSubscriptions(ctx context.Context, nodeID string) (<-chan swarm.LogSubscription, error) {
	in, err := d.Manager.LogSubscriptions(ctx, nodeID)
	if err != nil {
		return nil, err
	}
	out := make(chan swarm.LogSubscription)
	go func() {
		defer close(out)
		for s := range in {
			if s.Close {
				continue
			}
			select {
			case out <- s:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// A follow of a task that prints nothing: the caller goes away and the
// leader's Close is lost. The node still gives the request's place back
// (it asks the leader whether the request stands), with no line ever sent.
func TestFollowOfASilentTaskEndsOnTheNodeWhenTheCallerLeaves(t *testing.T) {
	ctx := context.Background()
	m := startManager(t, &swarm.Manager{})
	ready(t, m)
	w := &swarm.Worker{NodeID: "node1", Executor: &agent.FakeExecutor{}, Dispatcher: fakeCloseLosingDispatcher{m}}
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	svc, err := m.CreateService(ctx, service("silent", api.Replicated(1)))
	if err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, "the task running", func() bool {
		ts, _ := m.Tasks(svc.ID)
		return len(ts) == 1 && ts[0].Status.State == api.TaskRunning
	})
	fctx, leave := context.WithCancel(ctx)
	done := make(chan error, 1)
	lines := 0
	go func() {
		done <- m.ServiceLogs(fctx, svc.ID, swarm.LogOptions{Follow: true, Tail: swarm.TailNone}, func(swarm.LogMessage) error { lines++; return nil })
	}()
	waitfor.True(t, "the node reading for the follow", func() bool { return w.LogReads() == 1 })
	leave()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, "the node's place for the request given back", func() bool {
		return w.LogReads() == 0 && m.Stats().LogRequests == 0
	})
	if lines != 0 {
		t.Fatalf("%d lines from a silent task", lines)
	}
}
