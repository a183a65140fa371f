package swarmtest

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/internal/waitfor"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// TLSCluster is a cluster of swarm.Nodes in the test's process that talk
// as separate hosts would: over mutual TLS on loopback, each manager with
// its management port, workers joined with the join token. Nodes are
// named m0, m1, ... and node0, node1, ...; their cluster IDs are the ones
// the CA gave them (NodeID).
//
//	c := swarmtest.NewTLS(t, swarmtest.TLSOptions{Managers: 3, Workers: 2})
//	svc, err := c.Client().CreateService(ctx, spec)
//	c.Kill(c.LeaderName())           // no leadership handover
//	c.Restart("m0")                  // from its data dir
//
// Partitions need the in-memory Cluster (or network namespaces).
type TLSCluster struct {
	t    testing.TB
	opts TLSOptions

	base   string // the data dirs are base/NAME
	mu     sync.Mutex
	nodes  map[string]*swarm.Node
	dirs   map[string]string
	execs  map[string]*agent.FakeExecutor
	tokens api.JoinTokens
	seed   string          // a manager's address to join through
	killed map[string]bool // nodes killed and not restarted
}

// TLSOptions shape a TLSCluster.
type TLSOptions struct {
	// Managers (1 when 0) and Workers.
	Managers, Workers int
	// HeartbeatPeriod of the managers; 0 means DefaultHeartbeatPeriod.
	HeartbeatPeriod time.Duration
	// Executor, if set, adjusts each node's fake executor.
	Executor func(name string, e *agent.FakeExecutor)
}

// NewTLS starts a TLS cluster and waits until every node is ready.
func NewTLS(t testing.TB, opts TLSOptions) *TLSCluster {
	t.Helper()
	if opts.Managers <= 0 {
		opts.Managers = 1
	}
	if opts.HeartbeatPeriod <= 0 {
		opts.HeartbeatPeriod = DefaultHeartbeatPeriod
	}
	c := &TLSCluster{t: t, opts: opts, nodes: map[string]*swarm.Node{}, dirs: map[string]string{}, execs: map[string]*agent.FakeExecutor{}, killed: map[string]bool{}}
	// The data dirs live under one made before the cleanup that closes
	// the nodes is registered: cleanups run last first, so the nodes stop
	// before their dirs are removed (a dir removed under a running node
	// fails the test with "directory not empty").
	c.base = t.TempDir()
	t.Cleanup(c.close)
	ctx := context.Background()
	m0 := c.node("m0", true)
	if err := m0.Init(ctx); err != nil {
		t.Fatalf("swarmtest: init: %v", err)
	}
	c.ready("m0")
	cl, err := m0.Client().Cluster(ctx)
	if err != nil {
		t.Fatalf("swarmtest: cluster: %v", err)
	}
	c.tokens, c.seed = cl.JoinTokens, m0.Addr()
	for i := 1; i < opts.Managers; i++ {
		c.join(fmt.Sprint("m", i), true)
	}
	for i := range opts.Workers {
		c.join(fmt.Sprint("node", i), false)
	}
	return c
}

func (c *TLSCluster) node(name string, manager bool) *swarm.Node {
	e := &agent.FakeExecutor{}
	if c.opts.Executor != nil {
		c.opts.Executor(name, e)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dirs[name] == "" {
		c.dirs[name] = filepath.Join(c.base, name)
	}
	n := &swarm.Node{Dir: c.dirs[name], Executor: e, HeartbeatPeriod: c.opts.HeartbeatPeriod,
		Raft: swarm.RaftTuning{HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond}}
	if manager {
		n.ListenAddr = "127.0.0.1:0"
	}
	c.nodes[name], c.execs[name] = n, e
	return n
}

func (c *TLSCluster) join(name string, manager bool) {
	c.t.Helper()
	tok := c.tokens.Worker
	if manager {
		tok = c.tokens.Manager
	}
	if err := c.node(name, manager).Join(context.Background(), tok, c.seed); err != nil {
		c.t.Fatalf("swarmtest: %s joins: %v", name, err)
	}
	c.ready(name)
}

// Join adds a node called name (a manager or a worker) while the cluster
// runs: it joins through the first manager with the cluster's token, as
// `docker swarm join` does, and Join returns once it is ready.
func (c *TLSCluster) Join(name string, manager bool) *swarm.Node {
	c.t.Helper()
	c.join(name, manager)
	return c.Node(name)
}

func (c *TLSCluster) ready(name string) {
	c.t.Helper()
	select {
	case <-c.Node(name).Ready():
	case <-time.After(waitfor.DefaultTimeout):
		c.t.Fatalf("swarmtest: %s not ready", name)
	}
}

func (c *TLSCluster) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nodes {
		n.Close()
	}
	for _, e := range c.execs {
		e.ExitAll()
	}
}

// Node returns the node called name (as last started).
func (c *TLSCluster) Node(name string) *swarm.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[name]
}

// NodeID is the cluster ID of the node called name.
func (c *TLSCluster) NodeID(name string) string { return c.Node(name).ID() }

// Exec returns the fake executor of the node called name.
func (c *TLSCluster) Exec(name string) *agent.FakeExecutor {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.execs[name]
}

// Names lists the nodes' names, managers first.
func (c *TLSCluster) Names() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for n := range c.nodes {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// LeaderName waits for a leading manager and returns its name.
func (c *TLSCluster) LeaderName() string {
	c.t.Helper()
	var name string
	c.WaitFor("a leader", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for nm, n := range c.nodes {
			if m := n.Manager(); m != nil && !c.killed[nm] && m.IsLeader() {
				name = nm
				return true
			}
		}
		return false
	})
	return name
}

// Client is a control API client over TLS with a running manager's
// certificate, that fails over to the others.
func (c *TLSCluster) Client() *swarm.Client {
	c.t.Helper()
	var cl *swarm.Client
	c.WaitFor("a running manager", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, nm := range []string{"m0", "m1", "m2", "m3", "m4", "m5", "m6"} {
			if n := c.nodes[nm]; n != nil && !c.killed[nm] && n.Manager() != nil {
				cl = n.Client()
				return true
			}
		}
		return false
	})
	return cl
}

// Kill stops the node called name at once (Close: a manager hands
// nothing over); its fake tasks stay, as containers outlive an agent.
func (c *TLSCluster) Kill(name string) {
	if err := c.Node(name).Close(); err != nil {
		c.t.Fatalf("swarmtest: kill %s: %v", name, err)
	}
	c.mu.Lock()
	c.killed[name] = true
	c.mu.Unlock()
}

// Restart starts the node called name again from its data dir, on the
// same executor (a worker adopts what runs), and waits until it is ready.
// Start a killed node only.
func (c *TLSCluster) Restart(name string) *swarm.Node {
	c.t.Helper()
	c.mu.Lock()
	old := c.nodes[name]
	e := c.execs[name]
	c.mu.Unlock()
	n := &swarm.Node{Dir: old.Dir, ListenAddr: old.ListenAddr, Executor: e, HeartbeatPeriod: old.HeartbeatPeriod, Raft: old.Raft}
	if err := n.Start(context.Background()); err != nil {
		c.t.Fatalf("swarmtest: restart %s: %v", name, err)
	}
	c.mu.Lock()
	c.nodes[name] = n
	delete(c.killed, name)
	c.mu.Unlock()
	c.ready(name)
	return n
}

// WaitFor polls cond until it holds, failing after waitfor.DefaultTimeout.
func (c *TLSCluster) WaitFor(what string, cond func() bool) time.Duration {
	c.t.Helper()
	return waitfor.True(c.t, what, cond)
}
