// Command agentbench measures the containerd executor against the raw
// containerd client on this machine, in one run: N tasks of the tiny HTTP
// test image created and started in parallel until all run, then stopped and
// removed. It starts its own private containerd (root, state and socket in a
// temporary directory) and needs root and the containerd and runc packages.
// It prints both timings, their ratio, and the RSS of this process (the
// agent) and of the containerd shims. Docker Swarm's figures, which it does
// not measure, follow apart as a reference, with where they come from.
//
//	go run ./examples/agentbench               # 50 tasks, 2 rounds
//	go run ./examples/agentbench -tasks 10 -rounds 1
//
// A run that has not finished within -timeout (or gets SIGINT or SIGTERM)
// stops waiting, says which containers or tasks it was still waiting for and
// what containerd logged last, and cleans up its daemon before it exits.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	ctrd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/distribution/reference"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/agent/containerd"
	"github.com/shoalproject/shoal/internal/containerdtest"
	"github.com/shoalproject/shoal/internal/procstat"
	"github.com/shoalproject/shoal/internal/testimages"
	"github.com/shoalproject/shoal/swarm/api"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	// A second signal, during the cleanup, ends the program at once.
	context.AfterFunc(ctx, stop)
	err := run(ctx)
	stop()
	if err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context) (err error) {
	n := flag.Int("tasks", 50, "tasks started in parallel")
	rounds := flag.Int("rounds", 2, "rounds of raw client and agent, alternating")
	timeout := flag.Duration("timeout", 5*time.Minute, "give up (and clean up) after this long")
	flag.Parse()
	if *n < 1 || *rounds < 1 || *timeout <= 0 {
		return fmt.Errorf("-tasks and -rounds must be >= 1 and -timeout > 0")
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if os.Geteuid() != 0 {
		return fmt.Errorf("agentbench needs root (it runs containers)")
	}
	d, err := containerdtest.StartDaemon()
	if err != nil {
		return fmt.Errorf("start containerd (apt-get install containerd runc): %w", err)
	}
	defer d.Stop()
	// A bench stuck on containerd says what it was doing, not only that it
	// ran out of time: the daemon's own last words are the best clue.
	defer func() {
		if err != nil && ctx.Err() != nil {
			err = fmt.Errorf("%w\nlast lines of %s:\n%s", err, filepath.Join(d.Dir, "containerd.log"), logTail(d, 20))
		}
	}()
	imageDir, err := os.MkdirTemp("", "agentbench-images-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(imageDir)
	tarball, err := testimages.Build(ctx, imageDir)
	if err != nil {
		return err
	}
	fmt.Printf("agentbench: %d CPUs, %s, %d tasks, containerd in %s\n", runtime.NumCPU(), runtime.Version(), *n, d.Dir)

	raw, err := newRaw(ctx, d.Address, d.Namespace("raw"), tarball)
	if err != nil {
		return err
	}
	defer raw.client.Close()
	ex := &containerd.Executor{Address: d.Address, Namespace: d.Namespace("agent"), StateDir: filepath.Join(d.Dir, "agent"), ImageDir: imageDir}
	if err := ex.Connect(ctx); err != nil {
		return err
	}
	defer ex.Close()
	// Warm up: import the image into the agent's namespace (not timed).
	warm := &api.Task{Meta: api.Meta{ID: "warmup"}, Spec: api.TaskSpec{Image: testimages.AppRef, Args: []string{"exit", "0"}}}
	if err := ex.Prepare(ctx, warm); err != nil {
		return err
	}
	ex.Remove(ctx, "warmup")

	var rawStart, rawStop, agStart, agStop []time.Duration
	for r := range *rounds {
		s, t, killed, err := raw.round(ctx, *n, r)
		if err != nil {
			return fmt.Errorf("raw round %d: %w", r, err)
		}
		rawStart, rawStop = append(rawStart, s), append(rawStop, t)
		s, t, rss, err := agentRound(ctx, ex, *n, r, d)
		if err != nil {
			return fmt.Errorf("agent round %d: %w", r, err)
		}
		agStart, agStop = append(agStart, s), append(agStop, t)
		fmt.Printf("round %d: raw client start %v stop %v | agent start %v stop %v | %s\n", r+1,
			rawStart[r].Round(time.Millisecond), rawStop[r].Round(time.Millisecond), s.Round(time.Millisecond), t.Round(time.Millisecond), rss)
		if killed > 0 {
			// Its stop time holds the grace period: say so, not a slow stop.
			fmt.Printf("  raw client: %d of %d containers ignored SIGTERM (sent while they were starting) and were killed after %v\n", killed, *n, agent.DefaultStopGracePeriod)
		}
	}
	best := func(d []time.Duration) time.Duration { return slices.Min(d) }
	fmt.Printf("\n%d tasks, best of %d rounds:\n", *n, *rounds)
	fmt.Printf("  start until all running: raw client %v, agent %v, ratio %.2f [target <= 1.3]\n",
		best(rawStart).Round(time.Millisecond), best(agStart).Round(time.Millisecond), best(agStart).Seconds()/best(rawStart).Seconds())
	fmt.Printf("  stop and remove:         raw client %v, agent %v, ratio %.2f\n",
		best(rawStop).Round(time.Millisecond), best(agStop).Round(time.Millisecond), best(agStop).Seconds()/best(rawStop).Seconds())
	fmt.Print(dockerSwarmReference)
	return nil
}

// dockerSwarmReference is what shared/anchors/README.md records for real
// Docker Swarm. This program does not run Docker: those figures were taken
// by hand on another machine of the same kind ("these machines"; the README
// gives no date), so they are printed apart, as a reference, never as this
// run's measurements.
const dockerSwarmReference = `
Reference, NOT measured by this run: shared/anchors/README.md (no date recorded) gives
real Docker Swarm on one node of this kind of machine, dockerd 20.10.24: 50 replicas of
a tiny image Running after 14.9 s (23-39 s on an earlier machine), scaled 50 -> 0 in
9.2 s. They apply to 50 tasks only, and no program in the anchors measures them again.
`

type rawBench struct {
	client *ctrd.Client
	img    ctrd.Image
	ns     string // containerd namespace
}

func newRaw(ctx context.Context, addr, ns, tarball string) (*rawBench, error) {
	c, err := ctrd.New(addr)
	if err != nil {
		return nil, err
	}
	ctx = namespaces.WithNamespace(ctx, ns)
	f, err := os.Open(tarball)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := c.Import(ctx, f); err != nil {
		return nil, err
	}
	ref, _ := reference.ParseDockerRef(testimages.AppRef)
	img, err := c.GetImage(ctx, ref.String())
	if err != nil {
		return nil, err
	}
	if err := img.Unpack(ctx, "overlayfs"); err != nil {
		return nil, err
	}
	return &rawBench{client: c, img: img, ns: ns}, nil
}

// round creates and starts n containers in parallel with the plain client
// (the floor any agent is measured against), then stops and removes them.
func (b *rawBench) round(ctx context.Context, n, r int) (start, stop time.Duration, killed int, err error) {
	ctx = namespaces.WithNamespace(ctx, b.ns)
	waiting := newPending()
	var escalated atomic.Int32
	tasks := make([]ctrd.Task, n)
	ctrs := make([]ctrd.Container, n)
	exits := make([]<-chan ctrd.ExitStatus, n)
	errs := make([]error, n)
	t0 := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		id := fmt.Sprintf("raw-%d-%d", r, i)
		waiting.add(id)
		wg.Go(func() {
			defer waiting.done(id)
			c, err := b.client.NewContainer(ctx, id, ctrd.WithImage(b.img), ctrd.WithNewSnapshot(id, b.img),
				ctrd.WithNewSpec(oci.WithImageConfigArgs(b.img, []string{"http", ":8080"})))
			if err != nil {
				errs[i] = err
				return
			}
			ctrs[i] = c
			t, err := c.NewTask(ctx, cio.NullIO)
			if err != nil {
				errs[i] = err
				return
			}
			tasks[i] = t
			if exits[i], err = t.Wait(ctx); err != nil {
				errs[i] = err
				return
			}
			errs[i] = t.Start(ctx)
		})
	}
	if err := waitGroup(ctx, &wg, "raw containers starting"); err != nil {
		return 0, 0, 0, fmt.Errorf("%w: %s", err, waiting)
	}
	start = time.Since(t0)
	settle(ctx)
	t0 = time.Now()
	for i := range n {
		id := fmt.Sprintf("raw-%d-%d", r, i)
		waiting.add(id)
		wg.Go(func() {
			defer waiting.done(id)
			// SIGTERM, then SIGKILL after Docker's default grace, as the
			// agent does: a SIGTERM that reaches the container's PID 1
			// before its program has set a handler (it is still starting)
			// is dropped by the kernel, and that container would never
			// exit (a CI run once hung here). A task whose start failed is
			// deleted by force.
			if tasks[i] != nil {
				if exits[i] != nil && tasks[i].Kill(ctx, syscall.SIGTERM) == nil {
					select {
					case <-exits[i]:
					case <-time.After(agent.DefaultStopGracePeriod):
						escalated.Add(1)
						tasks[i].Kill(ctx, syscall.SIGKILL)
						select {
						case <-exits[i]:
						case <-ctx.Done():
						}
					case <-ctx.Done():
					}
				}
				tasks[i].Delete(ctx, ctrd.WithProcessKill)
			}
			if ctrs[i] != nil {
				ctrs[i].Delete(ctx, ctrd.WithSnapshotCleanup)
			}
		})
	}
	if err := waitGroup(ctx, &wg, "raw containers stopping"); err != nil {
		return start, 0, 0, fmt.Errorf("%w: %s", err, waiting)
	}
	stop = time.Since(t0)
	return start, stop, int(escalated.Load()), errors.Join(errs...)
}

// settle waits a moment between start and stop in both rounds, so that
// each program has set its SIGTERM handler: the stop figure is then the
// time to stop, not the grace period of a SIGTERM that the kernel dropped
// because it reached a container's PID 1 still starting (the raw round
// still escalates to SIGKILL, and says so, if one does).
func settle(ctx context.Context) {
	select {
	case <-time.After(500 * time.Millisecond):
	case <-ctx.Done():
	}
}

// pending is the set of containers or tasks a round still waits for, to
// name them when it gives up.
type pending struct {
	mu  sync.Mutex
	ids map[string]bool
}

func newPending() *pending { return &pending{ids: map[string]bool{}} }

func (p *pending) add(id string) { p.mu.Lock(); p.ids[id] = true; p.mu.Unlock() }

func (p *pending) done(id string) { p.mu.Lock(); delete(p.ids, id); p.mu.Unlock() }

func (p *pending) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return fmt.Sprintf("%d still waited for: %s", len(p.ids), strings.Join(slices.Sorted(maps.Keys(p.ids)), " "))
}

// agentRound runs n tasks through agent runners until all report RUNNING,
// measures memory, then shuts them down and removes them.
func agentRound(ctx context.Context, ex *containerd.Executor, n, r int, d *containerdtest.Daemon) (start, stop time.Duration, rss string, err error) {
	var running sync.WaitGroup
	running.Add(n)
	notYet := newPending()
	cancels := make([]context.CancelFunc, n)
	finals := make([]chan api.TaskStatus, n)
	t0 := time.Now()
	for i := range n {
		tctx, cancel := context.WithCancel(ctx)
		cancels[i], finals[i] = cancel, make(chan api.TaskStatus, 1)
		task := &api.Task{Meta: api.Meta{ID: fmt.Sprintf("ag-%d-%d", r, i)}, ServiceID: "bench",
			Spec: api.TaskSpec{Image: testimages.AppRef, Args: []string{"http", ":8080"}}}
		notYet.add(task.ID)
		var once sync.Once
		runner := &agent.Runner{Executor: ex, Report: func(u agent.StatusUpdate) {
			if u.Status.State == api.TaskRunning || u.Status.State.Terminal() {
				once.Do(func() {
					notYet.done(task.ID)
					running.Done()
				})
			}
		}}
		go func() { finals[i] <- runner.Run(tctx, task) }()
	}
	if err := waitGroup(ctx, &running, "agent tasks starting"); err != nil {
		for _, c := range cancels {
			c()
		}
		return 0, 0, "", fmt.Errorf("%w: of %d tasks, %s", err, n, notYet)
	}
	start = time.Since(t0)
	rss = memory(d)
	settle(ctx)
	t0 = time.Now()
	var wg sync.WaitGroup
	ended := make([]error, n)
	for i := range n {
		wg.Go(func() {
			cancels[i]()
			select {
			case st := <-finals[i]:
				if st.State != api.TaskShutdown {
					ended[i] = fmt.Errorf("task %d ended %v: %s", i, st.State, st.Err)
				}
			case <-ctx.Done():
				return
			}
			ex.Remove(ctx, fmt.Sprintf("ag-%d-%d", r, i))
		})
	}
	if err := waitGroup(ctx, &wg, "agent tasks stopping"); err != nil {
		return start, 0, rss, err
	}
	stop = time.Since(t0)
	return start, stop, rss, errors.Join(ended...)
}

// waitGroup waits for wg, or for ctx to end (the run's deadline or a
// signal), saying what it was waiting for.
func waitGroup(ctx context.Context, wg *sync.WaitGroup, what string) error {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("gave up waiting for %s: %w", what, context.Cause(ctx))
	}
}

// logTail is the last n lines of the daemon's log.
func logTail(d *containerdtest.Daemon, n int) string {
	b, err := os.ReadFile(filepath.Join(d.Dir, "containerd.log"))
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// memory reports this process's RSS (the agent with n running tasks) and
// the total RSS of the shims of our containerd.
func memory(d *containerdtest.Daemon) string {
	runtime.GC()
	debug.FreeOSMemory()
	self := procstat.RSSKB(os.Getpid())
	var shims, nShims int64
	for _, pid := range d.Shims() {
		shims += procstat.RSSKB(pid)
		nShims++
	}
	return fmt.Sprintf("agent RSS %d MB; %d containerd shims %d MB (not counted)", self/1024, nShims, shims/1024)
}
