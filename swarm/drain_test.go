package swarm_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/syncbuf"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/swarmtest"
)

// drainCluster is three nodes with (fake) network agents: web runs one
// task on node0 and one on node1 and publishes a port, so that every node
// routes to it; node2 runs none of its tasks (a routing-mesh node only).
// The workers stop a drained task at once (no linger) and have no bound
// of their own that could end a wait first, so that what is seen is the
// managers' decision alone.
func drainCluster(t *testing.T, drainTimeout time.Duration, logger *slog.Logger) (*swarmtest.Cluster, map[string]*fakeNet, *api.Service) {
	t.Helper()
	return newDrainCluster(t, swarmtest.Options{Logger: logger,
		Manager: func(m *swarm.Manager) { m.DrainTimeout = drainTimeout },
		Worker: func(w *swarm.Worker) {
			w.DrainDelay = -1
			w.DrainTimeout = 10 * time.Minute // the managers' word decides
		}})
}

// newDrainCluster is drainCluster's cluster with opts' managers, workers
// (each gets its fake network agent first) and dispatchers.
func newDrainCluster(t *testing.T, opts swarmtest.Options) (*swarmtest.Cluster, map[string]*fakeNet, *api.Service) {
	t.Helper()
	nets := map[string]*fakeNet{"node0": {}, "node1": {}, "node2": {}}
	addrs := map[string]string{"node0": "127.0.0.2", "node1": "127.0.0.3", "node2": "127.0.0.4"}
	opts.Workers, opts.Executor = 3, testImages
	opts.Description = func(id string) api.NodeDescription {
		d := swarmtest.DefaultDescription(id)
		d.DataAddr = addrs[id]
		return d
	}
	adjust := opts.Worker
	opts.Worker = func(w *swarm.Worker) {
		w.Network = nets[w.NodeID]
		if adjust != nil {
			adjust(w)
		}
	}
	c := swarmtest.New(t, opts)
	web := service("web", api.Replicated(2))
	web.TaskTemplate.Placement = &api.Placement{Constraints: []string{"node.id!=node2"}, MaxReplicas: 1}
	web.EndpointSpec = &api.EndpointSpec{Ports: []api.PortConfig{{TargetPort: 80, PublishedPort: 8080}}}
	svc := create(t, c, web)
	waitReady(c, nets, 2)
	return c, nets, svc
}

// waitReady waits until every node's view has web with n ready backends
// and none draining.
func waitReady(c *swarmtest.Cluster, nets map[string]*fakeNet, n int) {
	c.WaitFor("web's tasks ready in every node's view", func() bool {
		for _, f := range nets {
			v, _ := f.view()
			if ready, draining := readyBackends(serviceIn(v, "web")); len(ready) != n || len(draining) != 0 {
				return false
			}
		}
		return true
	})
}

func scaleTo(t *testing.T, c *swarmtest.Cluster, id string, n uint64) {
	t.Helper()
	m := c.Leader()
	cur := mustService(t, m, id)
	spec := cur.Spec
	spec.Mode = api.Replicated(n)
	if _, err := m.UpdateService(context.Background(), cur.ID, cur.Version, spec); err != nil {
		t.Fatal(err)
	}
}

// scaleDownOne scales web to one task and returns the other once it is
// stopped.
func scaleDownOne(t *testing.T, c *swarmtest.Cluster, web *api.Service) *api.Task {
	t.Helper()
	scaleTo(t, c, web.ID, 1)
	var gone *api.Task
	c.WaitFor("a web task stops", func() bool {
		for _, tk := range c.Tasks(web.ID) {
			if tk.DesiredState > api.TaskRunning && c.Exec(tk.NodeID).Stopped(tk.ID) > 0 {
				gone = tk
				return true
			}
		}
		return false
	})
	return gone
}

// drainingIn is web's backend that a view has draining, if any.
func drainingIn(v *api.NetworkView) *api.TaskEndpoint {
	if s := serviceIn(v, "web"); s != nil {
		for _, te := range s.Tasks {
			if !te.Ready {
				return te
			}
		}
	}
	return nil
}

// A stopping task runs until every node has taken it out of its backends:
// a node slow to apply the view holds the stop (well past the second a
// fixed drain delay gave); a node that goes silent meanwhile does not hold
// it for ever (once it is marked down, the task stops); a task no client
// reaches stops at once, even while a drain waits. The silent node is a
// worker closed in this process (no more heartbeats or confirmations,
// which is all the managers see of a crash; its executor's tasks keep
// running): processes killed with SIGKILL mid-drain are in
// TestDrainThroughCrashes.
func TestDrainWaitsForEveryNode(t *testing.T) {
	c, nets, web := drainCluster(t, 10*time.Minute, nil)
	ctx := context.Background()

	// node2 takes 2.5 s to apply the view in which a web task drains (a
	// loaded node), once per task.
	const slow = 2500 * time.Millisecond
	type confirm struct {
		task    *api.TaskEndpoint
		stopped int // how often the task was stopped when node2 was done
	}
	confirmed := make(chan confirm, 1)
	var mu sync.Mutex
	slowed := map[string]bool{}
	nets["node2"].hold = func(ctx context.Context, v *api.NetworkView) error {
		te := drainingIn(v)
		mu.Lock()
		first := te != nil && !slowed[te.ID]
		if first {
			slowed[te.ID] = true
		}
		mu.Unlock()
		if !first {
			return nil
		}
		select {
		case <-time.After(slow):
		case <-ctx.Done():
			return ctx.Err()
		}
		confirmed <- confirm{te, c.Exec(te.NodeID).Stopped(te.ID)}
		return nil
	}
	scaleTo(t, c, web.ID, 1)
	var got confirm
	select {
	case got = <-confirmed:
	case <-time.After(30 * time.Second):
		t.Fatal("node2 never got a view with a web task draining")
	}
	if got.stopped != 0 {
		t.Fatalf("task %s was stopped before node2 had taken it out of its backends", got.task.ID)
	}
	c.WaitFor("the drained task stops once node2 confirmed", func() bool { return c.Exec(got.task.NodeID).Stopped(got.task.ID) > 0 })
	waitReady(c, nets, 1)

	// A node gone silent: node2 never applies the next drain, and its
	// worker stops heartbeating (closed).
	scaleTo(t, c, web.ID, 2)
	waitReady(c, nets, 2)
	batch := service("batch", api.Replicated(2)) // no network, no port
	batch.TaskTemplate.Placement = &api.Placement{Constraints: []string{"node.id!=node2"}}
	batchSvc := create(t, c, batch)
	c.WaitFor("batch running", func() bool { return len(c.Running(batchSvc.ID)) == 2 })
	held := make(chan *api.TaskEndpoint, 1)
	nets["node2"].hold = func(ctx context.Context, v *api.NetworkView) error {
		te := drainingIn(v)
		if te == nil {
			return nil
		}
		select {
		case held <- te:
		default:
		}
		<-ctx.Done()
		return ctx.Err()
	}
	scaleTo(t, c, web.ID, 1)
	var stuck *api.TaskEndpoint
	select {
	case stuck = <-held:
	case <-time.After(30 * time.Second):
		t.Fatal("node2 never got a view with a web task draining")
	}
	// While that drain waits for node2, a task without endpoints stops
	// at once.
	scaleTo(t, c, batchSvc.ID, 1)
	c.WaitFor("a batch task stopped", func() bool {
		for _, tk := range c.Tasks(batchSvc.ID) {
			if tk.DesiredState > api.TaskRunning && c.Exec(tk.NodeID).Stopped(tk.ID) > 0 {
				return true
			}
		}
		return false
	})
	if n := c.Exec(stuck.NodeID).Stopped(stuck.ID); n != 0 {
		t.Fatalf("web task %s stopped while node2, alive, had not confirmed its drain", stuck.ID)
	}
	c.StopWorker("node2")
	c.WaitFor("the task stops once node2 is down", func() bool { return c.Exec(stuck.NodeID).Stopped(stuck.ID) > 0 })
	if n, err := c.Leader().Node("node2"); err != nil || n.Status.State != api.NodeDown {
		t.Fatalf("node2 after its worker went: %+v %v (want down: the drain waited for that)", n, err)
	}
	_ = ctx
}

// A node that stays up but never confirms (its network agent fails)
// holds a stopping task for the managers' DrainTimeout, no longer; the
// leader says which node did not confirm.
func TestDrainTimeout(t *testing.T) {
	var logs syncbuf.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, nets, web := drainCluster(t, 2*time.Second, logger)
	nets["node2"].hold = func(_ context.Context, v *api.NetworkView) error {
		if drainingIn(v) != nil {
			return errors.New("nft: netlink: operation not permitted (a broken node)")
		}
		return nil
	}
	gone := scaleDownOne(t, c, web)
	if n, err := c.Leader().Node("node2"); err != nil || n.Status.State != api.NodeReady {
		t.Fatalf("node2: %+v %v (want ready: it is the bound that ended the wait)", n, err)
	}
	c.WaitFor("the leader's warning naming node2", func() bool {
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "did not confirm") && strings.Contains(l, gone.ID) && strings.Contains(l, "node2") {
				return true
			}
		}
		return false
	})
}

// fakeDeafDispatcher is a worker's way to the managers on which the
// managers' word that a task has drained (Assignment.Drained) never
// arrives: the worker's own bound has to end the wait.
type fakeDeafDispatcher struct{ swarm.Dispatcher }

func (d fakeDeafDispatcher) Assignments(ctx context.Context, nodeID string) (<-chan *api.Assignment, error) {
	in, err := d.Dispatcher.Assignments(ctx, nodeID)
	if err != nil {
		return nil, err
	}
	out := make(chan *api.Assignment)
	go func() {
		defer close(out)
		for a := range in {
			c := *a
			c.Drained = nil
			select {
			case out <- &c:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// The managers decide the drain bounds and send them in the session: a
// worker whose host set none waits for the managers' word at most their
// DrainTimeout plus DrainTimeoutMargin (not the 15 s default), and lingers
// as long as they say. The word never reaches the workers here (a fake
// dispatcher drops it), so it is the worker's bound that ends the wait.
func TestDrainBoundsFromSession(t *testing.T) {
	var logs syncbuf.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	const managersTimeout, linger = time.Second, 700 * time.Millisecond
	c, _, web := newDrainCluster(t, swarmtest.Options{Logger: logger,
		Manager:    func(m *swarm.Manager) { m.DrainTimeout, m.DrainDelay = managersTimeout, linger },
		Dispatcher: func(_ string, d swarm.Dispatcher) swarm.Dispatcher { return fakeDeafDispatcher{d} }})
	gone := scaleDownOne(t, c, web)
	var bound, lingered bool
	for _, l := range strings.Split(logs.String(), "\n") {
		if !strings.Contains(l, "worker="+gone.NodeID) {
			continue
		}
		if strings.Contains(l, "stopping it anyway") && strings.Contains(l, gone.ID) {
			if want := "waited=" + (managersTimeout + swarm.DrainTimeoutMargin).String(); !strings.Contains(l, want) {
				t.Fatalf("the worker's bound did not follow the managers' DrainTimeout (want %s):\n%s", want, l)
			}
			bound = true
		}
		lingered = lingered || strings.Contains(l, "stops after the linger") && strings.Contains(l, "linger="+linger.String())
	}
	if !bound || !lingered {
		t.Fatalf("the worker's log says nothing of its bound (%v) or of the managers' linger (%v):\n%s", bound, lingered, logs.String())
	}
}
