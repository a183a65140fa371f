// Command clibench prints, side by side in one run, how long the stock
// docker CLI takes to run `docker service create --replicas 50` of the
// tiny HTTP test image until 50 tasks run, and `docker service scale
// NAME=0` until none runs: against a one-node Shoal cluster (shoald init on
// a network-namespace host, with a private containerd) and against Docker
// Swarm on the same machine (dockerd 20.10.24 of Debian's docker.io, with
// its own data root, run the way /work/shared/anchors/README.md describes:
// see dockerd.go). Both are timed the same way: `service create -d`, then
// `docker service ps` polled until the tasks run (what the CLI's progress
// display does, without its 5 s stability wait). For Shoal it also prints
// where the time went: per task state, when the manager committed it and
// the worker's timestamp of it (from the event stream), and per task what
// Prepare (image, network, container) and Start took; -shoald-log FILE
// -shoald-log-level debug keeps the node's log with the step times of each
// task's network wiring and of the executor. As root:
//
//	go run ./examples/clibench                       # both, 50 replicas
//	go run ./examples/clibench -swarm=false -replicas 10   # the Shoal half only (CI)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/shoalproject/shoal/internal/shoallab"
	"github.com/shoalproject/shoal/internal/testimages"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "clibench:", err)
		os.Exit(1)
	}
}

var began = time.Now()

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%5.1fs] %s\n", time.Since(began).Seconds(), fmt.Sprintf(format, args...))
}

// figures are one system's times.
type figures struct {
	create, scale time.Duration
}

func run(ctx context.Context) error {
	replicas := flag.Int("replicas", 50, "replicas of the service")
	swarm := flag.Bool("swarm", true, "measure Docker Swarm too (needs the docker.io package's dockerd); false: the Shoal half only")
	docker := flag.String("docker", "docker", "the docker CLI")
	dockerd := flag.String("dockerd", "/usr/sbin/dockerd", "Docker Swarm's daemon (docker.io, 20.10.24)")
	shoald := flag.String("shoald", "", "the shoald binary (default: built from this tree)")
	flag.StringVar(&shoaldLog, "shoald-log", "", "copy the Shoal node's log to this file at the end")
	flag.Var((*argList)(&shoaldArgs), "shoald-arg", "one more flag for shoald, as --NAME=VALUE (repeat for more), e.g. --log-format=json")
	flag.StringVar(&shoaldLevel, "shoald-log-level", "info", "the Shoal node's log level (debug shows the worker's per-task phase times)")
	flag.DurationVar(&waitLimit, "timeout", waitLimit, "how long to wait for the tasks to run (or stop)")
	flag.Parse()
	if *replicas < 1 || *replicas > 500 {
		return fmt.Errorf("-replicas %d: want 1 to 500", *replicas)
	}
	if os.Geteuid() != 0 {
		return errors.New("run as root: network namespaces and containers")
	}
	cli, err := exec.LookPath(*docker)
	if err != nil {
		return fmt.Errorf("the docker CLI (%s) is missing: this bench drives both systems with it (apt-get install docker.io brings one, 20.10)", *docker)
	}
	cliVersion, _ := exec.CommandContext(ctx, cli, "version", "--format", "{{.Client.Version}}").Output()
	if *swarm {
		if _, err := os.Stat(*dockerd); err != nil {
			return fmt.Errorf("-dockerd %s: %v (apt-get install docker.io, or -swarm=false for the Shoal half only)", *dockerd, err)
		}
	}
	work, err := os.MkdirTemp("", "shoal-clibench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if *shoald == "" {
		*shoald = filepath.Join(work, "shoald")
		logf("building shoald")
		if err := buildShoald(ctx, *shoald); err != nil {
			return err
		}
	}
	shoal, err := measureShoal(ctx, cli, *shoald, *replicas)
	if err != nil {
		return fmt.Errorf("shoal: %w", err)
	}
	var dsw *figures
	var dockerdVersion string
	if *swarm {
		tarball, err := testimages.BuildWeb(ctx, work)
		if err != nil {
			return err
		}
		d := &dockerHost{Dockerd: *dockerd, CLI: cli, Logf: logf}
		if err := d.Start(ctx); err != nil {
			d.Stop()
			return fmt.Errorf("docker swarm: %w", err)
		}
		dockerdVersion = d.Version
		dsw, err = d.measure(ctx, tarball, *replicas)
		if serr := d.Stop(); err == nil {
			err = serr
		}
		if err != nil {
			return fmt.Errorf("docker swarm: %w", err)
		}
	}
	fmt.Printf("docker CLI %s driving both; %d replicas of %s (no published port); %d CPUs, kernel %s\n",
		strings.TrimSpace(string(cliVersion)), *replicas, testimages.WebRef, runtime.NumCPU(), kernel())
	if dsw == nil {
		fmt.Printf("%-44s %10s\n", "", "Shoal")
		fmt.Printf("%-44s %9.2fs\n", fmt.Sprintf("service create --replicas %d -> %d running", *replicas, *replicas), shoal.create.Seconds())
		fmt.Printf("%-44s %9.2fs\n", fmt.Sprintf("service scale =0 -> 0 running"), shoal.scale.Seconds())
		fmt.Println("(Docker Swarm not measured: -swarm=false)")
		return nil
	}
	fmt.Printf("%-44s %10s %14s %12s\n", "", "Shoal", "Docker Swarm", "Swarm/Shoal")
	fmt.Printf("%-44s %9.2fs %13.2fs %11.1fx\n", fmt.Sprintf("service create --replicas %d -> %d running", *replicas, *replicas),
		shoal.create.Seconds(), dsw.create.Seconds(), dsw.create.Seconds()/shoal.create.Seconds())
	fmt.Printf("%-44s %9.2fs %13.2fs %11.1fx\n", "service scale =0 -> 0 running",
		shoal.scale.Seconds(), dsw.scale.Seconds(), dsw.scale.Seconds()/shoal.scale.Seconds())
	fmt.Printf("(Shoal: shoald of this tree, containerd %s; Docker Swarm: dockerd %s with its own containerd)\n", containerdVersion(ctx), dockerdVersion)
	return nil
}

// The Shoal node's log: where it is copied, and at which level; and more
// flags for it.
var (
	shoaldLog, shoaldLevel string
	shoaldArgs             []string
)

// argList is a repeatable string flag.
type argList []string

func (l *argList) String() string { return strings.Join(*l, " ") }

func (l *argList) Set(v string) error {
	if !strings.HasPrefix(v, "--") {
		return fmt.Errorf("%q: give a shoald flag as --NAME=VALUE", v)
	}
	*l = append(*l, v)
	return nil
}

// measureShoal makes a one-node Shoal cluster and times the commands
// through its Docker API socket.
func measureShoal(ctx context.Context, cli, shoald string, replicas int) (f *figures, err error) {
	lab, err := shoallab.New(ctx, shoallab.Options{Shoald: shoald, Hosts: 1, Logf: logf, LogLevel: shoaldLevel, ShoaldArgs: shoaldArgs})
	if err != nil {
		return nil, err
	}
	defer func() {
		if shoaldLog != "" {
			if b, rerr := os.ReadFile(lab.Hosts[0].LogPath()); rerr == nil {
				os.WriteFile(shoaldLog, b, 0o644)
			}
		}
		if cerr := lab.Close(); err == nil {
			err = cerr
		}
	}()
	h := lab.Hosts[0]
	logf("shoald init (one node)")
	c, err := lab.Init(ctx, h)
	if err != nil {
		return nil, err
	}
	// The image goes into the node's containerd first, as `docker load`
	// puts it into dockerd's: neither figure includes loading it.
	tarball := filepath.Join(lab.ImageDir, "web.tar")
	out, err := exec.CommandContext(ctx, "ctr", "--address", lab.Containerd.Address, "--namespace", "node0", "images", "import", tarball).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("ctr images import %s: %v: %s", tarball, err, out)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ph, err := watchPhases(wctx, c)
	if err != nil {
		return nil, fmt.Errorf("watching the tasks: %w", err)
	}
	d := &dockerCLI{CLI: cli, Host: "unix://" + filepath.Join(h.DataDir, "docker.sock"), created: ph.mark, running: func() { ph.print(os.Stdout) }}
	return d.timeService(ctx, "Shoal", testimages.WebRef, replicas)
}

// buildShoald builds examples/shoald from this program's source tree.
func buildShoald(ctx context.Context, out string) error {
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		return errors.New("cannot find the source tree: give -shoald")
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, ".")
	cmd.Dir = filepath.Join(filepath.Dir(self), "..", "shoald")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build shoald: %v\n%s", err, b)
	}
	return nil
}

func kernel() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}

func containerdVersion(ctx context.Context) string {
	b, _ := exec.CommandContext(ctx, "containerd", "--version").Output()
	if f := strings.Fields(string(b)); len(f) >= 3 {
		return f[2]
	}
	return "?"
}
