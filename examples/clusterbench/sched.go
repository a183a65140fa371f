package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/shoalproject/shoal/internal/procstat"
	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// Figure 5: an in-process swarm.Manager (one, in memory, as SwarmKit's
// harness drives its scheduler on an in-memory store) with registered
// nodes of 16 CPUs and 64 GiB in 3 zones, and one service whose tasks
// reserve 0.1 CPU and 128 MiB and spread over the zones; the time from
// CreateService until every task is ASSIGNED in the committed state. The
// same as the harness's -reserve -spread 3. Each trial runs in a fresh
// child process, so that its peak RSS is its own.

// schedCmd is the hidden subcommand that runs one trial of figure 5 and
// prints a schedResult as JSON.
const schedCmd = "sched"

type schedResult struct {
	Seconds float64 `json:"seconds"`
	// CPU is the process's CPU time (user and system) over Seconds: on a
	// loaded machine it varies less than the wall time.
	CPU        float64 `json:"cpu"`
	Register   float64 `json:"register"`
	Assigned   int     `json:"assigned"`
	NodesUsed  int     `json:"nodesUsed"`
	MinPerNode int     `json:"minPerNode"`
	MaxPerNode int     `json:"maxPerNode"`
	PeakRSSKB  int64   `json:"peakRSSKB"`
	PerPass    int     `json:"perPass"`
	Bound      uint64  `json:"bound"`
}

func runSchedChild(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet(schedCmd, flag.ContinueOnError)
	nodes := fs.Int("nodes", 10000, "registered nodes")
	tasks := fs.Int("tasks", 100000, "replicas")
	perPass := fs.Int("per-pass", 0, "Manager.MaxTasksPerPass (0: the default)")
	zones := fs.Int("zones", 3, "zones to spread over")
	cpuprofile := fs.String("cpuprofile", "", "CPU profile of the timed part")
	heapprofile := fs.String("heapprofile", "", "heap profile once every task is assigned (after a GC)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	m := &swarm.Manager{MaxTasksPerPass: *perPass}
	if err := m.Start(ctx); err != nil {
		return err
	}
	defer m.Close()
	select {
	case <-m.Ready():
	case <-ctx.Done():
		return ctx.Err()
	}
	res := schedResult{PerPass: *perPass}
	if res.PerPass == 0 {
		res.PerPass = swarm.DefaultMaxTasksPerPass
	}
	c, err := m.Cluster()
	if err != nil {
		return err
	}
	res.Bound = c.Spec.Orchestration.ReplicasBound()
	if uint64(*tasks) > res.Bound {
		spec := c.Spec
		spec.Orchestration.MaxReplicas = uint64(*tasks)
		if _, err := m.UpdateCluster(ctx, c.Version, spec); err != nil {
			return err
		}
		res.Bound = uint64(*tasks)
	}
	t0 := time.Now()
	if err := registerNodes(ctx, m, *nodes, *zones); err != nil {
		return err
	}
	res.Register = time.Since(t0).Seconds()
	runtime.GC()

	spec := api.ServiceSpec{Annotations: api.Annotations{Name: "web"}, Mode: api.Replicated(uint64(*tasks)),
		TaskTemplate: api.TaskSpec{Image: "nginx",
			Resources: &api.ResourceRequirements{Reservations: &api.Resources{NanoCPUs: 1e8, MemoryBytes: 128 << 20}}}}
	if *zones > 0 {
		spec.TaskTemplate.Placement = &api.Placement{Preferences: []api.PlacementPreference{{Spread: "engine.labels.zone"}}}
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	st := m.Store()
	cpu0 := cpuSeconds()
	start := time.Now()
	svc, err := m.CreateService(ctx, spec)
	if err != nil {
		return err
	}
	deadline := start.Add(10 * time.Minute)
	for {
		// The time is when the view that shows every task assigned was
		// taken: the state held then; checking it takes a while more
		// (reading 100,000 tasks), which is not the cluster's time.
		var at time.Time
		n, per, assigned := 0, map[string]int(nil), 0
		st.View(func(tx *raftstore.ReadTx) (err error) {
			at = time.Now()
			if n, err = tx.Count(swarm.TableTasks); err != nil || n < *tasks {
				return err
			}
			per, assigned = assignedPerNode(tx, svc.ID)
			return nil
		})
		if assigned >= *tasks {
			res.Seconds = at.Sub(start).Seconds()
			res.CPU = cpuSeconds() - cpu0
			res.Assigned, res.NodesUsed = assigned, len(per)
			res.MinPerNode, res.MaxPerNode = spreadOf(per, *nodes)
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d tasks after 10 minutes", n)
		}
		time.Sleep(2 * time.Millisecond)
	}
	pprof.StopCPUProfile()
	res.PeakRSSKB = procstat.PeakRSSKB(os.Getpid())
	if *heapprofile != "" {
		runtime.GC()
		f, err := os.Create(*heapprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.WriteHeapProfile(f); err != nil {
			return err
		}
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// cpuSeconds is the CPU time this process has used.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// registerNodes registers nodes as workers do (Register), a few at a time.
func registerNodes(ctx context.Context, m *swarm.Manager, n, zones int) error {
	const parallel = 16
	var wg sync.WaitGroup
	errs := make(chan error, parallel)
	next := make(chan int)
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				desc := api.NodeDescription{Hostname: "node" + strconv.Itoa(i), Platform: api.Platform{OS: "linux", Architecture: "amd64"},
					Resources: api.Resources{NanoCPUs: 16e9, MemoryBytes: 64 << 30}}
				if zones > 0 {
					desc.Engine.Labels = map[string]string{"zone": strconv.Itoa(i % zones)}
				}
				if _, err := m.Register(ctx, fmt.Sprintf("node%06d", i), desc); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	var err error
feed:
	for i := range n {
		select {
		case next <- i:
		case err = <-errs:
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err != nil {
		return err
	}
	select {
	case err = <-errs:
	default:
	}
	return err
}

func assignedPerNode(tx *raftstore.ReadTx, serviceID string) (map[string]int, int) {
	per := map[string]int{}
	assigned := 0
	objs, _ := tx.Find(swarm.TableTasks, swarm.IndexService, serviceID)
	for _, o := range objs {
		if t := o.(*api.Task); t.Status.State == api.TaskAssigned && t.NodeID != "" {
			per[t.NodeID]++
			assigned++
		}
	}
	return per, assigned
}

func spreadOf(per map[string]int, nodes int) (lo, hi int) {
	lo = 1 << 30
	for _, k := range per {
		lo, hi = min(lo, k), max(hi, k)
	}
	if len(per) < nodes {
		lo = 0
	}
	return lo, hi
}

// schedFigure runs figure 5's trials, each in a child process, for the
// default bound on tasks per pass and for one pass of all tasks, then
// SwarmKit's harness with the same sizes.
func (b *bench) schedFigure(ctx context.Context) error {
	nodes, tasks := b.o.schedNodes, b.o.schedTasks
	type variant struct {
		perPass int
		label   string
	}
	variants := []variant{{0, fmt.Sprintf("%d a pass (default)", swarm.DefaultMaxTasksPerPass)}}
	if tasks > swarm.DefaultMaxTasksPerPass {
		variants = append(variants, variant{tasks, fmt.Sprintf("%d a pass", tasks)})
	}
	var shoalDefault samples
	for vi, v := range variants {
		var got, rss, cpu samples
		var last schedResult
		for trial := 1; trial <= b.o.schedRuns; trial++ {
			args := []string{schedCmd, "-nodes", strconv.Itoa(nodes), "-tasks", strconv.Itoa(tasks), "-per-pass", strconv.Itoa(v.perPass)}
			if b.o.profile != "" && trial == 1 {
				args = append(args, "-cpuprofile", filepath.Join(b.o.profile, fmt.Sprintf("sched-%d.prof", vi)),
					"-heapprofile", filepath.Join(b.o.profile, fmt.Sprintf("sched-%d.heap", vi)))
			}
			out, _, err := b.runTracked(ctx, exec.Command(b.self, args...))
			if err != nil {
				return fmt.Errorf("figure 5 child: %w", err)
			}
			var r schedResult
			if err := json.Unmarshal(out, &r); err != nil {
				return fmt.Errorf("figure 5 child said %q", out)
			}
			if r.Assigned != tasks {
				return fmt.Errorf("figure 5: %d of %d tasks assigned", r.Assigned, tasks)
			}
			progress("figure 5 trial %d (%s): %d tasks on %d nodes assigned and committed in %.2f s (%.2f s of CPU; nodes registered in %.1f s), peak RSS %d MB, per node %d..%d",
				trial, v.label, tasks, nodes, r.Seconds, r.CPU, r.Register, r.PeakRSSKB/1024, r.MinPerNode, r.MaxPerNode)
			got = append(got, r.Seconds)
			cpu = append(cpu, r.CPU)
			rss = append(rss, float64(r.PeakRSSKB)/1024)
			last = r
		}
		if vi == 0 {
			shoalDefault = got
		}
		b.add(row{fig: "5", what: fmt.Sprintf("%s nodes, %s replicas: all ASSIGNED+committed, %s", kilo(nodes), kilo(tasks), v.label),
			got: got, unit: "s", target: 1.5, ref: "SwarmKit: 15.6-18.6 s [S]"})
		b.add(row{fig: "5", what: "  CPU time meanwhile, " + v.label, got: cpu, unit: "s", ref: "-"})
		b.add(row{fig: "5", what: "  peak RSS, " + v.label, got: rss, unit: "MB", ref: "SwarmKit: 1.6 GB [S]"})
		b.note("5 (%s a pass): in-memory manager; the cluster's bound on replicas %d; tasks per node %d..%d on %d nodes.", kilo(last.PerPass), last.Bound, last.MinPerNode, last.MaxPerNode, last.NodesUsed)
	}
	if b.o.swarmkit == "" {
		b.note("5: SwarmKit's harness not run (-swarmkit empty; -quick skips it unless -swarmkit is set).")
		return nil
	}
	sk, rss, err := b.runSwarmKit(ctx, nodes, tasks)
	if err != nil {
		b.note("5: SwarmKit's harness: %v", err)
		return nil
	}
	b.add(row{fig: "5", what: "SwarmKit harness, THIS RUN, same sizes", got: sk, unit: "s",
		ref: fmt.Sprintf("SwarmKit / Shoal (medians, default pass): %.1fx", sk.median()/shoalDefault.median())})
	b.add(row{fig: "5", what: "  SwarmKit harness peak RSS, THIS RUN", got: rss, unit: "MB", ref: "-"})
	b.note("5: SwarmKit harness built from %s and run here: -nodes %d -tasks %d -reserve -spread 3 (its time includes its in-memory store writes).", b.o.swarmkit, nodes, tasks)
	return nil
}

var allAssigned = regexp.MustCompile(`all_assigned=(\S+)`)

// runSwarmKit builds SwarmKit's scheduler harness where it lives (it is
// not part of this project) and runs it o.schedRuns times.
func (b *bench) runSwarmKit(ctx context.Context, nodes, tasks int) (samples, samples, error) {
	dir, err := resolveAnchor(b.o.swarmkit, "main.go")
	if err != nil {
		return nil, nil, fmt.Errorf("SwarmKit's harness (-swarmkit %s): %w", b.o.swarmkit, err)
	}
	bin := filepath.Join(b.tmp, "swarmkit-harness")
	progress("figure 5: building SwarmKit's harness in %s", dir)
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = dir
	if out, _, err := b.runTracked(ctx, build); err != nil {
		return nil, nil, fmt.Errorf("building it: %v %s", err, out)
	}
	var got, rss samples
	for trial := 1; trial <= b.o.schedRuns; trial++ {
		cmd := exec.Command(bin, "-nodes", strconv.Itoa(nodes), "-tasks", strconv.Itoa(tasks), "-reserve", "-spread", "3")
		out, ru, err := b.runTracked(ctx, cmd)
		if err != nil {
			return nil, nil, fmt.Errorf("running it: %v %s", err, out)
		}
		m := allAssigned.FindSubmatch(out)
		if m == nil {
			return nil, nil, fmt.Errorf("its output has no all_assigned: %q", out)
		}
		d, err := time.ParseDuration(string(m[1]))
		if err != nil {
			return nil, nil, err
		}
		if ru == nil {
			return nil, nil, errors.New("no resource usage")
		}
		progress("figure 5: SwarmKit harness trial %d: all assigned in %v, peak RSS %d MB, CPU %.1f s (its whole run, setup included)",
			trial, d, ru.Maxrss/1024, time.Duration(ru.Utime.Nano()+ru.Stime.Nano()).Seconds())
		got = append(got, d.Seconds())
		rss = append(rss, float64(ru.Maxrss)/1024)
	}
	return got, rss, nil
}

// kilo writes 10000 as 10k.
func kilo(n int) string {
	if n >= 1000 && n%1000 == 0 {
		return strconv.Itoa(n/1000) + "k"
	}
	return strconv.Itoa(n)
}
