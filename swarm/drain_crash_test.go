package swarm_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/testimages"
	"github.com/shoalproject/shoal/internal/waitfor"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// Drains through real failures: node processes on network-namespace hosts
// with real containers (netCluster), killed with SIGKILL while a task
// drains. One node's confirmations are held back by stopping its process
// (SIGSTOP): the heartbeat period is long (seconds, so that it is not
// marked down meanwhile), and a drain waits for it until it runs again.

// drainLab is a netCluster whose w1 runs web (published port 8080: a
// backend on every node) and bystander (no endpoint), one task each.
type drainLab struct {
	*netCluster
	web, bystander *api.Service
}

func newDrainLab(t *testing.T, managers int, managersTimeout, heartbeat time.Duration) *drainLab {
	t.Helper()
	if testing.Short() {
		t.Skip("a cluster of node processes with real containers")
	}
	c := newNetClusterEnv(t, managers, 2, []string{"SHOAL_TEST_HEARTBEAT=" + heartbeat.String(), "SHOAL_TEST_DRAIN_TIMEOUT=" + managersTimeout.String()})
	ctx := context.Background()
	onW1 := &api.Placement{Constraints: []string{"node.id==" + c.nodes["w1"].proc.info.ID}}
	app := func(name string, args ...string) api.ServiceSpec {
		s := service(name, api.Replicated(1))
		s.TaskTemplate.Image, s.TaskTemplate.Args, s.TaskTemplate.Placement = testimages.AppRef, args, onW1
		return s
	}
	web := app("web", "http", ":80")
	web.EndpointSpec = &api.EndpointSpec{Ports: []api.PortConfig{{TargetPort: 80, PublishedPort: 8080}}}
	l := &drainLab{netCluster: c}
	l.web = mustCreate[*api.Service](t, "web")(c.client.CreateService(ctx, web))
	l.bystander = mustCreate[*api.Service](t, "bystander")(c.client.CreateService(ctx, app("bystander", "sleep")))
	l.one(t, l.bystander)
	return l
}

// one waits for the service's one running task (with its pid) and
// returns it.
func (l *drainLab) one(t *testing.T, svc *api.Service) *api.Task {
	t.Helper()
	var tk *api.Task
	waitfor.True(t, svc.Spec.Name+" running", func() bool {
		ts := running(t, l.client, svc.ID)
		if len(ts) == 1 && ts[0].Status.PID > 0 {
			tk = ts[0]
		}
		return tk != nil
	})
	return tk
}

// stopWeb holds w2's confirmations (its process stopped), scales web to 0
// and returns web's task once its stop is committed, and when that was
// seen; w2 runs again when the returned func is called (or the test ends).
func (l *drainLab) stopWeb(t *testing.T) (tk *api.Task, since time.Time, resume func()) {
	t.Helper()
	ctx := context.Background()
	tk = l.one(t, l.web)
	w2 := l.nodes["w2"].proc.cmd.Process.Pid // nsenter execs the node: its pid
	if err := syscall.Kill(w2, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resume = func() { syscall.Kill(w2, syscall.SIGCONT) }
	t.Cleanup(resume)
	if _, err := l.client.ScaleService(ctx, "web", 0); err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, "web's task told to stop", func() bool {
		cur, err := l.client.Task(ctx, tk.ID)
		return err == nil && cur.DesiredState > api.TaskRunning
	})
	return tk, time.Now(), resume
}

func procAlive(pid int) bool { return syscall.Kill(pid, 0) == nil }

// aliveFor fails the test if pid ends within d.
func aliveFor(t *testing.T, pid int, d time.Duration, what string) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if !procAlive(pid) {
			t.Fatalf("%s: its process ended", what)
		}
	}
}

// diedAt waits until pid ends and says when (to within the poll).
func diedAt(t *testing.T, pid int, what string) time.Time {
	t.Helper()
	var at time.Time
	waitfor.True(t, what, func() bool {
		if procAlive(pid) {
			return false
		}
		at = time.Now()
		return true
	})
	return at
}

// Every manager killed (kill -9) while a task drains: nobody will say it
// drained, and the worker stops it after its own bound, which it derived
// from the managers' DrainTimeout sent in its session (3 s + the margin,
// not the 15 s default; the worker process has no drain setting), then
// only the linger's 1 s floor (the task has no client); its other task
// keeps running.
func TestDrainWorkerBoundWithoutManagers(t *testing.T) {
	const managersTimeout = 3 * time.Second
	l := newDrainLab(t, 1, managersTimeout, 2*time.Second)
	by := l.one(t, l.bystander)
	tk, since, _ := l.stopWeb(t)
	// The stop reaches w1 within milliseconds of the commit (if it did
	// not, web's task never stops, below).
	time.Sleep(300 * time.Millisecond)
	l.nodes["m0"].proc.kill()
	died := diedAt(t, tk.Status.PID, "web's task stopped by the worker's own bound").Sub(since)
	// The linger after the bound ends at its floor (DefaultFixedDrainDelay)
	// when the task has no client connection (none here), well before
	// DefaultDrainDelay: a fixed linger of that length fails the check.
	bound := managersTimeout + swarm.DrainTimeoutMargin
	t.Logf("web's task stopped %v after its stop was committed (the worker's bound: %v)", died.Round(10*time.Millisecond), bound)
	// The stop came at least the bound after the commit (less the time it
	// took to see the commit), and well before the default bound, or the
	// bound with a full linger, would have ended.
	if died < bound-time.Second || died >= min(swarm.DefaultWorkerDrainTimeout, bound+swarm.DefaultDrainDelay-time.Second) {
		t.Fatalf("web's task stopped %v after its stop; want about %v (the managers' DrainTimeout %v + %v, then the linger's floor only: no client)",
			died, bound, managersTimeout, swarm.DrainTimeoutMargin)
	}
	if !procAlive(by.Status.PID) {
		t.Fatal("the bystander task ended with the managers")
	}
}

// A worker killed (kill -9) while its task drains and restarted from the
// same data dir adopts the task, still told to stop, and drains it again:
// it stops only once every node confirmed (w2, held back until then), not
// at the restart. The leader killed while a task waits for confirmations:
// the new leader's book (its versions above the old one's) collects them
// again, and the task stops once w2, held back, has confirmed (and the
// dead leader's node is marked down), not when the new leader takes over.
func TestDrainThroughCrashes(t *testing.T) {
	// The managers' bound is long: what ends each wait here is the
	// confirmations. The heartbeat is slow so that w2, stopped for a few
	// seconds, is not marked down meanwhile (12 s).
	const managersTimeout = 20 * time.Second
	l := newDrainLab(t, 3, managersTimeout, 4*time.Second)
	ctx := context.Background()
	// hold is how long a stopped task must still run, with w2 held back,
	// once the failure is over: more than the linger, so that a stop at
	// the restart or the takeover would show.
	const hold = 2500 * time.Millisecond

	t.Run("worker killed mid-drain", func(t *testing.T) {
		by := l.one(t, l.bystander)
		tk, since, resume := l.stopWeb(t)
		time.Sleep(300 * time.Millisecond) // the stop reaches w1
		w1 := l.nodes["w1"]
		w1.proc.kill()
		l.start("w1", w1.host, "start", "", "")
		aliveFor(t, tk.Status.PID, hold, "web's task after its worker restarted, before w2 confirmed")
		if waited := time.Since(since); waited >= managersTimeout-time.Second {
			t.Fatalf("the restart took %v: the managers' bound, not w2, may have ended the drain", waited)
		}
		resume()
		diedAt(t, tk.Status.PID, "web's task stopped once w2 confirmed")
		if cur, err := l.client.Task(ctx, by.ID); err != nil || cur.Status.State != api.TaskRunning || !procAlive(by.Status.PID) {
			t.Fatalf("the bystander after the worker's restart: %+v %v (want running, adopted)", cur, err)
		}
		waitfor.True(t, "web's task reported shut down", func() bool {
			cur, err := l.client.Task(ctx, tk.ID)
			return err == nil && cur.Status.State > api.TaskRunning
		})
	})

	t.Run("leader killed mid-drain", func(t *testing.T) {
		if _, err := l.client.ScaleService(ctx, "web", 1); err != nil {
			t.Fatal(err)
		}
		tk, _, resume := l.stopWeb(t)
		time.Sleep(300 * time.Millisecond)
		var managers []*procNode
		for _, name := range []string{"m0", "m1", "m2"} {
			managers = append(managers, l.nodes[name].proc)
		}
		leader := leaderOf(t, l.client, managers)
		leader.kill()
		var survivors []*procNode
		for _, m := range managers {
			if m != leader {
				survivors = append(survivors, m)
			}
		}
		leaderOf(t, l.client, survivors)
		aliveFor(t, tk.Status.PID, hold, "web's task after the leader changed, before w2 confirmed")
		resume()
		diedAt(t, tk.Status.PID, "web's task stopped once the new leader had every confirmation")
	})
}
