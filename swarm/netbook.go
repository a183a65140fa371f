package swarm

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm/api"
)

// Endpoints come from the leader, in each node's assignment stream, not
// from gossip between nodes: the leader's view is Raft's (a node never
// acts on a record another node made up), it knows a task is about to
// stop before the task's own node does (so every node drains it first),
// and it knows health as the workers report it. The cost is the leader's:
// one shared book, rebuilt per changed service, and per networked node a
// filtered copy sent as a diff (see the figures in docs/ARCHITECTURE.md).

// netBook is the leader's book of the cluster's data plane: networks, the
// endpoints of every service reachable on one (or publishing a port), and
// the nodes that have a data-plane address. Its entries are immutable: a
// changed entry is a new pointer, which is how streams tell what to send.
type netBook struct {
	store  *raftstore.Store
	logger *slog.Logger

	mu         sync.Mutex
	changed    chan struct{} // closed and replaced at every change
	networks   map[string]*api.Network
	ingress    string
	services   map[string]*bookService
	nodes      map[string]*api.NodeEndpoint
	drainState // the tasks leaving the backends before they stop (drain.go)
}

// bookService is a service's entry: its endpoints and the networks it is
// reachable on.
type bookService struct {
	ep       *api.ServiceEndpoints
	networks []string
	// draining are its backends whose desired state is past running:
	// about to stop, once every node has taken them out.
	draining []*api.TaskEndpoint
}

// newNetBook makes a book whose view versions start after base (see
// drainState) and that waits at most drainTimeout for a stopping task's
// drain.
func newNetBook(st *raftstore.Store, logger *slog.Logger, base uint64, drainTimeout time.Duration) *netBook {
	return &netBook{store: st, logger: logger, changed: make(chan struct{}), drainState: newDrainState(base, drainTimeout)}
}

// wait returns a channel closed at the book's next change.
func (b *netBook) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.changed
}

// has reports whether a node has a data-plane address (it runs a network
// agent); only such nodes get a network view.
func (b *netBook) has(nodeID string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.nodes[nodeID] != nil
}

// bookRetryDelay is how long the book and the task pump wait before they
// try again after a failed read or watch.
const bookRetryDelay = time.Second

// sleepCtx waits d, or less if ctx ends first (then it reports false).
func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// run keeps the book while ctx lives (the leader's term).
func (b *netBook) run(ctx context.Context) {
	filter := func(e raftstore.Event) bool {
		switch e.Table {
		case TableServices, TableTasks, TableNodes, TableNetworks:
			return true
		}
		return false
	}
	for ctx.Err() == nil {
		index, err := b.rebuild()
		if err != nil {
			// Kept while leading: the streams would go without network
			// changes for the rest of the term.
			b.logger.Error("swarm: reading the network book; trying again", "err", err)
			if !sleepCtx(ctx, bookRetryDelay) {
				return
			}
			continue
		}
		w, err := b.store.Watch(ctx, index, filter)
		if errors.Is(err, raftstore.ErrResync) {
			continue
		}
		if err != nil {
			b.logger.Error("swarm: watching for the network book; trying again", "err", err)
			if !sleepCtx(ctx, bookRetryDelay) {
				return
			}
			continue
		}
		for ev := range w.Events() {
			dirty := newBookChanges()
			dirty.mark(ev)
			for more := true; more; {
				select {
				case ev, ok := <-w.Events():
					if !ok {
						more = false
						break
					}
					dirty.mark(ev)
				default:
					more = false
				}
			}
			if err := b.update(dirty); err != nil {
				b.logger.Warn("swarm: updating the network book", "err", err)
			}
		}
		w.Stop()
		if !errors.Is(w.Err(), raftstore.ErrResync) {
			return
		}
	}
}

// bookChanges are what a batch of events touched.
type bookChanges struct {
	services map[string]bool
	nodes    map[string]bool
	networks bool
	index    uint64 // the Raft index of the last event (or of the read) taken in
}

func newBookChanges() *bookChanges {
	return &bookChanges{services: map[string]bool{}, nodes: map[string]bool{}}
}

func (c *bookChanges) mark(ev raftstore.Event) {
	c.index = max(c.index, ev.Index)
	switch ev.Table {
	case TableServices:
		c.services[ev.ID] = true
	case TableTasks:
		for _, o := range []raftstore.Object{ev.Object, ev.Old} {
			if t, ok := o.(*api.Task); ok {
				c.services[t.ServiceID] = true
			}
		}
	case TableNodes:
		c.nodes[ev.ID] = true
	case TableNetworks:
		c.networks = true
	}
}

// rebuild reads the whole book again.
func (b *netBook) rebuild() (uint64, error) {
	var index uint64
	c := newBookChanges()
	c.networks = true
	err := b.store.View(func(tx *raftstore.ReadTx) error {
		index = tx.Index()
		c.index = index
		svcs, err := list[*api.Service](tx.List(TableServices))
		if err != nil {
			return err
		}
		for _, s := range svcs {
			c.services[s.ID] = true
		}
		nodes, err := list[*api.Node](tx.List(TableNodes))
		if err != nil {
			return err
		}
		for _, n := range nodes {
			c.nodes[n.ID] = true
		}
		b.mu.Lock()
		for id := range b.services {
			c.services[id] = true
		}
		for id := range b.nodes {
			c.nodes[id] = true
		}
		b.mu.Unlock()
		return b.apply(tx, c)
	})
	return index, err
}

func (b *netBook) update(c *bookChanges) error {
	return b.store.View(func(tx *raftstore.ReadTx) error { return b.apply(tx, c) })
}

// apply recomputes the entries c names from a state of the store.
func (b *netBook) apply(tx *raftstore.ReadTx, c *bookChanges) error {
	var nets map[string]*api.Network
	ingress := ""
	if c.networks {
		all, err := list[*api.Network](tx.List(TableNetworks))
		if err != nil {
			return err
		}
		nets = make(map[string]*api.Network, len(all))
		for _, n := range all {
			nets[n.ID] = n
			if n.Spec.Ingress {
				ingress = n.ID
			}
		}
	}
	svcs := map[string]*bookService{}
	exists := map[string]bool{}
	for id := range c.services {
		o, err := tx.Get(TableServices, id)
		if err != nil {
			svcs[id] = nil // removed
			continue
		}
		exists[id] = true
		svc, in := o.(*api.Service), firstOf(ingress, b.ingressID())
		if !inBook(svc, in) {
			// Its tasks need no reading (100,000 of them, at every
			// batch the scheduler commits).
			svcs[id] = nil
			continue
		}
		tasks, err := list[*api.Task](tx.Find(TableTasks, IndexService, id))
		if err != nil {
			return err
		}
		svcs[id] = serviceEntry(svc, tasks, in)
	}
	nodes := map[string]*api.NodeEndpoint{}
	live := map[string]bool{}
	for id := range c.nodes {
		o, err := tx.Get(TableNodes, id)
		if err != nil {
			nodes[id] = nil
			continue
		}
		n := o.(*api.Node)
		nodes[id] = nodeEntry(n)
		live[id] = nodes[id] != nil && n.Status.State == api.NodeReady
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	changed := b.noteDrains(svcs, exists, tx.Index(), nodes, live, c.index, time.Now())
	if nets != nil && !reflect.DeepEqual(nets, b.networks) {
		b.networks, b.ingress, changed = nets, ingress, true
	}
	if b.services == nil {
		b.services, b.nodes = map[string]*bookService{}, map[string]*api.NodeEndpoint{}
	}
	for id, e := range svcs {
		old := b.services[id]
		switch {
		case e == nil && old == nil:
		case e == nil:
			delete(b.services, id)
			changed = true
		case old == nil || !reflect.DeepEqual(old.ep, e.ep) || !slices.Equal(old.networks, e.networks):
			b.services[id] = e
			changed = true
		}
	}
	for id, e := range nodes {
		old := b.nodes[id]
		switch {
		case e == nil && old == nil:
		case e == nil:
			delete(b.nodes, id)
			changed = true
		case old == nil || !reflect.DeepEqual(old, e):
			b.nodes[id] = e
			changed = true
		}
	}
	if changed {
		close(b.changed)
		b.changed = make(chan struct{})
	}
	return nil
}

func (b *netBook) ingressID() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ingress
}

// inBook reports whether serviceEntry gives s an entry.
func inBook(s *api.Service, ingress string) bool {
	networks, ports := bookKeys(s, ingress)
	return len(networks) > 0 || len(ports) > 0
}

// bookKeys are the networks a service is reachable on and its published
// ports.
func bookKeys(s *api.Service, ingress string) ([]string, []api.PortConfig) {
	var networks []string
	for _, n := range s.Spec.TaskTemplate.Networks {
		if !slices.Contains(networks, n.Target) {
			networks = append(networks, n.Target)
		}
	}
	if ingress != "" && wantsIngress(s) && !slices.Contains(networks, ingress) {
		networks = append(networks, ingress)
	}
	var ports []api.PortConfig
	if s.Endpoint != nil {
		ports = s.Endpoint.Ports
	}
	return networks, ports
}

// serviceEntry is a service's endpoints, or nil when no client can reach
// it (no network, no published port): such services stay out of the book,
// so their tasks' comings and goings wake no stream.
func serviceEntry(s *api.Service, tasks []*api.Task, ingress string) *bookService {
	networks, ports := bookKeys(s, ingress)
	if len(networks) == 0 && len(ports) == 0 {
		return nil
	}
	slices.Sort(networks)
	ep := &api.ServiceEndpoints{ID: s.ID, Name: s.Spec.Name, Mode: api.EndpointVIP, Ports: ports}
	if s.Spec.EndpointSpec != nil && s.Spec.EndpointSpec.Mode != "" {
		ep.Mode = s.Spec.EndpointSpec.Mode
	}
	if s.Endpoint != nil {
		ep.VirtualIPs = s.Endpoint.VirtualIPs
	}
	for _, n := range s.Spec.TaskTemplate.Networks {
		if len(n.Aliases) > 0 {
			if ep.Aliases == nil {
				ep.Aliases = map[string][]string{}
			}
			ep.Aliases[n.Target] = n.Aliases
		}
	}
	var draining []*api.TaskEndpoint
	for _, t := range tasks {
		if te := backendOf(t); te != nil {
			ep.Tasks = append(ep.Tasks, te)
			if t.DesiredState > api.TaskRunning {
				draining = append(draining, te)
			}
		}
	}
	slices.SortFunc(ep.Tasks, func(a, b *api.TaskEndpoint) int { return strings.Compare(a.ID, b.ID) })
	return &bookService{ep: ep, networks: networks, draining: draining}
}

// backendOf is a task as a backend: running tasks only. A running task
// whose desired state is past running is about to stop, and one that
// fails its health check must not get new connections: neither is ready.
// Nor is a task with a health check that no probe has passed yet: it
// reports RUNNING with no health at all a moment before "starting", and
// in that moment its program may not listen yet (connections refused).
func backendOf(t *api.Task) *api.TaskEndpoint {
	if t.Status.State != api.TaskRunning || t.NodeID == "" {
		return nil
	}
	healthy := t.Status.Health == agent.HealthHealthy || (t.Status.Health == "" && !agent.HasHealthcheck(t.Spec.Healthcheck))
	te := &api.TaskEndpoint{ID: t.ID, Name: t.Annotations.Name, NodeID: t.NodeID,
		Ready: t.DesiredState <= api.TaskRunning && healthy}
	for _, na := range t.Networks {
		for _, a := range na.Addresses {
			if p, err := netip.ParsePrefix(a); err == nil {
				if te.Addrs == nil {
					te.Addrs = map[string]string{}
				}
				te.Addrs[na.NetworkID] = p.Addr().String()
				break
			}
		}
	}
	return te
}

// nodeEntry is a node's data-plane identity, or nil for a node without a
// data-plane address (no network agent: simulations, say).
func nodeEntry(n *api.Node) *api.NodeEndpoint {
	if n.Description.DataAddr == "" {
		return nil
	}
	return &api.NodeEndpoint{ID: n.ID, DataAddr: n.Description.DataAddr, WireGuardKey: n.Description.WireGuardKey, Attachments: n.Attachments}
}

// view is a node's network view: the networks its tasks are on (by ID)
// and ingress, the services reachable on those or publishing a port, and
// every node.
func (b *netBook) view(taskNetworks map[string]bool) *api.NetworkView {
	b.mu.Lock()
	defer b.mu.Unlock()
	v := &api.NetworkView{Version: b.version}
	mine := func(id string) bool { return taskNetworks[id] || id == b.ingress }
	for id, n := range b.networks {
		if mine(id) {
			v.Networks = append(v.Networks, n)
		}
	}
	for _, s := range b.services {
		if len(s.ep.Ports) > 0 || slices.ContainsFunc(s.networks, mine) {
			v.Services = append(v.Services, s.ep)
		}
	}
	for _, n := range b.nodes {
		v.Nodes = append(v.Nodes, n)
	}
	slices.SortFunc(v.Networks, func(a, b *api.Network) int { return strings.Compare(a.ID, b.ID) })
	slices.SortFunc(v.Services, func(a, b *api.ServiceEndpoints) int { return strings.Compare(a.ID, b.ID) })
	slices.SortFunc(v.Nodes, func(a, b *api.NodeEndpoint) int { return strings.Compare(a.ID, b.ID) })
	return v
}
