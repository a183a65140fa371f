// Command schedbench measures the scheduler on synthetic clusters and prints
// tasks/s, wall time, peak RSS and how balanced the result is, for
// comparison with SwarmKit's scheduler (shared/anchors/swarmkit-sched) on the
// same machine.
//
//	go run ./examples/schedbench -nodes 5000 -tasks 50000
//	go run ./examples/schedbench -nodes 10000 -tasks 100000 -reserve -spread-zones 3
//	go run ./examples/schedbench -nodes 5000 -tasks 100000 -services 100
//	go run ./examples/schedbench -suite        # the four cases in one run
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/shoalproject/shoal/internal/procstat"
	"github.com/shoalproject/shoal/scheduler"
)

func main() {
	if err := run(context.Background()); err != nil {
		log.Fatal(err)
	}
}

type params struct {
	nodes, tasks, services, zones int
	strategy                      scheduler.Strategy
	constraints, reserve          bool
}

func run(context.Context) error {
	var p params
	var strategy string
	var suite bool
	var repeat int
	flag.IntVar(&p.nodes, "nodes", 5000, "nodes (16 CPUs, 64 GiB each)")
	flag.IntVar(&p.tasks, "tasks", 50000, "tasks in all")
	flag.IntVar(&p.services, "services", 1, "services the tasks are split over")
	flag.StringVar(&strategy, "strategy", "spread", "spread, binpack or random")
	flag.BoolVar(&p.constraints, "constraints", false, "constrain tasks to node.labels.tier!=edge (1 node in 10 is edge)")
	flag.BoolVar(&p.reserve, "reserve", false, "tasks reserve 0.1 CPU and 128 MiB")
	flag.IntVar(&p.zones, "spread-zones", 0, "label nodes zone=0..K-1 and prefer spreading over them")
	flag.BoolVar(&suite, "suite", false, "run the reference cases (5k x 50k; 10k x 100k reserve 3 zones; 100 x 1k on 5k; binpack)")
	flag.IntVar(&repeat, "repeat", 3, "runs per case; the best wall time is reported")
	flag.Parse()
	switch strings.ToLower(strategy) {
	case "spread":
		p.strategy = scheduler.Spread
	case "binpack":
		p.strategy = scheduler.Binpack
	case "random":
		p.strategy = scheduler.Random
	default:
		return fmt.Errorf("-strategy: %q is not spread, binpack or random", strategy)
	}
	if p.nodes < 1 || p.tasks < 0 || p.services < 1 || p.zones < 0 || repeat < 1 {
		return fmt.Errorf("-nodes, -services and -repeat must be >= 1; -tasks and -spread-zones >= 0")
	}
	fmt.Printf("schedbench: %d CPUs, %s\n", runtime.NumCPU(), runtime.Version())
	fmt.Printf("%-52s %10s %12s %10s %12s\n", "case", "wall", "tasks/s", "peak RSS", "per node")
	cases := []params{p}
	if suite {
		cases = []params{
			{nodes: 5000, tasks: 50000, services: 1, strategy: scheduler.Spread},
			{nodes: 5000, tasks: 50000, services: 1, strategy: scheduler.Binpack, reserve: true},
			{nodes: 5000, tasks: 50000, services: 1, strategy: scheduler.Spread, reserve: true},
			{nodes: 10000, tasks: 100000, services: 1, strategy: scheduler.Spread, reserve: true, zones: 3},
			{nodes: 10000, tasks: 100000, services: 1, strategy: scheduler.Binpack, reserve: true, zones: 3},
			{nodes: 5000, tasks: 100000, services: 100, strategy: scheduler.Spread},
			{nodes: 5000, tasks: 50000, services: 1, strategy: scheduler.Spread, constraints: true},
		}
	}
	for _, c := range cases {
		measure(c, repeat)
	}
	return nil
}

func measure(p params, repeat int) {
	nodes := make([]*scheduler.Node, p.nodes)
	for i := range nodes {
		n := &scheduler.Node{ID: fmt.Sprintf("node%06d", i), Hostname: "h" + strconv.Itoa(i), Role: "worker", OS: "linux", Arch: "amd64",
			Ready: true, Total: scheduler.Resources{NanoCPUs: 16e9, MemoryBytes: 64 << 30}, Labels: map[string]string{}}
		if p.zones > 0 {
			n.Labels["zone"] = strconv.Itoa(i % p.zones)
		}
		if i%10 == 9 {
			n.Labels["tier"] = "edge"
		}
		nodes[i] = n
	}
	var groups []*scheduler.Group
	for s := range p.services {
		g := &scheduler.Group{ServiceID: fmt.Sprintf("svc%04d", s)}
		for t := s; t < p.tasks; t += p.services {
			g.Tasks = append(g.Tasks, scheduler.TaskRef{ID: fmt.Sprintf("task%08d", t)})
		}
		if p.reserve {
			g.Reservations = scheduler.Resources{NanoCPUs: 1e8, MemoryBytes: 128 << 20}
		}
		if p.zones > 0 {
			g.Preferences = []string{"node.labels.zone"}
		}
		if p.constraints {
			g.Constraints = []string{"node.labels.tier!=edge"}
		}
		groups = append(groups, g)
	}
	s := scheduler.New(scheduler.Config{Strategy: p.strategy, Seed: 1})
	best := time.Duration(1<<63 - 1)
	var res scheduler.Result
	for range repeat {
		runtime.GC()
		t0 := time.Now()
		res = s.Place(nodes, groups...)
		best = min(best, time.Since(t0))
	}
	per := map[string]int{}
	for _, d := range res.Decisions {
		per[d.NodeID]++
	}
	lo, hi, used := 1<<30, 0, 0
	for _, n := range nodes {
		c := per[n.ID]
		if c > 0 {
			used++
		}
		if p.constraints && n.Labels["tier"] == "edge" {
			continue
		}
		lo, hi = min(lo, c), max(hi, c)
	}
	name := fmt.Sprintf("%dn x %dt, %d svc, %s", p.nodes, p.tasks, p.services, p.strategy)
	if p.reserve {
		name += ", reserve"
	}
	if p.zones > 0 {
		name += fmt.Sprintf(", %d zones", p.zones)
	}
	if p.constraints {
		name += ", constraint"
	}
	balance := fmt.Sprintf("%d..%d", lo, hi)
	if p.strategy == scheduler.Binpack {
		balance = fmt.Sprintf("%d nodes used", used)
	}
	fmt.Printf("%-52s %10v %12.0f %7d MB %12s", name, best.Round(100*time.Microsecond), float64(len(res.Decisions))/best.Seconds(), procstat.PeakRSSKB(os.Getpid())/1024, balance)
	if len(res.Unplaced) > 0 {
		fmt.Printf("  unplaced: %v", res.Unplaced[0])
	}
	fmt.Println()
}
