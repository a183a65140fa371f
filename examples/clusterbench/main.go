// Command clusterbench measures a Shoal cluster over the network, in one
// run, and prints the figures of the "swarm over the network" issue beside
// reference figures:
//
//  1. leader failover on 3 managers over mutual TLS on loopback: the leader
//     is killed with SIGKILL; the time until a write through a surviving
//     manager is accepted;
//  2. worker loss: a worker process running 10 tasks is killed; the time
//     until 10 replacements are RUNNING elsewhere;
//  3. leader loss when the leader runs tasks: the time until its tasks are
//     RUNNING elsewhere (measured on the same kills as figure 1);
//  4. service create of 1,000 replicas on 100 fake workers over real
//     sessions (TLS, RemoteDispatcher), until all RUNNING;
//  5. 10,000 registered nodes and one service of 100,000 replicas on an
//     in-process manager, until every task is ASSIGNED and committed, with
//     SwarmKit's scheduler harness (../shared/anchors/swarmkit-sched) built
//     and run in the same run for the ratio;
//  6. 2,000 fake workers with TLS sessions to 3 managers and 20,000 tasks:
//     the leader's RSS and CPU at steady state.
//
// Managers, and the workers that are killed, run as child processes (this
// binary re-executed with a hidden subcommand), so that a crash is a real
// SIGKILL of a process. Every figure is the median of repeated trials with
// min and max. Timings are Shoal's defaults (Raft timeouts, heartbeat
// period 1 s, restart delay 5 s), except where a row says otherwise.
//
//	go run ./examples/clusterbench              # the sizes (about 15 minutes on 2 cores)
//	go run ./examples/clusterbench -quick       # CI: tiny sizes, one trial, about 30 s
//	go run ./examples/clusterbench -only sched -profile /tmp/prof
//
// Docker Swarm figures printed beside these were measured by the programs
// in ../shared/anchors on this machine, not by this run; SwarmKit's
// scheduler harness is built and run by this run.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx)
	stop()
	if err != nil {
		log.Fatal(err)
	}
}

type options struct {
	quick       bool
	trials      int
	only        []string
	workers     int // figure 4
	replicas    int
	fleet       int // figure 6
	fleetTasks  int
	steady      time.Duration
	schedNodes  int // figure 5
	schedTasks  int
	schedRuns   int
	swarmkit    string
	profile     string
	keep        bool
	raftTimeout time.Duration
}

var parts = []string{"failover", "worker", "create", "fleet", "sched"}

// bench is one run: its temp dir, its children and its figures.
type bench struct {
	o    options
	self string
	tmp  string

	mu       sync.Mutex
	children map[int]<-chan struct{} // live children by PID, until reaped
	rows     []row
	notes    []string
}

func run(ctx context.Context) error {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case nodeCmd:
			return runNodeChild(ctx, os.Args[2:])
		case schedCmd:
			return runSchedChild(ctx, os.Args[2:])
		}
	}
	var o options
	var only string
	flag.BoolVar(&o.quick, "quick", false, "CI run: tiny sizes, one trial of each figure (about 30 s)")
	flag.IntVar(&o.trials, "trials", 5, "trials per figure and variant (figure 1 gets the kills of both figure 3 variants)")
	flag.StringVar(&only, "only", "", "comma-separated parts to run: "+strings.Join(parts, ","))
	flag.IntVar(&o.workers, "workers", 100, "figure 4: fake workers")
	flag.IntVar(&o.replicas, "replicas", 1000, "figure 4: replicas")
	flag.IntVar(&o.fleet, "fleet", 2000, "figure 6: fake workers")
	flag.IntVar(&o.fleetTasks, "fleet-tasks", 20000, "figure 6: tasks")
	flag.DurationVar(&o.steady, "steady", 30*time.Second, "figure 6: the steady-state interval the leader's CPU is measured over")
	flag.IntVar(&o.schedNodes, "sched-nodes", 10000, "figure 5: registered nodes")
	flag.IntVar(&o.schedTasks, "sched-tasks", 100000, "figure 5: replicas of the one service")
	flag.IntVar(&o.schedRuns, "sched-trials", 3, "figure 5: trials (each in a fresh child process), for Shoal and for SwarmKit")
	flag.StringVar(&o.swarmkit, "swarmkit", "../shared/anchors/swarmkit-sched", "SwarmKit's scheduler harness to build and run for figure 5; a relative path is tried from the working directory, the module root, then the main git checkout (empty: skip; skipped with -quick unless set explicitly)")
	flag.StringVar(&o.profile, "profile", "", "write CPU profiles here: the figure 5 child (and its heap once all is assigned), the leader during figures 4 and 6")
	flag.BoolVar(&o.keep, "keep", false, "keep the temp dir (data dirs and the children's logs)")
	flag.DurationVar(&o.raftTimeout, "raft-timeout", 0, "TUNE the managers' Raft heartbeat and election timeouts (lease: half) away from the defaults; the table says so")
	flag.Parse()
	explicit := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { explicit[f.Name] = true })
	if o.quick {
		set := func(name string, p *int, v int) {
			if !explicit[name] {
				*p = v
			}
		}
		set("trials", &o.trials, 1)
		set("workers", &o.workers, 10)
		set("replicas", &o.replicas, 100)
		set("fleet", &o.fleet, 40)
		set("fleet-tasks", &o.fleetTasks, 400)
		set("sched-nodes", &o.schedNodes, 1000)
		set("sched-tasks", &o.schedTasks, 10000)
		set("sched-trials", &o.schedRuns, 1)
		if !explicit["steady"] {
			o.steady = 2 * time.Second
		}
		if !explicit["swarmkit"] {
			o.swarmkit = ""
		}
	}
	if only != "" {
		for _, p := range strings.Split(only, ",") {
			if p = strings.TrimSpace(p); !slices.Contains(parts, p) {
				return fmt.Errorf("-only: %q is not one of %s", p, strings.Join(parts, ","))
			}
			o.only = append(o.only, p)
		}
	}
	if o.trials < 1 || o.workers < 1 || o.replicas < 1 || o.fleet < 1 || o.fleetTasks < 1 || o.schedNodes < 1 || o.schedTasks < 1 || o.schedRuns < 1 {
		return errors.New("sizes and trials must be >= 1")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "clusterbench")
	if err != nil {
		return err
	}
	b := &bench{o: o, self: self, tmp: tmp, children: map[int]<-chan struct{}{}}
	defer func() {
		b.killAll()
		if o.keep {
			fmt.Fprintln(os.Stderr, "clusterbench: kept", tmp)
		} else {
			os.RemoveAll(tmp)
		}
	}()
	if o.profile != "" {
		if err := os.MkdirAll(o.profile, 0o755); err != nil {
			return err
		}
	}

	fmt.Printf("clusterbench: %d CPUs, %s, load average at start %s; %d trial(s) per figure and variant%s\n",
		runtime.NumCPU(), runtime.Version(), loadAvg(), o.trials, map[bool]string{true: " (-quick)"}[o.quick])
	if o.raftTimeout > 0 {
		fmt.Printf("Raft timeouts TUNED (-raft-timeout %v): not Shoal's defaults\n", o.raftTimeout)
	}
	start := time.Now()
	steps := []struct {
		parts []string
		fn    func(context.Context) error
	}{
		{[]string{"failover", "worker"}, b.failoverFigures}, // figures 1, 2 and 3 on one cluster
		{[]string{"create", "fleet"}, b.fleetFigures},       // figures 4 and 6 on another
		{[]string{"sched"}, b.schedFigure},                  // figure 5
	}
	var failed []error
	for _, s := range steps {
		if !slices.ContainsFunc(s.parts, b.want) {
			continue
		}
		if err := s.fn(ctx); err != nil {
			if ctx.Err() != nil {
				return err
			}
			failed = append(failed, fmt.Errorf("%s: %w", s.parts[0], err))
			b.note("%s: FAILED: %v", strings.Join(s.parts, ","), err)
		}
		b.killAll() // nothing of one part outlives it
	}
	fmt.Printf("\nfigures (%v in all; load average at end %s)\n\n", time.Since(start).Round(time.Second), loadAvg())
	slices.SortStableFunc(b.rows, func(a, c row) int { return strings.Compare(a.fig, c.fig) })
	printTable(os.Stdout, b.rows, append([]string{
		"[A] reference, NOT this run: measured by ../shared/anchors/docker-swarm-multi on this machine (Docker Swarm 20.10.24,\n" +
			"3 managers + 1 worker in network namespaces, default settings; min/median/max of 9 trials).",
		"[S] reference, NOT this run: ../shared/anchors/swarmkit-sched README, SwarmKit v2.1.2's scheduler on this machine\n" +
			"(-nodes 10000 -tasks 100000 -reserve -spread 3). The row marked THIS RUN was built and run by this run.",
		b.timings(),
	}, b.notes...))
	return errors.Join(failed...)
}

func (b *bench) timings() string {
	if d := b.o.raftTimeout; d > 0 {
		return fmt.Sprintf("Raft timings TUNED by -raft-timeout: heartbeat/election %v, lease %v; otherwise Shoal's defaults: heartbeat period 1 s\n"+
			"(down after 3 missed), restart delay 5 s.", d, d/2)
	}
	return "Shoal's timings are its defaults: Raft heartbeat/election 500 ms, lease 250 ms, heartbeat period 1 s (down after 3 missed),\nrestart delay 5 s."
}

func loadAvg() string {
	load, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(load))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func (b *bench) add(r row) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.rows = append(b.rows, r)
}

func (b *bench) note(format string, args ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.notes = append(b.notes, fmt.Sprintf(format, args...))
}

// progress prints what the bench is doing, on stderr.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func (b *bench) want(p string) bool { return len(b.o.only) == 0 || slices.Contains(b.o.only, p) }
