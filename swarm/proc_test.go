package swarm_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/agent/containerd"
	"github.com/shoalproject/shoal/internal/waitfor"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/ca"
	"github.com/shoalproject/shoal/swarm/netagent"
)

// Nodes as processes, for tests of crashes (SIGKILL) and restarts from
// disk: the test binary runs a swarm.Node when SHOAL_TEST_NODE_MODE says how
// (init, join or start) and prints what the parent needs on stdout.

// dataPlaneLog passes records at Info and above, and the debug records of
// the data plane (netagent, netmesh) and of draining (a stopping task's
// confirmations and linger): what a test of the network needs to explain a
// failed request, without the rest of the debug volume.
type dataPlaneLog struct{ slog.Handler }

func (h dataPlaneLog) Enabled(context.Context, slog.Level) bool { return true }

func (h dataPlaneLog) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelInfo && !slices.ContainsFunc([]string{"netagent", "netmesh", "drain", "linger", "stopping"},
		func(w string) bool { return strings.Contains(r.Message, w) }) {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h dataPlaneLog) WithAttrs(as []slog.Attr) slog.Handler {
	return dataPlaneLog{h.Handler.WithAttrs(as)}
}

func (h dataPlaneLog) WithGroup(name string) slog.Handler {
	return dataPlaneLog{h.Handler.WithGroup(name)}
}

type childInfo struct {
	ID   string `json:"id"`
	Addr string `json:"addr"`
	Role string `json:"role"`
}

func runChildNode() error {
	env := func(k string) string { return os.Getenv("SHOAL_TEST_" + k) }
	if strings.HasPrefix(env("NODE_MODE"), "arbiter") {
		return runChildArbiter()
	}
	ctx := context.Background()
	n := &swarm.Node{Dir: env("DIR"), ListenAddr: env("LISTEN"), Executor: &agent.FakeExecutor{},
		HeartbeatPeriod: 500 * time.Millisecond}
	// Managers' settings some tests change (Go durations).
	for k, p := range map[string]*time.Duration{"HEARTBEAT": &n.HeartbeatPeriod, "DRAIN_TIMEOUT": &n.DrainTimeout} {
		if v := env(k); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				return fmt.Errorf("SHOAL_TEST_%s: %w", k, err)
			}
			*p = d
		}
	}
	if addr := env("CONTAINERD"); addr != "" {
		// A node of the network tests: real containers, and the data
		// plane in the network namespace the process runs in.
		x := &containerd.Executor{Address: addr, Namespace: env("CTRD_NS"), StateDir: env("STATE"), ImageDir: env("IMAGES")}
		if err := x.Connect(ctx); err != nil {
			return err
		}
		n.Executor = x
		n.Network = &netagent.Agent{Upstreams: []string{}} // cluster names only
		if env("DEBUG") != "" {
			n.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		} else if path := env("LOG"); path != "" {
			// What the node did, for the test to show around a failure.
			f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
			if err != nil {
				return err
			}
			n.Logger = slog.New(dataPlaneLog{slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug})})
		}
	}
	n.TwoNode = childTwoNode()
	if n.TwoNode != nil && n.Logger == nil {
		n.Logger = childFenceLog()
	}
	if env("DEBUG") != "" && n.Logger == nil {
		n.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("dir", filepath.Base(env("DIR")))
	}
	var err error
	switch env("NODE_MODE") {
	case "init":
		err = n.Init(ctx)
	case "join":
		err = n.Join(ctx, env("TOKEN"), env("MANAGER"))
	default:
		err = n.Start(ctx)
	}
	if err != nil {
		return err
	}
	<-n.Ready()
	if na := n.Network; na != nil {
		// SIGUSR1 rotates the node's WireGuard key now (what the
		// 12-hour schedule does), for the network tests.
		usr1 := make(chan os.Signal, 1)
		signal.Notify(usr1, syscall.SIGUSR1)
		go func() {
			for range usr1 {
				if _, err := na.RotateKey(); err != nil {
					fmt.Fprintln(os.Stderr, "child node: rotating the WireGuard key:", err)
				}
			}
		}()
	}
	if err := writeChildPID(n.ID()); err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(childInfo{ID: n.ID(), Addr: n.Addr(), Role: n.Role()})
}

// procNode is a node process the test started.
type procNode struct {
	dir   string
	how   string
	cmd   *exec.Cmd
	info  childInfo
	ready chan error
}

// startProc runs a node process (how: init, join or start); wait waits
// until it is ready.
func startProc(t *testing.T, dir, how, token, manager string) *procNode {
	t.Helper()
	listen := ""
	if how == "init" || (how == "join" && isManagerToken(t, token, manager)) {
		listen = "127.0.0.1:0"
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	cmd.Env = append(os.Environ(), "SHOAL_TEST_NODE_MODE="+how, "SHOAL_TEST_DIR="+dir, "SHOAL_TEST_LISTEN="+listen,
		"SHOAL_TEST_TOKEN="+token, "SHOAL_TEST_MANAGER="+manager)
	return startCmd(t, cmd, dir, how)
}

// startCmd starts a child node command (in a process group of its own,
// killed at the end of the test) and reads what it prints once ready.
func startCmd(t *testing.T, cmd *exec.Cmd, dir, how string) *procNode {
	t.Helper()
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &procNode{dir: dir, cmd: cmd, how: how, ready: make(chan error, 1)}
	t.Cleanup(p.kill)
	go func() { p.ready <- json.NewDecoder(bufio.NewReader(out)).Decode(&p.info) }()
	return p
}

// wait waits until the node process is ready.
func (p *procNode) wait(t testing.TB) *procNode {
	t.Helper()
	select {
	case err := <-p.ready:
		if err != nil {
			t.Fatalf("node process (%s): %v", p.how, err)
		}
	case <-time.After(waitfor.DefaultTimeout):
		t.Fatalf("node process (%s) not ready", p.how)
	}
	return p
}

// kill ends the process with SIGKILL: no goodbye, as a crash.
func (p *procNode) kill() {
	if p.cmd.ProcessState == nil {
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		p.cmd.Wait()
	}
}

// isManagerToken tells the tokens apart by asking for the cluster object.
var managerTokens = map[string]bool{}

func isManagerToken(t *testing.T, token, _ string) bool { return managerTokens[token] }

// clientOf is a control API client with a manager process's certificate.
func clientOf(t *testing.T, managers ...*procNode) *swarm.Client {
	t.Helper()
	cert, root, err := (ca.Files{Dir: managers[0].dir}).Load()
	if err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for _, m := range managers {
		addrs = append(addrs, m.info.Addr)
	}
	return &swarm.Client{Addrs: addrs, TLS: ca.ClientConfig(cert, root, ca.RoleManager)}
}

// Processes killed with SIGKILL: the leader in the middle of a rolling
// update (the update resumes under the new leader and finishes), a worker
// (its tasks are replaced), a worker restarted from its dir (nothing is
// replaced), and the whole cluster restarted from disk.
func TestProcessesKilledAndRestarted(t *testing.T) {
	ctx := context.Background()
	m0 := startProc(t, t.TempDir(), "init", "", "").wait(t)
	cl := clientOf(t, m0)
	c, err := cl.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	managerTokens[c.JoinTokens.Manager] = true
	managers := []*procNode{m0}
	for range 2 {
		managers = append(managers, startProc(t, t.TempDir(), "join", c.JoinTokens.Manager, m0.info.Addr).wait(t))
	}
	var workers []*procNode
	for range 3 {
		workers = append(workers, startProc(t, t.TempDir(), "join", c.JoinTokens.Worker, m0.info.Addr).wait(t))
	}
	cl = clientOf(t, managers...)
	spec := service("web", api.Replicated(6))
	spec.TaskTemplate.Placement = &api.Placement{Constraints: []string{"node.role==worker"}}
	svc, err := cl.CreateService(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, "6 running on the workers", func() bool { return len(running(t, cl, svc.ID)) == 6 })

	// A rolling update, slow enough that the leader dies in the middle.
	cur, _ := cl.Service(ctx, "web")
	up := cur.Spec
	up.TaskTemplate.Image = "example/web:2"
	up.UpdateConfig = &api.UpdateConfig{Parallelism: 1, Monitor: 300 * time.Millisecond, Delay: 200 * time.Millisecond}
	if _, err := cl.UpdateService(ctx, cur.ID, cur.Version, up); err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, "the update under way", func() bool { return clientImages(cl, t, svc.ID)["example/web:2"] >= 1 })
	leader := leaderOf(t, cl, managers)
	leader.kill()
	waitfor.True(t, "the update resumed and finished under a new leader", func() bool {
		s, err := cl.Service(ctx, "web")
		return err == nil && s.UpdateStatus != nil && s.UpdateStatus.State == api.UpdateCompleted &&
			clientImages(cl, t, svc.ID)["example/web:2"] == 6
	})

	// A worker killed: its tasks are replaced elsewhere.
	victim := workers[0]
	victim.kill()
	waitfor.True(t, "the killed worker's tasks replaced", func() bool {
		ts := running(t, cl, svc.ID)
		for _, tk := range ts {
			if tk.NodeID == victim.info.ID {
				return false
			}
		}
		return len(ts) == 6
	})
	// A worker killed and restarted from its dir, in time (before it is
	// declared down): same identity; its fake executor lost its tasks
	// with the process (a real one adopts them: TestKilledWorkerProcess-
	// AdoptsContainers), so it reports them lost and they are replaced.
	w1 := workers[1]
	var lost []string
	for _, tk := range running(t, cl, svc.ID) {
		if tk.NodeID == w1.info.ID {
			lost = append(lost, tk.ID)
		}
	}
	w1.kill()
	w1b := startProc(t, w1.dir, "start", "", "").wait(t)
	if w1b.info.ID != w1.info.ID {
		t.Fatalf("restarted as %s, was %s", w1b.info.ID, w1.info.ID)
	}
	waitfor.True(t, "the restarted worker's lost tasks reported and replaced", func() bool {
		for _, id := range lost {
			tk, err := cl.Task(ctx, id)
			if err == nil && !strings.Contains(tk.Status.Err, "the worker restarted") {
				return false
			}
		}
		return len(running(t, cl, svc.ID)) == 6
	})

	// The whole cluster killed and restarted from disk.
	for _, p := range append(managers, workers...) {
		p.kill()
	}
	w1b.kill()
	// All at once: a manager is ready only once a quorum runs.
	var back, all []*procNode
	for _, m := range managers {
		back = append(back, startProc(t, m.dir, "start", "", ""))
	}
	all = append(all, back...)
	for _, w := range []*procNode{w1, workers[2]} {
		all = append(all, startProc(t, w.dir, "start", "", ""))
	}
	for _, p := range all {
		p.wait(t)
	}
	cl = clientOf(t, back...)
	if _, err := cl.ScaleService(ctx, "web", 4); err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, "4 running after the whole cluster restarted", func() bool { return len(running(t, cl, svc.ID)) == 4 })
}

func leaderOf(t *testing.T, cl *swarm.Client, managers []*procNode) *procNode {
	t.Helper()
	var leader *procNode
	waitfor.True(t, "a leader among the manager processes", func() bool {
		ns, err := cl.Nodes(context.Background(), swarm.Filter{})
		if err != nil {
			return false
		}
		for _, n := range ns {
			if n.ManagerStatus != nil && n.ManagerStatus.Leader {
				for _, m := range managers {
					if m.info.ID == n.ID {
						leader = m
						return true
					}
				}
			}
		}
		return false
	})
	return leader
}

func clientImages(cl *swarm.Client, t *testing.T, serviceID string) map[string]int {
	out := map[string]int{}
	for _, tk := range running(t, cl, serviceID) {
		out[tk.Spec.Image]++
	}
	return out
}

func ids(ts []*api.Task) map[string]bool {
	out := map[string]bool{}
	for _, tk := range ts {
		out[tk.ID] = true
	}
	return out
}

func sameSet(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

// settleClient is settle over the Client: a probe service, its task, gone.
func settleClient(t *testing.T, cl *swarm.Client) {
	t.Helper()
	ctx := context.Background()
	for range 2 {
		spec := service(fmt.Sprint("probe-", probes.Add(1)), api.Replicated(1))
		spec.TaskTemplate.Placement = &api.Placement{Constraints: []string{"node.labels.probe==never"}}
		svc, err := cl.CreateService(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		waitfor.True(t, "the probe reconciled", func() bool {
			ts, err := cl.Tasks(ctx, swarm.Filter{Services: []string{svc.ID}})
			return err == nil && len(ts) > 0
		})
		cl.RemoveService(ctx, svc.ID)
	}
}
