package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/internal/procstat"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/ca"
)

// Figures 4 and 6, on a cluster of three managers (child processes, no
// tasks of their own) and fake workers in this process, each a
// swarm.Worker with its own certificate (got through the join protocol)
// and its own RemoteDispatcher: its own TLS session to the managers.

// fleet is the bench's in-process workers.
type fleet struct {
	b       *bench
	c       *cluster
	mu      sync.Mutex
	workers []*swarm.Worker
}

// grow joins workers until there are n, a few at a time.
func (f *fleet) grow(ctx context.Context, n int) error {
	f.mu.Lock()
	from := len(f.workers)
	f.mu.Unlock()
	if from >= n {
		return nil
	}
	addrs := f.c.addrs()
	const parallel = 8
	sem := make(chan struct{}, parallel)
	errs := make(chan error, n-from)
	var wg sync.WaitGroup
	for i := from; i < n; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			w, err := f.join(ctx, i, addrs)
			if err != nil {
				errs <- fmt.Errorf("worker %d: %w", i, err)
				return
			}
			f.mu.Lock()
			f.workers = append(f.workers, w)
			f.mu.Unlock()
		}()
		if ctx.Err() != nil {
			break
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return err
	}
	return ctx.Err()
}

// join gets a worker certificate with the worker token (a Node that joins
// and closes again: it would otherwise run its own loops, see the notes),
// then starts a Worker on it.
func (f *fleet) join(ctx context.Context, i int, addrs []string) (*swarm.Worker, error) {
	dir := filepath.Join(f.b.tmp, f.c.name, "workers", fmt.Sprintf("w%04d", i))
	n := &swarm.Node{Dir: dir}
	if err := n.Join(ctx, f.c.tokens.Worker, addrs[i%len(addrs)]); err != nil {
		return nil, err
	}
	id := n.ID()
	n.Close()
	cert, root, err := ca.Files{Dir: dir}.Load()
	if err != nil {
		return nil, err
	}
	w := &swarm.Worker{NodeID: id, Executor: &agent.FakeExecutor{},
		Dispatcher: &swarm.RemoteDispatcher{Addrs: addrs, TLS: ca.ClientConfig(cert, root, ca.RoleManager)},
		Description: api.NodeDescription{Hostname: fmt.Sprintf("fake%04d", i), Platform: api.Platform{OS: "linux", Architecture: "amd64"},
			Resources: api.Resources{NanoCPUs: 4e9, MemoryBytes: 8 << 30}}}
	if err := w.Start(ctx); err != nil {
		return nil, err
	}
	select {
	case <-w.Ready():
	case <-ctx.Done():
		w.Close()
		return nil, ctx.Err()
	case <-time.After(2 * time.Minute):
		w.Close()
		return nil, fmt.Errorf("worker %s: no assignments 2 minutes after registering", id)
	}
	return w, nil
}

func (f *fleet) close() {
	f.mu.Lock()
	ws := f.workers
	f.workers = nil
	f.mu.Unlock()
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Add(1)
		go func() { defer wg.Done(); w.Close() }()
	}
	wg.Wait()
}

// waitNodes waits until n nodes are ready.
func waitNodes(ctx context.Context, cl *swarm.Client, n int) error {
	deadline := time.Now().Add(2 * time.Minute)
	ready := 0
	for time.Now().Before(deadline) {
		nodes, err := cl.Nodes(ctx, swarm.Filter{})
		if err == nil {
			ready = 0
			for _, nd := range nodes {
				if nd.Status.State == api.NodeReady {
					ready++
				}
			}
			if ready >= n {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("%d of %d nodes ready after 2 minutes", ready, n)
}

// runWatch follows task events from one manager and keeps, per service,
// the tasks RUNNING (and meant to).
type runWatch struct {
	mu      sync.Mutex
	running map[string]map[string]bool
	wake    chan struct{}
	ended   chan struct{}
}

func watchRunning(ctx context.Context, cl *swarm.Client) (*runWatch, error) {
	evs, err := cl.Events(ctx, 0, "task")
	if err != nil {
		return nil, err
	}
	w := &runWatch{running: map[string]map[string]bool{}, wake: make(chan struct{}, 1), ended: make(chan struct{})}
	go func() {
		defer close(w.ended)
		for ev := range evs {
			var t api.Task
			if len(ev.Object) == 0 || json.Unmarshal(ev.Object, &t) != nil {
				continue
			}
			w.mu.Lock()
			set := w.running[t.ServiceID]
			if set == nil {
				set = map[string]bool{}
				w.running[t.ServiceID] = set
			}
			if ev.Action != "remove" && t.Status.State == api.TaskRunning && t.DesiredState == api.TaskRunning {
				set[t.ID] = true
			} else {
				delete(set, t.ID)
			}
			w.mu.Unlock()
			select {
			case w.wake <- struct{}{}:
			default:
			}
		}
	}()
	return w, nil
}

// count is how many of a service's tasks run.
func (w *runWatch) count(serviceID string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.running[serviceID])
}

// wait returns when n of a service's tasks run.
func (w *runWatch) wait(ctx context.Context, serviceID string, n int, limit time.Duration) error {
	deadline := time.After(limit)
	for {
		have := w.count(serviceID)
		if have >= n {
			return nil
		}
		select {
		case <-w.wake:
		case <-w.ended:
			return fmt.Errorf("the event stream ended with %d of %d running", have, n)
		case <-deadline:
			return fmt.Errorf("%d of %d running after %v", have, n, limit)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (b *bench) fleetFigures(ctx context.Context) error {
	progress("figures 4 and 6: starting 3 managers (child processes, no tasks of their own)")
	c, err := b.startCluster(ctx, "fleet", false)
	if err != nil {
		return err
	}
	defer c.stop()
	f := &fleet{b: b, c: c}
	defer f.close()
	if b.want("create") {
		if err := b.createFigure(ctx, c, f); err != nil {
			return err
		}
	}
	if b.want("fleet") {
		if err := b.steadyFigure(ctx, c, f); err != nil {
			return err
		}
	}
	return nil
}

// follower returns a manager that does not lead, and the leader.
func (c *cluster) roles(ctx context.Context) (leader, follower *proc, err error) {
	if leader, err = c.healthy(ctx); err != nil {
		return nil, nil, err
	}
	for _, m := range c.mgrs {
		if m != leader {
			return leader, m, nil
		}
	}
	return nil, nil, fmt.Errorf("no follower")
}

// createFigure measures figure 4: service create of o.replicas on
// o.workers workers, until all RUNNING (seen in the event stream of a
// follower, so the leader serves no polling).
func (b *bench) createFigure(ctx context.Context, c *cluster, f *fleet) error {
	t0 := time.Now()
	if err := f.grow(ctx, b.o.workers); err != nil {
		return err
	}
	progress("figure 4: %d workers joined and registered in %v", b.o.workers, time.Since(t0).Round(time.Millisecond))
	cl, err := c.client()
	if err != nil {
		return err
	}
	if err := waitNodes(ctx, cl, b.o.workers); err != nil {
		return err
	}
	leader, follower, err := c.roles(ctx)
	if err != nil {
		return err
	}
	fc, err := follower.client()
	if err != nil {
		return err
	}
	var got samples
	for trial := 1; trial <= b.o.trials; trial++ {
		wctx, cancel := context.WithCancel(ctx)
		w, err := watchRunning(wctx, fc)
		if err != nil {
			cancel()
			return err
		}
		profiled := b.o.profile != "" && trial == 1
		if profiled {
			go leader.ask(ctx, fmt.Sprintf("profile %s 3s", filepath.Join(b.o.profile, "create-leader.prof")), &nodeStatus{})
		}
		start := time.Now()
		svc, err := cl.CreateService(ctx, serviceSpec(fmt.Sprintf("create%d", trial), b.o.replicas, false))
		if err == nil {
			err = w.wait(ctx, svc.ID, b.o.replicas, 2*time.Minute)
		}
		d := time.Since(start)
		cancel()
		if err != nil {
			return fmt.Errorf("create %d: %w", trial, err)
		}
		progress("figure 4 trial %d: %d replicas on %d workers all running after %v", trial, b.o.replicas, b.o.workers, d.Round(time.Millisecond))
		got = append(got, secs(d))
		if err := removeService(ctx, cl, svc.ID); err != nil {
			return err
		}
	}
	b.add(row{fig: "4", what: fmt.Sprintf("service create, %d replicas on %d workers: all RUNNING", b.o.replicas, b.o.workers),
		got: got, unit: "s", target: 2, ref: "Docker Swarm, 12 real containers on 4 nodes: 3.5 [3.3 .. 4.4] s [A]"})
	return nil
}

// steadyFigure measures figure 6: o.fleet workers and o.fleetTasks tasks;
// the leader's RSS and CPU over o.steady, once all run and the cluster has
// kept one leader, in one term, with every node ready, for a while.
func (b *bench) steadyFigure(ctx context.Context, c *cluster, f *fleet) error {
	leader0, st0, err := c.leaderStatus(ctx)
	if err != nil {
		return err
	}
	t0 := time.Now()
	join, err := b.startWave(ctx, c, "join", st0.Term)
	if err != nil {
		return err
	}
	if err := f.grow(ctx, b.o.fleet); err != nil {
		return err
	}
	progress("figure 6: %d workers joined and registered in %v", b.o.fleet, time.Since(t0).Round(time.Millisecond))
	if err := join.end(ctx, b, c); err != nil {
		return err
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	if err := waitNodes(ctx, cl, b.o.fleet); err != nil {
		return err
	}
	_, follower, err := c.roles(ctx)
	if err != nil {
		return err
	}
	fc, err := follower.client()
	if err != nil {
		return err
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := watchRunning(wctx, fc)
	if err != nil {
		return err
	}
	_, stJoined, err := c.leaderStatus(ctx)
	if err != nil {
		return err
	}
	startWave, err := b.startWave(ctx, c, "start", stJoined.Term)
	if err != nil {
		return err
	}
	start := time.Now()
	svc, err := cl.CreateService(ctx, serviceSpec("steady", b.o.fleetTasks, false))
	if err != nil {
		return err
	}
	if err := w.wait(ctx, svc.ID, b.o.fleetTasks, 10*time.Minute); err != nil {
		return err
	}
	converge := time.Since(start)
	if err := startWave.end(ctx, b, c); err != nil {
		return err
	}
	progress("figure 6: %d tasks on %d workers all running after %v; waiting for a steady state", b.o.fleetTasks, b.o.fleet, converge.Round(time.Millisecond))
	// The event stream (from a follower) goes on telling which tasks run:
	// a list of 20,000 tasks is more than the Client reads in one answer.
	running := func() int { return w.count(svc.ID) }
	leader, st1, err := c.steady(ctx, cl, b.o.fleet, running, b.o.fleetTasks, min(b.o.steady, 10*time.Second))
	if err != nil {
		return err
	}
	if leader != leader0 || st1.Term != st0.Term {
		b.note("6: while the workers joined and the tasks started, leadership changed: term %d -> %d, leader %s -> %s;\n"+
			"see the managers' logs with -keep (raft: \"failed to contact quorum of nodes, stepping down\", swarm: \"node down\").",
			st0.Term, st1.Term, leader0.name, leader.name)
	}

	if b.o.profile != "" {
		go leader.ask(ctx, fmt.Sprintf("profile %s %v", filepath.Join(b.o.profile, "steady-leader.prof"), b.o.steady), &nodeStatus{})
	}
	before := make([]int64, len(c.mgrs))
	for i, m := range c.mgrs {
		if before[i], err = cpuTicks(m.pid); err != nil {
			return err
		}
	}
	selfBefore, _ := cpuTicks(os.Getpid())
	tStart := time.Now()
	select {
	case <-time.After(b.o.steady):
	case <-ctx.Done():
		return ctx.Err()
	}
	interval := time.Since(tStart).Seconds()
	cpu := make([]float64, len(c.mgrs))
	rss := make([]float64, len(c.mgrs))
	for i, m := range c.mgrs {
		t, err := cpuTicks(m.pid)
		if err != nil {
			return err
		}
		cpu[i] = float64(t-before[i]) / clockTick / interval
		rss[i] = float64(procstat.RSSKB(m.pid)) / 1024
	}
	selfAfter, _ := cpuTicks(os.Getpid())
	fds := openFDs(leader.pid)
	peak := procstat.PeakRSSKB(leader.pid) / 1024
	li := slices.Index(c.mgrs, leader)
	last, st2, err := c.leaderStatus(ctx)
	if err != nil {
		return err
	}
	if last != leader || st2.Term != st1.Term {
		b.note("6: LEADERSHIP CHANGED during the measurement (term %d -> %d): the figures below mix two leaders.", st1.Term, st2.Term)
	}
	period := max(time.Second, time.Duration(b.o.fleet)*time.Second/swarm.DefaultHeartbeatsPerSecond)
	b.add(row{fig: "6", what: fmt.Sprintf("%d workers, %d tasks, steady: leader RSS", b.o.fleet, b.o.fleetTasks), got: samples{rss[li]}, unit: "MB", target: 1024, ref: "-"})
	b.add(row{fig: "6", what: fmt.Sprintf("%d workers, %d tasks, steady: leader CPU (%v)", b.o.fleet, b.o.fleetTasks, b.o.steady), got: samples{cpu[li]}, unit: "core", target: 0.5, ref: "-"})
	var others string
	for i, m := range c.mgrs {
		if i != li {
			others += fmt.Sprintf(" %s %.0f MB, %.2f core;", m.name, rss[i], cpu[i])
		}
	}
	b.note("6: all %d tasks RUNNING %v after the create; heartbeat period with %d nodes %v (the leader takes <= %d a second).\n"+
		"Leader: peak RSS %d MB, Go heap in use %d MB, stacks %d MB, Go runtime total %d MB, %d goroutines, %d open fds.\n"+
		"Followers:%s this process (the %d workers) %.2f core.",
		b.o.fleetTasks, converge.Round(time.Millisecond), b.o.fleet, period, swarm.DefaultHeartbeatsPerSecond,
		peak, st2.HeapInuse, st2.StackInuse, st2.GoSys, st2.Goroutines, fds,
		others, b.o.fleet, float64(selfAfter-selfBefore)/clockTick/interval)
	if b.o.profile != "" {
		var st nodeStatus
		if err := leader.ask(ctx, "heap "+filepath.Join(b.o.profile, "steady-leader.heap"), &st); err == nil && st.Err != "" {
			b.note("6: heap profile: %s", st.Err)
		}
	}
	return nil // the cluster goes with its tasks
}

// leaderStatus returns the leader and its status.
func (c *cluster) leaderStatus(ctx context.Context) (*proc, nodeStatus, error) {
	leader, err := c.healthy(ctx)
	if err != nil {
		return nil, nodeStatus{}, err
	}
	st, err := leader.status(ctx)
	return leader, st, err
}

// steady waits until the cluster has kept one leader in one term, every
// node ready and a service's tasks running, for d.
func (c *cluster) steady(ctx context.Context, cl *swarm.Client, nodes int, running func() int, tasks int, d time.Duration) (*proc, nodeStatus, error) {
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		l1, s1, err := c.leaderStatus(ctx)
		if err != nil {
			return nil, s1, err
		}
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return nil, s1, ctx.Err()
		}
		l2, s2, err := c.leaderStatus(ctx)
		if err != nil {
			return nil, s2, err
		}
		if l1 != l2 || s1.Term != s2.Term {
			progress("figure 6: leadership changed meanwhile (term %d -> %d); waiting again", s1.Term, s2.Term)
			continue
		}
		ns, err := cl.Nodes(ctx, swarm.Filter{})
		if err != nil {
			return nil, s2, err
		}
		ready := 0
		for _, n := range ns {
			if n.Status.State == api.NodeReady {
				ready++
			}
		}
		run := running()
		if ready >= nodes && run >= tasks {
			return l2, s2, nil
		}
		progress("figure 6: %d of %d nodes ready, %d of %d tasks running; waiting again", ready, nodes, run, tasks)
	}
	return nil, nodeStatus{}, errors.New("no steady state within 5 minutes")
}

// wave measures the managers through one phase of figure 6 (the workers
// joining, the tasks starting): the CPU each manager and this process
// (the workers' side) use, how long the managers' threads waited for a
// CPU (the kernel's run-queue wait: high when the machine is loaded,
// which is what makes a leader miss its Raft lease), the machine's load,
// and whether leadership changed; with -profile, a CPU profile of every
// manager over its first waveProfileFor.
type wave struct {
	name  string
	start time.Time
	load  string
	cpu   []int64 // CPU ticks at the start, by manager
	wait  []int64 // run-queue wait at the start, ns, by manager
	self  int64
	term0 uint64
}

// waveProfileFor is how long each manager is profiled as a wave starts.
const waveProfileFor = 30 * time.Second

func (b *bench) startWave(ctx context.Context, c *cluster, name string, term0 uint64) (*wave, error) {
	w := &wave{name: name, start: time.Now(), load: loadAvg(), cpu: make([]int64, len(c.mgrs)), wait: make([]int64, len(c.mgrs)), term0: term0}
	for i, m := range c.mgrs {
		var err error
		if w.cpu[i], err = cpuTicks(m.pid); err != nil {
			return nil, err
		}
		w.wait[i] = runQueueWait(m.pid)
		if b.o.profile != "" {
			go m.ask(ctx, fmt.Sprintf("profile %s %v", filepath.Join(b.o.profile, name+"-"+m.name+".prof"), waveProfileFor), &nodeStatus{})
		}
	}
	w.self, _ = cpuTicks(os.Getpid())
	return w, nil
}

// end notes what the wave cost and whether the term moved.
func (w *wave) end(ctx context.Context, b *bench, c *cluster) error {
	secs := time.Since(w.start).Seconds()
	var cores, waits string
	for i, m := range c.mgrs {
		t, err := cpuTicks(m.pid)
		if err != nil {
			return err
		}
		cores += fmt.Sprintf(" %s %.2f,", m.name, float64(t-w.cpu[i])/clockTick/secs)
		waits += fmt.Sprintf(" %s %.0f,", m.name, float64(runQueueWait(m.pid)-w.wait[i])/1e6/secs)
	}
	self, _ := cpuTicks(os.Getpid())
	leader, st, err := c.leaderStatus(ctx)
	if err != nil {
		return err
	}
	b.note("6: %s wave, %.0f s (load average at its start %s): CPU cores of the managers%s of this process %.2f;\n"+
		"the managers' threads waited for a CPU (ms per s)%s term %d -> %d by its end, leader %s.",
		w.name, secs, w.load, cores, float64(self-w.self)/clockTick/secs, waits, w.term0, st.Term, leader.name)
	progress("figure 6: %s wave: term %d -> %d, managers' cores%s run-queue wait ms/s%s", w.name, w.term0, st.Term, cores, waits)
	return nil
}

// runQueueWait is the time a process's threads have waited on a run
// queue, in ns (/proc/PID/task/*/schedstat, second field); 0 if unknown.
func runQueueWait(pid int) int64 {
	stats, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var sum int64
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var run, wait int64
		if _, err := fmt.Sscan(string(b), &run, &wait); err == nil {
			sum += wait
		}
	}
	return sum
}
