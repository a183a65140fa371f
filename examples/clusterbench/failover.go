package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"syscall"
	"time"

	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// Figures 1, 2 and 3, on one cluster of three managers that run tasks
// (fake executor), each a child process. Each kill is SIGKILL to the PID.
//
// A trial runs one of two variants of the killed node's service: the
// default restart policy (a replacement waits the restart delay, 5 s, as
// Docker's: the Docker figures include it) and a zero restart delay (what
// the failure detection and rescheduling alone take). Trials alternate
// between them; with -quick only the zero-delay one runs.

// variants are the restart policies the trials alternate between.
func (b *bench) variants() []bool {
	if b.o.quick {
		return []bool{true}
	}
	return []bool{false, true} // zeroDelay
}

func variantName(zeroDelay bool) string {
	if zeroDelay {
		return "restart delay 0"
	}
	return "restart delay 5 s (default)"
}

func (b *bench) failoverFigures(ctx context.Context) error {
	progress("figures 1-3: starting 3 managers (child processes, TLS on loopback, default timings)")
	c, err := b.startCluster(ctx, "ha", true)
	if err != nil {
		return err
	}
	defer c.stop()
	if b.want("failover") {
		if err := b.leaderKills(ctx, c); err != nil {
			return err
		}
	}
	if b.want("worker") {
		if err := b.workerKills(ctx, c); err != nil {
			return err
		}
	}
	return nil
}

// leaderKills measures figures 1 and 3: each trial kills the leader, which
// runs 10 of a service's 30 tasks, and times a write through a surviving
// manager and the leader's tasks RUNNING elsewhere.
func (b *bench) leaderKills(ctx context.Context, c *cluster) error {
	var writes samples
	moved := map[bool]samples{}
	var failedFast, failedSlow int
	var slowestFail time.Duration
	trial := 0
	for range b.o.trials {
		for _, zero := range b.variants() {
			trial++
			r, err := b.leaderKill(ctx, c, trial, zero)
			if err != nil {
				return fmt.Errorf("leader kill %d: %w", trial, err)
			}
			progress("figure 1/3 trial %d (%s): write accepted after %v, the leader's %d tasks running elsewhere after %v (its node down after %v)",
				trial, variantName(zero), r.write.Round(time.Millisecond), r.onLeader, r.moved.Round(time.Millisecond), r.down.Round(time.Millisecond))
			writes = append(writes, secs(r.write))
			moved[zero] = append(moved[zero], secs(r.moved))
			failedFast += r.failedFast
			failedSlow += r.failedSlow
			slowestFail = max(slowestFail, r.slowestFail)
		}
	}
	b.add(row{fig: "1", what: "leader kill -9 (3 managers): a write via a survivor accepted", got: writes, unit: "s", target: 2,
		ref: "Docker Swarm: 13.6 [9.7 .. 26.3] s, writes hang [A]"})
	for _, zero := range b.variants() {
		ref := "Docker Swarm: 48.8 [44.8 .. 60.8] s [A]"
		if zero {
			ref = "-"
		}
		b.add(row{fig: "3", what: "leader (10 tasks) kill -9: RUNNING elsewhere, " + variantName(zero), got: moved[zero], unit: "s", target: 5, ref: ref})
	}
	b.note("1: writes were attempted every 50 ms from the kill on (CreateService through one follower's address, each with a 20 s timeout);\n"+
		"%d failed in under 1 s, %d took longer (slowest failure %v): writes fail fast while there is no leader.", failedFast, failedSlow, slowestFail.Round(time.Millisecond))
	return nil
}

type leaderKillResult struct {
	write, moved, down     time.Duration
	onLeader               int
	failedFast, failedSlow int
	slowestFail            time.Duration
}

func (b *bench) leaderKill(ctx context.Context, c *cluster, trial int, zeroDelay bool) (leaderKillResult, error) {
	var r leaderKillResult
	leader, err := c.healthy(ctx)
	if err != nil {
		return r, err
	}
	cl, err := c.client()
	if err != nil {
		return r, err
	}
	const replicas = 30 // 10 a manager
	svc, err := cl.CreateService(ctx, serviceSpec(fmt.Sprintf("lk%d", trial), replicas, zeroDelay))
	if err != nil {
		return r, err
	}
	per, err := waitRunning(ctx, cl, svc.ID, replicas)
	if err != nil {
		return r, err
	}
	r.onLeader = per[leader.hello.ID]
	if r.onLeader == 0 {
		return r, fmt.Errorf("the leader runs none of the service's tasks: %v", per)
	}
	var follower *proc
	idx := -1
	for i, m := range c.mgrs {
		if m == leader {
			idx = i
		} else if follower == nil {
			follower = m
		}
	}
	probe, err := follower.client()
	if err != nil {
		return r, err
	}
	watch, err := follower.client()
	if err != nil {
		return r, err
	}
	dead := leader.hello.ID

	t0 := time.Now()
	if err := syscall.Kill(leader.pid, syscall.SIGKILL); err != nil {
		return r, err
	}
	type probeRes struct {
		d                      time.Duration
		failedFast, failedSlow int
		slowest                time.Duration
		err                    error
	}
	pc := make(chan probeRes, 1)
	go func() {
		var p probeRes
		p.d, p.failedFast, p.failedSlow, p.slowest, p.err = probeWrites(ctx, probe, fmt.Sprintf("probe%d", trial), t0)
		pc <- p
	}()
	r.moved, r.down, err = waitMoved(ctx, watch, svc.ID, dead, replicas, t0)
	p := <-pc
	<-leader.done
	if err != nil {
		return r, err
	}
	if p.err != nil {
		return r, p.err
	}
	r.write, r.failedFast, r.failedSlow, r.slowestFail = p.d, p.failedFast, p.failedSlow, p.slowest

	// The killed manager comes back from its data dir, as after a crash.
	back, err := b.spawn(ctx, fmt.Sprintf("%s-m%d", c.name, idx), c.dir(idx), c.args("-start")...)
	if err != nil {
		return r, err
	}
	c.mgrs[idx] = back
	if _, err := c.healthy(ctx); err != nil {
		return r, err
	}
	if cl, err = c.client(); err != nil {
		return r, err
	}
	if err := removeService(ctx, cl, svc.ID); err != nil {
		return r, err
	}
	probes, err := cl.Services(ctx, swarm.Filter{Names: []string{fmt.Sprintf("probe%d-", trial)}})
	if err != nil {
		return r, err
	}
	for _, s := range probes {
		if err := cl.RemoveService(ctx, s.ID); err != nil {
			return r, err
		}
	}
	return r, nil
}

// probeWrites sends a write (a service of no replicas) through cl every
// 50 ms, each in its own call, until one is accepted; it returns how long
// after t0 that was, and how the failed ones failed.
func probeWrites(ctx context.Context, cl *swarm.Client, prefix string, t0 time.Time) (accepted time.Duration, failedFast, failedSlow int, slowest time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	type result struct {
		at   time.Time
		took time.Duration
		err  error
	}
	const maxOutstanding = 40
	res := make(chan result, maxOutstanding)
	outstanding, n := 0, 0
	launch := func() {
		n++
		outstanding++
		name := fmt.Sprintf("%s-%d", prefix, n)
		go func() {
			start := time.Now()
			actx, acancel := context.WithTimeout(ctx, 20*time.Second)
			_, err := cl.CreateService(actx, serviceSpec(name, 0, true))
			acancel()
			res <- result{at: time.Now(), took: time.Since(start), err: err}
		}()
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	launch()
	for {
		select {
		case r := <-res:
			outstanding--
			if r.err == nil {
				return r.at.Sub(t0), failedFast, failedSlow, slowest, nil
			}
			if errors.Is(r.err, api.ErrInvalidSpec) {
				return 0, 0, 0, 0, r.err
			}
			if ctx.Err() != nil {
				return 0, 0, 0, 0, fmt.Errorf("no write accepted within 2 minutes of the kill (last error: %v)", r.err)
			}
			if r.took < time.Second {
				failedFast++
			} else {
				failedSlow++
			}
			slowest = max(slowest, r.took)
		case <-tick.C:
			if outstanding < maxOutstanding {
				launch()
			}
		}
	}
}

// waitMoved waits until want of a service's tasks run on nodes other than
// dead, and notes when dead was marked down; both after t0.
func waitMoved(ctx context.Context, cl *swarm.Client, serviceID, dead string, want int, t0 time.Time) (moved, down time.Duration, err error) {
	deadline := t0.Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if down == 0 {
			if n, err := cl.Node(ctx, dead); err == nil && n.Status.State == api.NodeDown {
				down = time.Since(t0)
			}
		}
		per, _, err := runningOn(ctx, cl, serviceID)
		if err == nil {
			elsewhere := 0
			for node, k := range per {
				if node != dead {
					elsewhere += k
				}
			}
			if elsewhere >= want {
				return time.Since(t0), down, nil
			}
		}
		select {
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return 0, 0, fmt.Errorf("service %s: not %d running away from node %s within 2 minutes", serviceID, want, dead)
}

// workerKills measures figure 2: each trial starts a worker process, puts
// 10 tasks on it (the managers paused meanwhile), kills it, and times the
// 10 replacements RUNNING elsewhere.
func (b *bench) workerKills(ctx context.Context, c *cluster) error {
	moved := map[bool]samples{}
	var downs samples
	trial := 0
	for range b.o.trials {
		for _, zero := range b.variants() {
			trial++
			d, down, err := b.workerKill(ctx, c, trial, zero)
			if err != nil {
				return fmt.Errorf("worker kill %d: %w", trial, err)
			}
			progress("figure 2 trial %d (%s): 10 replacements running after %v (node down after %v)", trial, variantName(zero), d.Round(time.Millisecond), down.Round(time.Millisecond))
			moved[zero] = append(moved[zero], secs(d))
			downs = append(downs, secs(down))
		}
	}
	for _, zero := range b.variants() {
		ref := "Docker Swarm: 18.9 [17.0 .. 22.1] s [A]"
		if zero {
			ref = "-"
		}
		b.add(row{fig: "2", what: "worker (10 tasks) kill -9: 10 RUNNING elsewhere, " + variantName(zero), got: moved[zero], unit: "s", target: 5, ref: ref})
	}
	b.add(row{fig: "2", what: "  the killed worker shown down", got: downs, unit: "s", ref: "Docker Swarm: 13.1 [10.8 .. 15.9] s [A]"})
	return nil
}

func (b *bench) workerKill(ctx context.Context, c *cluster, trial int, zeroDelay bool) (moved, down time.Duration, err error) {
	if _, err := c.healthy(ctx); err != nil {
		return 0, 0, err
	}
	addrs := c.addrs()
	w, err := b.spawn(ctx, fmt.Sprintf("worker%d", trial), filepath.Join(b.tmp, c.name, fmt.Sprintf("w%d", trial)),
		"-join", c.tokens.Worker, "-addr", addrs[trial%len(addrs)], "-exec")
	if err != nil {
		return 0, 0, err
	}
	defer func() {
		if w.alive() {
			w.kill()
		}
	}()
	cl, err := c.client()
	if err != nil {
		return 0, 0, err
	}
	// Only the new worker may take the service's tasks.
	for _, m := range c.mgrs {
		if err := setAvailability(ctx, cl, m.hello.ID, api.NodePause); err != nil {
			return 0, 0, err
		}
	}
	const replicas = 10
	svc, err := cl.CreateService(ctx, serviceSpec(fmt.Sprintf("wk%d", trial), replicas, zeroDelay))
	if err != nil {
		return 0, 0, err
	}
	per, err := waitRunning(ctx, cl, svc.ID, replicas)
	if err != nil {
		return 0, 0, err
	}
	if per[w.hello.ID] != replicas {
		return 0, 0, fmt.Errorf("the worker runs %d of the %d tasks", per[w.hello.ID], replicas)
	}
	for _, m := range c.mgrs {
		if err := setAvailability(ctx, cl, m.hello.ID, api.NodeActive); err != nil {
			return 0, 0, err
		}
	}
	t0 := time.Now()
	w.kill()
	moved, down, err = waitMoved(ctx, cl, svc.ID, w.hello.ID, replicas, t0)
	if err != nil {
		return 0, 0, err
	}
	if err := removeService(ctx, cl, svc.ID); err != nil {
		return 0, 0, err
	}
	return moved, down, cl.RemoveNode(ctx, w.hello.ID, false)
}
