// Command raftbench measures the raftstore on this machine and prints its
// figures: committed writes per second on a 3-member cluster over mutual TLS
// on loopback with real fsync (1, 16 and 256 concurrent writers, p50/p99
// latency), 50,000 task updates through the batch API, leader failover time
// over repeated trials, and the RSS of a member holding 100,000 tasks.
//
//	go run ./examples/raftbench                 # everything, default sizes
//	go run ./examples/raftbench -quick          # a short run (CI)
//	go run ./examples/raftbench -only writes -objects 5000,30000,70000
//	                                            # a fixed number of writes per writer count
//
// The three members run in this process, each with its own data dir, TLS
// listener and Raft; "killing" the leader closes its Raft and listener
// without a leadership transfer, as a crash would.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/shoalproject/shoal/internal/procstat"
	"github.com/shoalproject/shoal/internal/testca"
	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm/api"
)

func main() {
	// SIGTERM (CI's time limit) ends the run through ctx, so that what it
	// made is cleaned up on the way out.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx)
	stop()
	if err != nil {
		log.Fatal(err)
	}
}

type options struct {
	writers []int
	// objects, when set, is how many writes each writer count makes (in
	// the order of writers) instead of writing for duration: a comparison
	// with another store at the same data, such as etcd's figures.
	objects    []int
	duration   time.Duration
	batchTasks int
	trials     int
	rssTasks   int
	rssChild   bool
	encrypt    bool
	only       string
	dir        string
	quick      bool
	cpuprofile string
	blockprof  string
	mutexprof  string
	heapprof   string
	tracefile  string
	cpu        bool
	timings    *timingSink
	mem        bool
}

func run(ctx context.Context) error {
	var o options
	var writers string
	flag.StringVar(&writers, "writers", "1,16,256", "concurrent writer counts")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "how long each write run lasts")
	objects := flag.String("objects", "", "write exactly this many objects at each writer count (comma list, one per -writers entry) instead of for -duration: to compare memory with another store at the same data")
	flag.IntVar(&o.batchTasks, "batch", 50000, "tasks updated through the batch API")
	flag.IntVar(&o.trials, "trials", 20, "leader failover trials")
	flag.IntVar(&o.rssTasks, "rss-tasks", 100000, "tasks held by the member whose RSS is measured")
	flag.BoolVar(&o.encrypt, "encrypt", true, "encryption at rest on")
	flag.StringVar(&o.only, "only", "", "run one part: writes, batch, failover, rss")
	flag.StringVar(&o.dir, "dir", "", "where data dirs go (default a temp dir)")
	flag.BoolVar(&o.quick, "quick", false, "short run: 1s writes, 5,000-task batch, 3 trials, 10,000-task RSS")
	flag.BoolVar(&o.rssChild, "rss-child", false, "internal: measure RSS in this process")
	flag.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile to this file")
	flag.StringVar(&o.blockprof, "blockprofile", "", "write a block (waits on channels, syscalls not included) profile to this file")
	flag.StringVar(&o.mutexprof, "mutexprofile", "", "write a mutex contention profile to this file")
	flag.StringVar(&o.heapprof, "heapprofile", "", "write a heap profile to this file at the peak of the writes part (before its cluster closes), and one to FILE.rss from the member of the RSS part")
	flag.StringVar(&o.tracefile, "trace", "", "write a runtime execution trace of the writes part to this file (go tool trace: scheduler latency, syscalls)")
	flag.BoolVar(&o.cpu, "cpu", false, "print the process's CPU time, context switches and Go heap allocations per write for each writer count (all three members together)")
	flag.BoolVar(&o.mem, "mem", false, "print the process's memory after each writer count")
	rafttimings := flag.Bool("raft-timings", false, "print where a write's time goes (hashicorp/raft's timing samples, means per writer count)")
	flag.Parse()
	if *rafttimings {
		o.timings = newTimingSink()
		if err := o.timings.install(); err != nil {
			return err
		}
	}
	if o.cpuprofile != "" {
		f, err := os.Create(o.cpuprofile)
		if err != nil {
			return err
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	if o.blockprof != "" {
		runtime.SetBlockProfileRate(1)
		defer writeProfile("block", o.blockprof)
	}
	if o.mutexprof != "" {
		runtime.SetMutexProfileFraction(1)
		defer writeProfile("mutex", o.mutexprof)
	}
	var err error
	if o.writers, err = positiveList("-writers", writers); err != nil {
		return err
	}
	if *objects != "" {
		if o.objects, err = positiveList("-objects", *objects); err != nil {
			return err
		}
		if len(o.objects) != len(o.writers) {
			return fmt.Errorf("-objects: %d counts for %d writer counts (-writers %s); give one count per writer count", len(o.objects), len(o.writers), writers)
		}
	}
	if o.quick {
		o.duration, o.batchTasks, o.trials, o.rssTasks = time.Second, 5000, 3, 10000
	}
	if o.dir == "" {
		d, err := os.MkdirTemp("", "raftbench")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		o.dir = d
	}
	if o.rssChild {
		return measureRSS(ctx, o)
	}
	fmt.Printf("raftbench: %d CPUs, %s, encryption at rest %v, data in %s\n", runtime.NumCPU(), runtime.Version(), o.encrypt, o.dir)
	parts := map[string]func(context.Context, options) error{"writes": benchWrites, "batch": benchBatch, "failover": benchFailover, "rss": benchRSS}
	for _, name := range []string{"writes", "batch", "failover", "rss"} {
		if o.only != "" && o.only != name {
			continue
		}
		if err := parts[name](ctx, o); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

// schema is the task table as the managers will hold it, compressed (tasks
// are alike: a task's JSON compresses several times against another task).
func schema() *raftstore.Schema {
	return &raftstore.Schema{Tables: []raftstore.Table{{
		Name: "tasks", New: func() raftstore.Object { return &api.Task{} }, Compress: true,
		Indexes: map[string]raftstore.IndexFunc{
			"service": func(o raftstore.Object) []string { return []string{o.(*api.Task).ServiceID} },
			"node":    func(o raftstore.Object) []string { return []string{o.(*api.Task).NodeID} },
		},
	}}}
}

func task(i int) *api.Task {
	return &api.Task{
		Meta:        api.Meta{ID: fmt.Sprintf("task%09d", i), CreatedAt: time.Now().UTC()},
		ServiceID:   fmt.Sprintf("svc%04d", i%100),
		Slot:        uint64(i/100 + 1),
		NodeID:      fmt.Sprintf("node%05d", i%5000),
		Annotations: api.Annotations{Name: fmt.Sprintf("web.%d", i)},
		Spec: api.TaskSpec{Image: "example/web:1.0", Env: []string{"MODE=prod"},
			Resources: &api.ResourceRequirements{Reservations: &api.Resources{NanoCPUs: 1e8, MemoryBytes: 64 << 20}}},
		DesiredState: api.TaskRunning,
		Status:       api.TaskStatus{State: api.TaskRunning, Timestamp: time.Now().UTC()},
	}
}

type member struct {
	id, addr, dir string
	store         *raftstore.Store
}

type cluster struct {
	ca      *testca.CA
	kek     []byte
	members []*member
}

func newCluster(ctx context.Context, o options, name string) (*cluster, error) {
	ca, err := testca.New()
	if err != nil {
		return nil, err
	}
	c := &cluster{ca: ca}
	if o.encrypt {
		c.kek = make([]byte, raftstore.KeySize)
		copy(c.kek, "raftbench key-encryption key....")
	}
	var boot []raftstore.Server
	var lns []net.Listener
	for i := range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		m := &member{id: fmt.Sprintf("m%d", i), addr: ln.Addr().String(), dir: filepath.Join(o.dir, name, fmt.Sprint(i))}
		c.members = append(c.members, m)
		boot = append(boot, raftstore.Server{ID: m.id, Address: m.addr, Voter: true})
	}
	for i, m := range c.members {
		if err := c.start(ctx, m, lns[i], boot); err != nil {
			return nil, err
		}
	}
	_, err = c.leader(ctx)
	return c, err
}

func (c *cluster) start(ctx context.Context, m *member, ln net.Listener, boot []raftstore.Server) error {
	if ln == nil {
		var err error
		for range 50 { // the port may linger for a moment after a close
			if ln, err = net.Listen("tcp", m.addr); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			return err
		}
	}
	cfg, err := c.ca.Config(m.id)
	if err != nil {
		return err
	}
	m.store = &raftstore.Store{ID: m.id, Dir: m.dir, Schema: schema(), Bootstrap: boot, KeyEncryptionKey: c.kek,
		Transport: raftstore.NewNetworkTransport(raftstore.NewTLSStreamLayer(ln, cfg), nil)}
	return m.store.Start(ctx)
}

func (c *cluster) leader(ctx context.Context) (*raftstore.Store, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		for _, m := range c.members {
			if m.store != nil && m.store.IsLeader() {
				return m.store, nil
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	return nil, errors.New("no leader within 30s")
}

func (c *cluster) close() {
	for _, m := range c.members {
		if m.store != nil {
			m.store.Close()
		}
	}
}

// positiveList parses a comma list of positive numbers given to flag name.
func positiveList(name, list string) ([]int, error) {
	var out []int
	for _, w := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(w))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%s: %q is not a positive number", name, w)
		}
		out = append(out, n)
	}
	return out, nil
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[min(len(d)-1, int(float64(len(d))*p))]
}

func benchWrites(ctx context.Context, o options) error {
	c, err := newCluster(ctx, o, "writes")
	if err != nil {
		return err
	}
	defer c.close()
	l, err := c.leader(ctx)
	if err != nil {
		return err
	}
	if o.tracefile != "" {
		f, err := os.Create(o.tracefile)
		if err != nil {
			return err
		}
		if err := trace.Start(f); err != nil {
			f.Close()
			return err
		}
		defer func() { trace.Stop(); f.Close() }()
	}
	fmt.Println("\n== committed single-object writes, 3 members, mutual TLS on loopback, fsync on every member ==")
	fmt.Printf("%8s %12s %10s %10s %10s\n", "writers", "writes/s", "p50", "p99", "writes")
	var next atomic.Int64
	for wi, n := range o.writers {
		var (
			mu      sync.Mutex
			lats    []time.Duration
			wg      sync.WaitGroup
			errs    atomic.Int64
			tickets atomic.Int64 // writes left to start, with -objects
		)
		if o.timings != nil {
			o.timings.reset()
		}
		deadline := time.Now().Add(o.duration)
		more := func() bool { return time.Now().Before(deadline) }
		if o.objects != nil {
			tickets.Store(int64(o.objects[wi]))
			more = func() bool { return tickets.Add(-1) >= 0 }
		}
		ru0 := usage()
		start := time.Now()
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var mine []time.Duration
				for more() {
					t := task(int(next.Add(1)))
					t0 := time.Now()
					if err := l.Update(ctx, func(tx *raftstore.Tx) error { return tx.Create("tasks", t) }); err != nil {
						errs.Add(1)
						continue
					}
					mine = append(mine, time.Since(t0))
				}
				mu.Lock()
				lats = append(lats, mine...)
				mu.Unlock()
			}()
		}
		wg.Wait()
		elapsed := time.Since(start)
		fmt.Printf("%8d %12.0f %10v %10v %10d", n, float64(len(lats))/elapsed.Seconds(),
			percentile(lats, 0.5).Round(10*time.Microsecond), percentile(lats, 0.99).Round(10*time.Microsecond), len(lats))
		if e := errs.Load(); e > 0 {
			fmt.Printf("  (%d errors)", e)
		}
		fmt.Println()
		if o.cpu && len(lats) > 0 {
			ru := usage().sub(ru0)
			w := float64(len(lats))
			fmt.Printf("    process per write: CPU %.0f µs (user %.0f, system %.0f), context switches %.1f voluntary, %.1f involuntary\n",
				float64(ru.user+ru.sys)/w/1e3, float64(ru.user)/w/1e3, float64(ru.sys)/w/1e3, float64(ru.nvcsw)/w, float64(ru.nivcsw)/w)
			fmt.Printf("    process per write: allocated %.1f KB in %.0f objects; %d GC cycles (one per %.0f writes)\n",
				float64(ru.allocBytes)/w/1e3, float64(ru.allocObjects)/w, ru.gcCycles, w/float64(max(ru.gcCycles, 1)))
		}
		if o.timings != nil {
			o.timings.print()
		}
		if o.mem {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			objects := 0
			l.View(func(tx *raftstore.ReadTx) error { objects, _ = tx.Count("tasks"); return nil })
			fmt.Printf("    memory: RSS %d MB (peak %d MB), Go heap in use %d MB (goal %d MB), %d tasks on each member\n",
				procstat.RSSKB(os.Getpid())>>10, procstat.PeakRSSKB(os.Getpid())>>10, ms.HeapInuse>>20, ms.NextGC>>20, objects)
		}
	}
	if o.heapprof != "" {
		runtime.GC()
		writeProfile("heap", o.heapprof)
	}
	return nil
}

// writeProfile writes a named runtime profile; errors go to stderr, since a
// missing profile must not hide the figures.
func writeProfile(name, path string) {
	f, err := os.Create(path)
	if err == nil {
		err = pprof.Lookup(name).WriteTo(f, 0)
		f.Close()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "raftbench: %s profile: %v\n", name, err)
	}
}

func benchBatch(ctx context.Context, o options) error {
	c, err := newCluster(ctx, o, "batch")
	if err != nil {
		return err
	}
	defer c.close()
	l, err := c.leader(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("\n== %d task changes through the batch API, committed on the leader ==\n", o.batchTasks)
	tasks := make([]*api.Task, o.batchTasks)
	for i := range tasks {
		tasks[i] = task(i)
	}
	t0 := time.Now()
	res, err := l.Batch(ctx, func(b *raftstore.Batch) error {
		for _, t := range tasks {
			if err := b.Create("tasks", t); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Printf("create %d tasks: %v (%d applied, %d conflicts)\n", o.batchTasks, time.Since(t0).Round(time.Millisecond), res.Applied, len(res.Conflicts))
	// Update each as the scheduler would: read, assign a node, write back.
	var current []raftstore.Object
	l.View(func(tx *raftstore.ReadTx) error { current, err = tx.List("tasks"); return err })
	t0 = time.Now()
	res, err = l.Batch(ctx, func(b *raftstore.Batch) error {
		for _, obj := range current {
			t := *obj.(*api.Task)
			t.NodeID = "node-updated"
			t.Status.State = api.TaskAssigned
			if err := b.Update("tasks", &t); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	took := time.Since(t0)
	fmt.Printf("update %d tasks: %v (%d applied, %d conflicts, %.0f updates/s) [target <= 1s]\n", len(current), took.Round(time.Millisecond),
		res.Applied, len(res.Conflicts), float64(res.Applied)/took.Seconds())
	for _, m := range c.members { // followers converge too
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := m.store.WaitIndex(wctx, res.Index)
		cancel()
		if err != nil {
			return fmt.Errorf("%s did not catch up: %w", m.id, err)
		}
	}
	fmt.Printf("all members applied the batch after %v\n", time.Since(t0).Round(time.Millisecond))
	return nil
}

func benchFailover(ctx context.Context, o options) error {
	c, err := newCluster(ctx, o, "failover")
	if err != nil {
		return err
	}
	defer c.close()
	fmt.Printf("\n== leader failover: kill the leader, time until a write is accepted again (%d trials, default timeouts: heartbeat %v, election %v) ==\n",
		o.trials, raftstore.DefaultHeartbeatTimeout, raftstore.DefaultElectionTimeout)
	var times []time.Duration
	for trial := range o.trials {
		l, err := c.leader(ctx)
		if err != nil {
			return err
		}
		if err := l.Update(ctx, func(tx *raftstore.Tx) error { return tx.Create("tasks", task(1_000_000+trial)) }); err != nil {
			return err
		}
		var dead *member
		for _, m := range c.members {
			if m.store == l {
				dead = m
			}
		}
		t0 := time.Now()
		l.Close()
		dead.store = nil
		for {
			nl, err := c.leader(ctx)
			if err != nil {
				return err
			}
			wctx, cancel := context.WithTimeout(ctx, time.Second)
			err = nl.Update(wctx, func(tx *raftstore.Tx) error { return tx.Create("tasks", task(2_000_000+trial)) })
			cancel()
			if err == nil {
				break
			}
		}
		times = append(times, time.Since(t0))
		// Bring the dead member back from its data dir before the next trial.
		if err := c.start(ctx, dead, nil, nil); err != nil {
			return fmt.Errorf("restart %s: %w", dead.id, err)
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		select {
		case <-dead.store.Ready():
		case <-wctx.Done():
		}
		cancel()
	}
	sorted := slices.Clone(times)
	slices.Sort(sorted)
	fmt.Printf("failover: min %v, median %v, max %v [target median <= 1.5s]\n", sorted[0].Round(time.Millisecond),
		sorted[len(sorted)/2].Round(time.Millisecond), sorted[len(sorted)-1].Round(time.Millisecond))
	return nil
}

func benchRSS(ctx context.Context, o options) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	args := []string{"-rss-child", "-rss-tasks", strconv.Itoa(o.rssTasks), "-dir", filepath.Join(o.dir, "rss"), fmt.Sprintf("-encrypt=%v", o.encrypt)}
	if o.heapprof != "" {
		args = append(args, "-heapprofile", o.heapprof+".rss")
	}
	cmd := exec.CommandContext(ctx, self, args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	return cmd.Run()
}

// measureRSS runs in a child process so the figure is one member's alone.
func measureRSS(ctx context.Context, o options) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	ca, err := testca.New()
	if err != nil {
		return err
	}
	cfg, err := ca.Config("m0")
	if err != nil {
		return err
	}
	var kek []byte
	if o.encrypt {
		kek = make([]byte, raftstore.KeySize)
	}
	s := &raftstore.Store{ID: "m0", Dir: o.dir, Schema: schema(), KeyEncryptionKey: kek,
		Bootstrap: []raftstore.Server{{ID: "m0", Address: ln.Addr().String(), Voter: true}},
		Transport: raftstore.NewNetworkTransport(raftstore.NewTLSStreamLayer(ln, cfg), nil)}
	if err := s.Start(ctx); err != nil {
		return err
	}
	defer s.Close()
	<-s.Ready()
	base := procstat.RSSKB(os.Getpid())
	const chunk = 10000
	for i := 0; i < o.rssTasks; i += chunk {
		if _, err := s.Batch(ctx, func(b *raftstore.Batch) error {
			for j := i; j < min(i+chunk, o.rssTasks); j++ {
				if err := b.Create("tasks", task(j)); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return err
		}
	}
	if err := s.Snapshot(ctx); err != nil {
		return err
	}
	runtime.GC()
	debug.FreeOSMemory()
	n := 0
	s.View(func(tx *raftstore.ReadTx) error { n, _ = tx.Count("tasks"); return nil })
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Printf("\n== memory of one member holding %d tasks (after a snapshot and GC) ==\n", n)
	fmt.Printf("RSS %d MB (empty member: %d MB), Go heap in use %d MB [target <= 300 MB]\n", procstat.RSSKB(os.Getpid())/1024, base/1024, ms.HeapInuse>>20)
	if o.heapprof != "" {
		writeProfile("heap", o.heapprof)
	}
	return nil
}
