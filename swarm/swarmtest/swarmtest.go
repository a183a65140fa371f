// Package swarmtest runs a Shoal cluster inside one test process: managers
// in one Raft cluster over an in-memory network, workers on fake
// executors, and controls to stop and restart managers (from their data
// dirs) and workers, and to partition the managers. It is the kit for
// testing code that embeds Shoal, and for Shoal's own tests.
//
//	c := swarmtest.New(t, swarmtest.Options{Managers: 3, Workers: 5, OnDisk: true})
//	svc, err := c.Leader().CreateService(ctx, spec)
//	c.WaitFor("3 running", func() bool { return len(c.Running(svc.ID)) == 3 })
//	c.StopManager(c.Leader().ID) // a new leader takes over
//
// Everything runs in the test's process, so a stopped manager is closed
// (Manager.Close: no leadership handover), not killed. For the store the
// two are close, since every change is fsynced before it is acknowledged,
// but not the same: tests of process crashes run real processes (Shoal's
// own re-execute the test binary as a worker and kill it with SIGKILL).
package swarmtest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/internal/waitfor"
	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// DefaultHeartbeatPeriod is the kit's heartbeat: fast, so tests of node
// loss take a second or less, yet slow enough that a loaded CI machine
// (tests under -race, in parallel) does not miss three in a row.
const DefaultHeartbeatPeriod = 200 * time.Millisecond

// Options shape a test cluster. The zero value is one manager in memory
// and no workers.
type Options struct {
	// Managers is the number of managers (1 when 0).
	Managers int
	// Workers is the number of workers, named node0, node1, ...
	Workers int
	// OnDisk keeps each manager's state in a temporary dir, so that
	// RestartManager restarts it from disk.
	OnDisk bool
	// HeartbeatPeriod of the managers (workers learn it); 0 means
	// DefaultHeartbeatPeriod.
	HeartbeatPeriod time.Duration
	// Raft tunes the managers' Raft; zero fields mean fast test timings
	// (elections in about 200 ms).
	Raft swarm.RaftTuning
	// Manager, if set, adjusts each manager before it starts.
	Manager func(*swarm.Manager)
	// Executor, if set, adjusts each worker's fake executor (exit codes,
	// missing images, health check results).
	Executor func(nodeID string, e *agent.FakeExecutor)
	// Description, if set, describes each worker's node (read at every
	// worker start); by default 4 CPUs, 8 GiB, linux/x86_64.
	Description func(nodeID string) api.NodeDescription
	// Worker, if set, adjusts each worker before it starts (a network
	// agent, a drain delay).
	Worker func(*swarm.Worker)
	// Dispatcher, if set, wraps each worker's way to the managers (to
	// inject faults).
	Dispatcher func(nodeID string, d swarm.Dispatcher) swarm.Dispatcher
	// Logger receives the cluster's logs; nil logs warnings to stderr.
	Logger *slog.Logger
}

// Cluster is a running test cluster. Its methods fail the test on errors
// and are for the test's goroutine.
type Cluster struct {
	t    testing.TB
	opts Options
	// Net carries the managers' Raft traffic; Partition and Heal cut and
	// restore it.
	Net *raftstore.MemNetwork

	mu       sync.Mutex
	ids      []string
	boot     []raftstore.Server
	dirs     map[string]string
	managers map[string]*swarm.Manager
	links    map[string]*link
	workers  map[string]*swarm.Worker
	execs    map[string]agent.Executor
}

// New starts a cluster and waits until it has a leader and every worker
// is registered. Everything stops when the test ends.
func New(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Managers <= 0 {
		opts.Managers = 1
	}
	if opts.HeartbeatPeriod <= 0 {
		opts.HeartbeatPeriod = DefaultHeartbeatPeriod
	}
	if opts.Raft.HeartbeatTimeout == 0 {
		opts.Raft.HeartbeatTimeout = 200 * time.Millisecond
	}
	if opts.Raft.ElectionTimeout == 0 {
		opts.Raft.ElectionTimeout = 200 * time.Millisecond
	}
	if opts.Raft.LeaderLeaseTimeout == 0 {
		opts.Raft.LeaderLeaseTimeout = min(100*time.Millisecond, opts.Raft.HeartbeatTimeout)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	c := &Cluster{t: t, opts: opts, Net: raftstore.NewMemNetwork(), dirs: map[string]string{},
		managers: map[string]*swarm.Manager{}, links: map[string]*link{}, workers: map[string]*swarm.Worker{}, execs: map[string]agent.Executor{}}
	for i := range opts.Managers {
		id := fmt.Sprint("m", i)
		c.ids = append(c.ids, id)
		c.boot = append(c.boot, raftstore.Server{ID: id, Address: id, Voter: true})
		if opts.OnDisk {
			c.dirs[id] = t.TempDir()
		}
		c.links[id] = &link{}
	}
	t.Cleanup(c.close)
	for _, id := range c.ids {
		c.StartManager(id)
	}
	c.Leader()
	for i := range opts.Workers {
		c.AddWorker(fmt.Sprint("node", i))
	}
	return c
}

func (c *Cluster) close() {
	c.mu.Lock()
	workers := maps(c.workers)
	managers := maps(c.managers)
	execs := maps(c.execs)
	for _, l := range c.links {
		l.set(nil)
	}
	c.mu.Unlock()
	for _, w := range workers {
		w.Close()
	}
	for _, m := range managers {
		m.Close()
	}
	// Fake tasks outlive their worker, as containers do; end them, so that
	// nothing of this test is left running in the test binary.
	for _, e := range execs {
		if fe, ok := e.(*agent.FakeExecutor); ok {
			fe.ExitAll()
		}
	}
}

func maps[V any](m map[string]V) []V {
	out := make([]V, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// ManagerIDs lists the managers' IDs (m0, m1, ...).
func (c *Cluster) ManagerIDs() []string { return slices.Clone(c.ids) }

// StartManager starts (or restarts, from its data dir when OnDisk) the
// manager id.
func (c *Cluster) StartManager(id string) *swarm.Manager {
	c.t.Helper()
	m := &swarm.Manager{ID: id, Dir: c.dirs[id], Transport: c.Net.Transport(id), Bootstrap: c.boot,
		HeartbeatPeriod: c.opts.HeartbeatPeriod, Raft: c.opts.Raft, Logger: c.opts.Logger.With("manager", id)}
	if c.opts.Manager != nil {
		c.opts.Manager(m)
	}
	if err := m.Start(context.Background()); err != nil {
		c.t.Fatalf("swarmtest: start manager %s: %v", id, err)
	}
	c.mu.Lock()
	c.managers[id] = m
	c.links[id].set(m)
	c.mu.Unlock()
	return m
}

// StopManager closes the manager id without handing over leadership, as
// a crash would; its workers fail over to the others.
func (c *Cluster) StopManager(id string) {
	c.t.Helper()
	c.mu.Lock()
	m := c.managers[id]
	delete(c.managers, id)
	c.links[id].set(nil)
	c.mu.Unlock()
	if m == nil {
		c.t.Fatalf("swarmtest: manager %s is not running", id)
	}
	m.Close()
}

// RestartManager stops the manager id and starts it again from its data
// dir (needs OnDisk).
func (c *Cluster) RestartManager(id string) *swarm.Manager {
	c.t.Helper()
	if !c.opts.OnDisk {
		c.t.Fatal("swarmtest: RestartManager needs Options.OnDisk")
	}
	c.StopManager(id)
	return c.StartManager(id)
}

// Manager returns the running manager id, or nil.
func (c *Cluster) Manager(id string) *swarm.Manager {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.managers[id]
}

// Leader waits for a running manager that leads and is ready, and
// returns it.
func (c *Cluster) Leader() *swarm.Manager {
	c.t.Helper()
	var leader *swarm.Manager
	c.WaitFor("a ready leader", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, id := range c.ids {
			if m := c.managers[id]; m != nil && m.IsLeader() {
				select {
				case <-m.Ready():
					leader = m
					return true
				default:
				}
			}
		}
		return false
	})
	return leader
}

// OnLeader calls fn with the leader, again with the leader of the moment
// while fn fails with an error swarm.Retryable says another manager or a
// later try may not give (no leader yet, not the leader, no quorum), and
// returns fn's last error. Tests write through it right after a failover:
// under load a new leader can lose its term before the write lands, as a
// real client would see and retry. Not for a write that may have been
// committed before it failed (ErrNoQuorum after the append): its retry
// then says ErrNameInUse or a version conflict, which the test sees.
func (c *Cluster) OnLeader(fn func(m *swarm.Manager) error) error {
	c.t.Helper()
	var err error
	c.WaitFor("a write through the leader", func() bool {
		err = fn(c.Leader())
		return !swarm.Retryable(err)
	})
	return err
}

// Partition cuts the Raft links between two groups of managers.
func (c *Cluster) Partition(a, b []string) { c.Net.Partition(a, b) }

// Heal restores every Raft link.
func (c *Cluster) Heal() { c.Net.Heal() }

func (c *Cluster) description(id string) api.NodeDescription {
	if c.opts.Description != nil {
		return c.opts.Description(id)
	}
	return DefaultDescription(id)
}

// DefaultDescription is how a test node describes itself unless
// Options.Description says otherwise: 4 CPUs, 8 GiB, no data-plane
// address (no network agent, so no network view).
func DefaultDescription(id string) api.NodeDescription {
	return api.NodeDescription{Hostname: id, Platform: api.Platform{OS: "linux", Architecture: "x86_64"},
		Resources: api.Resources{NanoCPUs: 4e9, MemoryBytes: 8 << 30}}
}

// AddWorker starts a worker on a new fake executor.
func (c *Cluster) AddWorker(id string) *swarm.Worker {
	c.t.Helper()
	e := &agent.FakeExecutor{}
	if c.opts.Executor != nil {
		c.opts.Executor(id, e)
	}
	return c.AddWorkerOn(id, e)
}

// AddWorkerOn starts a worker on the given executor (a real one, for
// tests with containers).
func (c *Cluster) AddWorkerOn(id string, e agent.Executor) *swarm.Worker {
	c.t.Helper()
	c.mu.Lock()
	c.execs[id] = e
	c.mu.Unlock()
	return c.StartWorker(id)
}

// StartWorker starts (or restarts) the worker id on its executor: a
// restarted worker adopts the tasks its executor still runs.
func (c *Cluster) StartWorker(id string) *swarm.Worker {
	c.t.Helper()
	c.mu.Lock()
	e := c.execs[id]
	var ds []swarm.Dispatcher
	for _, mid := range c.ids {
		ds = append(ds, c.links[mid])
	}
	c.mu.Unlock()
	if e == nil {
		c.t.Fatalf("swarmtest: no worker %s (AddWorker first)", id)
	}
	var d swarm.Dispatcher = &swarm.Failover{Managers: ds}
	if c.opts.Dispatcher != nil {
		d = c.opts.Dispatcher(id, d)
	}
	w := &swarm.Worker{NodeID: id, Executor: e, Dispatcher: d, Description: c.description(id), Logger: c.opts.Logger.With("worker", id)}
	if c.opts.Worker != nil {
		c.opts.Worker(w)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitfor.DefaultTimeout)
	defer cancel()
	if err := w.Start(ctx); err != nil {
		c.t.Fatalf("swarmtest: start worker %s: %v", id, err)
	}
	c.mu.Lock()
	c.workers[id] = w
	c.mu.Unlock()
	select {
	case <-w.Ready(): // it has applied its first assignments (adopted what it found)
	case <-ctx.Done():
		c.t.Fatalf("swarmtest: worker %s took no assignments", id)
	}
	return w
}

// StopWorker stops the worker id's agent: it goes silent (the managers
// mark its node down after three heartbeat periods) while its tasks keep
// running on its executor.
func (c *Cluster) StopWorker(id string) {
	c.t.Helper()
	c.mu.Lock()
	w := c.workers[id]
	delete(c.workers, id)
	c.mu.Unlock()
	if w == nil {
		c.t.Fatalf("swarmtest: worker %s is not running", id)
	}
	w.Close()
}

// RestartWorker stops the worker id and starts it again on the same
// executor.
func (c *Cluster) RestartWorker(id string) *swarm.Worker {
	c.t.Helper()
	c.StopWorker(id)
	return c.StartWorker(id)
}

// Worker returns the running worker id, or nil.
func (c *Cluster) Worker(id string) *swarm.Worker {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.workers[id]
}

// Exec returns the worker id's fake executor (nil for a worker added on
// another executor).
func (c *Cluster) Exec(id string) *agent.FakeExecutor {
	c.mu.Lock()
	defer c.mu.Unlock()
	fe, _ := c.execs[id].(*agent.FakeExecutor)
	return fe
}

// Executor returns the worker id's executor.
func (c *Cluster) Executor(id string) agent.Executor {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.execs[id]
}

// anyManager returns a running manager, the leader if there is one.
func (c *Cluster) anyManager() *swarm.Manager {
	c.mu.Lock()
	defer c.mu.Unlock()
	var any *swarm.Manager
	for _, id := range c.ids {
		if m := c.managers[id]; m != nil {
			if m.IsLeader() {
				return m
			}
			if any == nil {
				any = m
			}
		}
	}
	return any
}

// Tasks lists a service's tasks (every task when serviceID is empty), as
// the leader (or any running manager) knows them.
func (c *Cluster) Tasks(serviceID string) []*api.Task {
	c.t.Helper()
	m := c.anyManager()
	if m == nil {
		c.t.Fatal("swarmtest: no manager is running")
	}
	ts, err := m.Tasks(serviceID)
	if err != nil {
		c.t.Fatalf("swarmtest: tasks: %v", err)
	}
	return ts
}

// Running returns the service's tasks that run and should.
func (c *Cluster) Running(serviceID string) []*api.Task {
	c.t.Helper()
	var out []*api.Task
	for _, t := range c.Tasks(serviceID) {
		if t.Status.State == api.TaskRunning && t.DesiredState == api.TaskRunning {
			out = append(out, t)
		}
	}
	return out
}

// WaitFor polls cond until it holds, failing the test after
// waitfor.DefaultTimeout with the cluster's tasks and nodes.
func (c *Cluster) WaitFor(what string, cond func() bool) time.Duration {
	c.t.Helper()
	return waitfor.True(c.t, what, cond, c.Dump)
}

// Dump describes the cluster's nodes and tasks, for failure messages.
func (c *Cluster) Dump() string {
	m := c.anyManager()
	if m == nil {
		return "no manager running"
	}
	var b strings.Builder
	nodes, _ := m.Nodes()
	for _, n := range nodes {
		fmt.Fprintf(&b, "node %s %s %s\n", n.ID, n.Status.State, n.Spec.Availability)
	}
	ts, _ := m.Tasks("")
	sort.Slice(ts, func(i, j int) bool {
		if ts[i].ServiceID != ts[j].ServiceID {
			return ts[i].ServiceID < ts[j].ServiceID
		}
		return ts[i].Slot < ts[j].Slot
	})
	for _, t := range ts {
		fmt.Fprintf(&b, "task %s svc %.6s slot %d node %q desired %s state %s health %q %s %s\n",
			t.ID[:min(6, len(t.ID))], t.ServiceID, t.Slot, t.NodeID, t.DesiredState, t.Status.State, t.Status.Health, t.Status.Message, t.Status.Err)
	}
	return b.String()
}
