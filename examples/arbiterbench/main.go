// Command arbiterbench measures what an arbiter costs: two managers (in
// this process, with fake executors) and an arbiter (swarm.Arbiter, in a
// child process: this binary re-executed) run a service of -tasks
// replicas until every task runs; then, once the arbiter has applied all
// the managers have, it prints the arbiter's resident memory and its disk
// use beside the target (RSS <= 64 MB with 10,000 tasks) and beside a
// manager's disk.
//
//	go run ./examples/arbiterbench                # 10,000 tasks
//	go run ./examples/arbiterbench -tasks 1000    # quicker
//
// With -failover it measures failover instead, with the shoald binary:
// two managers and `shoald arbiter`, each a process on loopback; kill -9
// the leader, time until a write is accepted, median of -trials:
//
//	go build -o /tmp/shoald ./examples/shoald && go run ./examples/arbiterbench -failover /tmp/shoald
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/internal/procstat"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	var err error
	if len(os.Args) > 1 && os.Args[1] == arbiterCmd {
		err = runArbiterChild(ctx, os.Args[2:])
	} else if len(os.Args) > 1 && os.Args[1] == fenceNodeCmd {
		err = runFenceNode(ctx, os.Args[2:])
	} else if len(os.Args) > 1 && os.Args[1] == fenceCmd {
		err = runFence(ctx, os.Args[2:])
	} else {
		err = run(ctx)
	}
	stop()
	if err != nil {
		log.Fatal(err)
	}
}

// arbiterCmd is the hidden subcommand that runs the arbiter:
//
//	arbiterbench arbiter -dir DIR -join TOKEN -addr HOST:PORT
//
// Once it votes it prints a line of JSON (arbiterReport) every 200 ms:
// its ID, applied Raft index and Go memory. It exits when stdin closes.
const arbiterCmd = "arbiter"

type arbiterReport struct {
	ID        string `json:"id"`
	PID       int    `json:"pid"`
	Applied   uint64 `json:"applied"`
	HeapInuse uint64 `json:"heapInuse"`
	Sys       uint64 `json:"sys"`
}

func runArbiterChild(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet(arbiterCmd, flag.ContinueOnError)
	dir := fl.String("dir", "", "the arbiter's data dir")
	token := fl.String("join", "", "the arbiter join token")
	addr := fl.String("addr", "", "a manager's address")
	heap := fl.String("heapprofile", "", "write a heap profile here when done")
	if err := fl.Parse(args); err != nil {
		return err
	}
	writeHeap := func() error {
		if *heap == "" {
			return nil
		}
		f, err := os.Create(*heap)
		if err != nil {
			return err
		}
		defer f.Close()
		runtime.GC()
		return pprof.WriteHeapProfile(f)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		// The parent holds our stdin: when it closes, we are done.
		defer cancel()
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
		}
	}()
	a := &swarm.Arbiter{Dir: *dir, ListenAddr: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	if err := a.Join(ctx, *token, *addr); err != nil {
		return err
	}
	defer a.Close()
	select {
	case <-a.Ready():
	case <-ctx.Done():
		return ctx.Err()
	}
	enc := json.NewEncoder(os.Stdout)
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		if err := enc.Encode(arbiterReport{ID: a.ID(), PID: os.Getpid(), Applied: a.Store().AppliedIndex(), HeapInuse: ms.HeapInuse, Sys: ms.Sys}); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return writeHeap()
		case <-t.C:
		}
	}
}

func run(ctx context.Context) error {
	tasks := flag.Int("tasks", 10_000, "replicas of the service")
	updates := flag.Int("updates", 3, "rolling updates of every task (all at once) after the service runs, so that the arbiter snapshots and compacts")
	keep := flag.Bool("keep", false, "keep the data dirs (printed)")
	heap := flag.String("heapprofile", "", "write the arbiter's heap profile here at the end")
	memLimit := flag.String("arbiter-gomemlimit", "", "GOMEMLIMIT of the arbiter process (as a host program may set it; e.g. 48MiB)")
	failoverBin := flag.String("failover", "", "measure failover instead, with this shoald binary (go build -o /tmp/shoald ./examples/shoald): kill -9 the leader, time until a write")
	trials := flag.Int("trials", 10, "failover trials (with -failover)")
	flag.Parse()
	if *failoverBin != "" {
		if *trials < 1 {
			return fmt.Errorf("-trials %d: want at least 1", *trials)
		}
		return failover(ctx, *failoverBin, *trials)
	}
	if *tasks < 1 || *tasks > api.MaxReplicasLimit {
		return fmt.Errorf("-tasks %d: want 1 to %d", *tasks, api.MaxReplicasLimit)
	}
	base, err := os.MkdirTemp("", "arbiterbench-")
	if err != nil {
		return err
	}
	if *keep {
		fmt.Println("data dirs under", base)
	} else {
		defer os.RemoveAll(base)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	newManager := func(name string) *swarm.Node {
		return &swarm.Node{Dir: filepath.Join(base, name), ListenAddr: "127.0.0.1:0", Executor: &agent.FakeExecutor{}, Logger: logger}
	}
	m0, m1 := newManager("manager-0"), newManager("manager-1")
	if err := m0.Init(ctx); err != nil {
		return err
	}
	defer m0.Close()
	<-m0.Ready()
	cl := m0.Client()
	c, err := cl.Cluster(ctx)
	if err != nil {
		return err
	}
	if err := m1.Join(ctx, c.JoinTokens.Manager, m0.Addr()); err != nil {
		return err
	}
	defer m1.Close()
	<-m1.Ready()

	arbDir := filepath.Join(base, "arbiter")
	cmd := exec.CommandContext(ctx, os.Args[0], arbiterCmd, "-dir", arbDir, "-join", c.JoinTokens.Arbiter, "-addr", m0.Addr(), "-heapprofile", *heap)
	cmd.Stderr = os.Stderr
	if *memLimit != "" {
		cmd.Env = append(os.Environ(), "GOMEMLIMIT="+*memLimit)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { stdin.Close(); cmd.Wait() }()
	reports := make(chan arbiterReport, 1)
	go func() {
		defer close(reports)
		dec := json.NewDecoder(out)
		for {
			var r arbiterReport
			if dec.Decode(&r) != nil {
				return
			}
			select {
			case reports <- r:
			default: // the bench reads the latest only
				select {
				case <-reports:
				default:
				}
				reports <- r
			}
		}
	}()
	first, ok := <-reports
	if !ok {
		return errors.New("the arbiter process ended before it voted")
	}
	idle := procstat.RSSKB(first.PID)
	fmt.Printf("arbiter %s votes (pid %d, RSS %.1f MB before any service)\n", first.ID, first.PID, float64(idle)/1024)

	start := time.Now()
	svc, err := cl.CreateService(ctx, api.ServiceSpec{Annotations: api.Annotations{Name: "bench"}, Mode: api.Replicated(uint64(*tasks)),
		TaskTemplate: api.TaskSpec{Image: "example/bench:1"}, UpdateConfig: &api.UpdateConfig{Parallelism: 0}})
	if err != nil {
		return err
	}
	// allRun waits until every task runs image.
	allRun := func(image string) error {
		for {
			// From the manager's store: the API's answers are bounded
			// below what tens of thousands of tasks with history take.
			ts, err := m0.Manager().Tasks(svc.ID)
			if err != nil {
				return err
			}
			n := 0
			for _, t := range ts {
				if t.Status.State == api.TaskRunning && t.DesiredState == api.TaskRunning && t.Spec.Image == image {
					n++
				}
			}
			if n == *tasks {
				return nil
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Second):
			}
		}
	}
	// measure waits until the arbiter holds everything the managers
	// applied, lets a few reports go by (snapshots, compaction), and
	// reads its figures.
	type figures struct {
		label                    string
		index                    uint64
		objects                  int
		rss, peak                int64
		heap, sys                uint64
		arbiterDisk, managerDisk map[string]use
	}
	var rows []figures
	measure := func(label string) error {
		target := max(m0.Manager().Store().AppliedIndex(), m1.Manager().Store().AppliedIndex())
		var last arbiterReport
		for last.Applied < target {
			r, ok := <-reports
			if !ok {
				return errors.New("the arbiter process ended")
			}
			last = r
		}
		for range 10 {
			if r, ok := <-reports; ok {
				last = r
			}
		}
		f := figures{label: label, index: last.Applied, rss: procstat.RSSKB(last.PID), peak: procstat.PeakRSSKB(last.PID), heap: last.HeapInuse, sys: last.Sys}
		ts, err := m0.Manager().Tasks(svc.ID)
		if err != nil {
			return err
		}
		f.objects = len(ts)
		if f.arbiterDisk, err = diskUse(arbDir); err != nil {
			return err
		}
		if f.managerDisk, err = diskUse(m0.Dir); err != nil {
			return err
		}
		rows = append(rows, f)
		return nil
	}
	if err := allRun("example/bench:1"); err != nil {
		return err
	}
	fmt.Printf("%d tasks running after %.1f s\n", *tasks, time.Since(start).Seconds())
	if err := measure(fmt.Sprintf("%d tasks running", *tasks)); err != nil {
		return err
	}
	for i := range *updates {
		start := time.Now()
		cur, err := cl.Service(ctx, svc.ID)
		if err != nil {
			return err
		}
		spec := cur.Spec
		spec.TaskTemplate.Image = fmt.Sprintf("example/bench:%d", i+2)
		if _, err := cl.UpdateService(ctx, cur.ID, cur.Version, spec); err != nil {
			return err
		}
		if err := allRun(spec.TaskTemplate.Image); err != nil {
			return err
		}
		fmt.Printf("update %d: %d tasks replaced after %.1f s\n", i+1, *tasks, time.Since(start).Seconds())
	}
	if *updates > 0 {
		if err := measure(fmt.Sprintf("after %d updates of all", *updates)); err != nil {
			return err
		}
	}

	fmt.Printf("\nthe arbiter (target: RSS <= 64 MB with 10,000 tasks)\n")
	fmt.Printf("%-28s %9s %12s %9s %10s %10s %9s   %s\n", "", "raft idx", "task objects", "RSS MB", "peak MB", "heap MB", "sys MB", "disk MB arbiter / manager (allocated)")
	for _, f := range rows {
		fmt.Printf("%-28s %9d %12d %9.1f %10.1f %10.1f %9.1f   %.1f / %.1f (wal %.1f / %.1f, snapshots %.1f / %.1f)\n", f.label, f.index, f.objects,
			float64(f.rss)/1024, float64(f.peak)/1024, mb(int64(f.heap)), mb(int64(f.sys)),
			mb(f.arbiterDisk["total"].alloc), mb(f.managerDisk["total"].alloc),
			mb(f.arbiterDisk["wal"].alloc), mb(f.managerDisk["wal"].alloc),
			mb(f.arbiterDisk["snapshots"].alloc), mb(f.managerDisk["snapshots"].alloc))
	}
	fmt.Printf("\n(task objects include the history kept per slot; log segments are allocated whole when made: %d MiB on the arbiter, 64 MiB on managers)\n", swarm.DefaultArbiterWALSegmentBytes>>20)
	return nil
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

type use struct{ size, alloc int64 }

// diskUse sums a data dir's files by part: the Raft WAL, snapshots, and
// the rest.
func diskUse(dir string) (map[string]use, error) {
	out := map[string]use{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		u := use{size: info.Size()}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			u.alloc = st.Blocks * 512
		}
		part := "other"
		rel, _ := filepath.Rel(dir, path)
		for p := rel; p != "." && p != string(filepath.Separator); p = filepath.Dir(p) {
			if b := filepath.Base(p); b == "wal" || b == "snapshots" {
				part = b
			}
		}
		for _, k := range []string{part, "total"} {
			o := out[k]
			o.size += u.size
			o.alloc += u.alloc
			out[k] = o
		}
		return nil
	})
	return out, err
}
