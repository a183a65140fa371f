package swarm

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/scheduler"
	"github.com/shoalproject/shoal/swarm/api"
)

// DefaultHeartbeatPeriod is how often workers report; a node silent for
// three periods is down and its tasks are replaced elsewhere (Docker waits
// about 15 s; a second or so here).
const DefaultHeartbeatPeriod = time.Second

// Errors of the control API.
var (
	// ErrNameInUse is returned for a service name another service has.
	ErrNameInUse = errors.New("swarm: name in use")
	// ErrNotFound is returned for an object that does not exist.
	ErrNotFound = errors.New("swarm: not found")
	// ErrNotManagerLeader is returned by a manager that cannot act now.
	ErrNotManagerLeader = errors.New("swarm: this manager is not the leader")
)

// Manager keeps the cluster's desired state in Raft (raftstore) and drives
// it: the orchestrators keep every service's tasks (replicas, one per node
// for global services, replacements by restart policy, history), the
// scheduler places pending tasks, and the dispatcher hands tasks to workers
// and takes their status. Several managers form one Raft cluster; only the
// leader reconciles and takes writes, and a new leader takes over where
// the old one stopped. Workers reach managers through the Dispatcher
// interface (in-process so far; the network API comes next).
type Manager struct {
	// ID is the manager's node ID and Raft member ID; empty means a new one.
	ID string
	// Dir keeps the Raft log and snapshots; empty keeps state in memory.
	Dir string
	// Transport carries Raft traffic; nil means an in-memory transport
	// (a single manager).
	Transport raft.Transport
	// Bootstrap lists the managers of a new cluster (this one included),
	// used only when Dir holds no state; empty means this manager alone.
	Bootstrap []raftstore.Server
	// HeartbeatPeriod is how often workers must report; 0 means
	// DefaultHeartbeatPeriod.
	HeartbeatPeriod time.Duration
	// Scheduler places tasks; nil means spread.
	Scheduler *scheduler.Scheduler
	// Logger receives the manager's logs; nil discards.
	Logger *slog.Logger

	store   *raftstore.Store
	cancel  context.CancelFunc
	done    chan struct{}
	ready   chan struct{}
	wake    chan struct{}
	mu      sync.Mutex
	seen    map[string]time.Time // last heartbeat per node (leader memory, as in swarmkit)
	started time.Time
}

// Start opens the store, becomes leader of a one-manager cluster and starts
// reconciling.
func (m *Manager) Start(ctx context.Context) error {
	if m.store != nil {
		return errors.New("swarm: manager already started")
	}
	if m.ID == "" {
		m.ID = newID()
	}
	transport := m.Transport
	if transport == nil {
		transport = raftstore.NewMemNetwork().Transport(m.ID)
	}
	boot := m.Bootstrap
	if len(boot) == 0 {
		boot = []raftstore.Server{{ID: m.ID, Address: string(transport.LocalAddr()), Voter: true}}
	}
	st := &raftstore.Store{ID: m.ID, Dir: m.Dir, Schema: Schema(), Transport: transport, Logger: m.Logger, Bootstrap: boot}
	if err := st.Start(ctx); err != nil {
		return err
	}
	m.store = st
	m.seen = map[string]time.Time{}
	m.wake = make(chan struct{}, 1)
	m.ready = make(chan struct{})
	m.done = make(chan struct{})
	runCtx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go m.run(runCtx)
	return nil
}

// Ready is closed once the manager leads and reconciles.
func (m *Manager) Ready() <-chan struct{} { return m.ready }

// Store is the manager's replicated store, for reads and watches.
func (m *Manager) Store() *raftstore.Store { return m.store }

// Close stops reconciling and closes the store.
func (m *Manager) Close() error {
	if m.store == nil {
		return nil
	}
	m.cancel()
	<-m.done
	return m.store.Close()
}

func (m *Manager) heartbeatPeriod() time.Duration {
	if m.HeartbeatPeriod > 0 {
		return m.HeartbeatPeriod
	}
	return DefaultHeartbeatPeriod
}

func (m *Manager) logger() *slog.Logger {
	if m.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return m.Logger
}

func (m *Manager) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// run follows leadership: while this manager leads, lead runs.
func (m *Manager) run(ctx context.Context) {
	defer close(m.done)
	leaders, err := m.store.WatchLeader(ctx)
	if err != nil {
		m.logger().Error("swarm: manager cannot watch leadership", "err", err)
		return
	}
	var (
		stop     context.CancelFunc
		stopped  chan struct{}
		isReady  bool
		stopLead = func() {
			if stop != nil {
				stop()
				<-stopped
				stop = nil
			}
		}
	)
	defer stopLead()
	for {
		select {
		case <-ctx.Done():
			return
		case li, ok := <-leaders:
			if !ok {
				return
			}
			if li.ID != "" && !isReady {
				isReady = true
				close(m.ready)
			}
			if li.Self && stop == nil {
				lctx, cancel := context.WithCancel(ctx)
				stop, stopped = cancel, make(chan struct{})
				m.logger().Info("swarm: leading", "manager", m.ID)
				go func() {
					defer close(stopped)
					m.lead(lctx)
				}()
			} else if !li.Self {
				stopLead()
			}
		}
	}
}

// lead reconciles on every change of services, tasks or nodes, when a
// restart delay ends, and at least every half heartbeat period (to notice
// silent nodes).
func (m *Manager) lead(ctx context.Context) {
	m.mu.Lock()
	// Heartbeats seen while following are not trusted: every node gets a
	// full grace from now.
	m.seen = map[string]time.Time{}
	m.started = time.Now()
	m.mu.Unlock()
	w, err := m.store.Watch(ctx, 0, func(e raftstore.Event) bool {
		return e.Table == TableServices || e.Table == TableTasks || e.Table == TableNodes
	})
	if err != nil {
		m.logger().Error("swarm: manager cannot watch its store", "err", err)
		return
	}
	tick := time.NewTicker(m.heartbeatPeriod() / 2)
	defer tick.Stop()
	var retry <-chan time.Time
	for {
		next, err := m.reconcile(ctx)
		if err != nil && ctx.Err() == nil {
			m.logger().Warn("swarm: reconcile", "err", err)
		}
		retry = nil
		if !next.IsZero() {
			retry = time.After(time.Until(next))
		}
		select {
		case <-ctx.Done():
			return
		case _, ok := <-w.Events():
			if !ok {
				return // the store closed, or leadership ended
			}
			drain(w.Events())
		case <-m.wake:
		case <-tick.C:
		case <-retry:
		}
	}
}

// reconcile is one pass: node liveness, every service's tasks, placement of
// pending tasks. It returns when to look again for a restart delay.
func (m *Manager) reconcile(ctx context.Context) (time.Time, error) {
	var (
		nodes    []*api.Node
		services []*api.Service
		tasks    []*api.Task
	)
	err := m.store.View(func(tx *raftstore.ReadTx) (err error) {
		if nodes, err = list[*api.Node](tx.List(TableNodes)); err != nil {
			return err
		}
		if services, err = list[*api.Service](tx.List(TableServices)); err != nil {
			return err
		}
		tasks, err = list[*api.Task](tx.List(TableTasks))
		return err
	})
	if err != nil {
		return time.Time{}, err
	}
	now := time.Now().UTC()
	// Store objects are read-only: work on copies.
	for i, t := range tasks {
		c := *t
		tasks[i] = &c
	}
	var nodeUpdates []*api.Node
	nodeByID := map[string]*api.Node{}
	m.mu.Lock()
	grace := 3 * m.heartbeatPeriod()
	for i, n := range nodes {
		last, ok := m.seen[n.ID]
		if !ok {
			last = m.started // nodes get a full grace after a manager starts
		}
		if n.Status.State == api.NodeReady && now.Sub(last) > grace {
			c := *n
			c.Status = api.NodeStatus{State: api.NodeDown, Message: fmt.Sprintf("no heartbeat for %v", now.Sub(last).Round(time.Millisecond)), Addr: n.Status.Addr}
			nodes[i] = &c
			nodeUpdates = append(nodeUpdates, &c)
		}
		nodeByID[nodes[i].ID] = nodes[i]
	}
	m.mu.Unlock()

	r := &reconciler{now: now, newID: newID, history: DefaultTaskHistory}
	byService := map[string][]*api.Task{}
	for _, t := range tasks {
		byService[t.ServiceID] = append(byService[t.ServiceID], t)
	}
	var p plan
	var serviceUpdates []*api.Service
	known := map[string]bool{}
	for _, svc := range services {
		known[svc.ID] = true
		sp := r.reconcile(svc, byService[svc.ID], nodeByID)
		if sp.service != nil {
			serviceUpdates = append(serviceUpdates, sp.service)
		}
		p.create = append(p.create, sp.create...)
		p.update = append(p.update, sp.update...)
		p.remove = append(p.remove, sp.remove...)
		if !sp.retryAt.IsZero() && (p.retryAt.IsZero() || sp.retryAt.Before(p.retryAt)) {
			p.retryAt = sp.retryAt
		}
	}
	// Tasks of removed services: shut down, then gone once ended.
	for id, ts := range byService {
		if known[id] {
			continue
		}
		for _, t := range ts {
			switch {
			case ended(t) || t.NodeID == "":
				p.remove = append(p.remove, t)
			case t.DesiredState < api.TaskShutdown:
				t.DesiredState = api.TaskShutdown
				p.update = append(p.update, t)
			}
		}
	}
	all := append(append([]*api.Task(nil), tasks...), p.create...)
	sched := m.Scheduler
	if sched == nil {
		sched = scheduler.New(scheduler.Config{})
	}
	assigned := assign(sched, nodes, all, now)

	// Commit: creations first (with their placement when the scheduler
	// placed them in this pass), then updates; each object once.
	creating := map[*api.Task]bool{}
	for _, t := range p.create {
		creating[t] = true
	}
	updating := map[*api.Task]bool{}
	for _, t := range append(p.update, assigned...) {
		if !creating[t] {
			updating[t] = true
		}
	}
	if len(nodeUpdates)+len(p.create)+len(updating)+len(p.remove)+len(serviceUpdates) == 0 {
		return p.retryAt, nil
	}
	res, err := m.store.Batch(ctx, func(b *raftstore.Batch) error {
		for _, svc := range serviceUpdates {
			svc.UpdatedAt = now
			if err := b.Update(TableServices, svc); err != nil {
				return err
			}
			if svc.UpdateStatus != nil {
				m.logger().Info("swarm: service update", "service", svc.Spec.Name, "state", svc.UpdateStatus.State, "message", svc.UpdateStatus.Message)
			}
		}
		for _, n := range nodeUpdates {
			n.UpdatedAt = now
			if err := b.Update(TableNodes, n); err != nil {
				return err
			}
		}
		for _, t := range p.create {
			if err := b.Create(TableTasks, t); err != nil {
				return err
			}
		}
		for t := range updating {
			t.UpdatedAt = now
			if err := b.Update(TableTasks, t); err != nil {
				return err
			}
		}
		for _, t := range p.remove {
			if err := b.Delete(TableTasks, t.ID, t.Version); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil && len(res.Conflicts) > 0 {
		// A worker's report raced this pass: the next pass sees it.
		m.logger().Debug("swarm: reconcile conflicts", "count", len(res.Conflicts))
		m.poke()
	}
	return p.retryAt, err
}

// drain takes what is waiting in ch, to coalesce a burst of changes into
// one pass; it stops at a closed channel too.
func drain(ch <-chan raftstore.Event) {
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		default:
			return
		}
	}
}

// newID is a random ID of 25 lowercase letters and digits, as Docker's.
func newID() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 25)
	rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// CreateService validates spec and stores a new service; the orchestrator
// makes its tasks.
func (m *Manager) CreateService(ctx context.Context, spec api.ServiceSpec) (*api.Service, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	svc := &api.Service{Meta: api.Meta{ID: newID(), CreatedAt: now, UpdatedAt: now}, Spec: spec}
	err := m.store.Update(ctx, func(tx *raftstore.Tx) error {
		if same, err := tx.Find(TableServices, IndexName, spec.Name); err != nil {
			return err
		} else if len(same) > 0 {
			return fmt.Errorf("%w: service %q exists (ID %s); choose another name or update it", ErrNameInUse, spec.Name, same[0].ObjectID())
		}
		return tx.Create(TableServices, svc)
	})
	if err != nil {
		return nil, err
	}
	return svc, nil
}

// UpdateService replaces a service's spec. version is the version the
// caller read; a concurrent change makes the update fail with a conflict
// instead of losing it.
func (m *Manager) UpdateService(ctx context.Context, id string, version uint64, spec api.ServiceSpec) (*api.Service, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	var out *api.Service
	err := m.store.Update(ctx, func(tx *raftstore.Tx) error {
		o, err := tx.Get(TableServices, id)
		if err != nil {
			return fmt.Errorf("%w: service %s", ErrNotFound, id)
		}
		svc := *o.(*api.Service)
		if svc.Spec.Name != spec.Name {
			return fmt.Errorf("%w: a service cannot be renamed (%q to %q)", api.ErrInvalidSpec, svc.Spec.Name, spec.Name)
		}
		prev := svc.Spec
		now := time.Now().UTC()
		a, _ := json.Marshal(prev.TaskTemplate)
		b, _ := json.Marshal(spec.TaskTemplate)
		if !bytes.Equal(a, b) {
			// The tasks must change: a rolling update starts.
			svc.UpdateStatus = &api.UpdateStatus{State: api.UpdateUpdating, StartedAt: now, Message: "update in progress"}
		}
		svc.PreviousSpec, svc.Spec, svc.Version, svc.UpdatedAt = &prev, spec, version, now
		out = &svc
		return tx.Update(TableServices, &svc)
	})
	return out, err
}

// RollbackService goes back to the service's previous spec, as a rolling
// update under its rollback config (docker service rollback).
func (m *Manager) RollbackService(ctx context.Context, id string) (*api.Service, error) {
	var out *api.Service
	err := m.store.Update(ctx, func(tx *raftstore.Tx) error {
		o, err := tx.Get(TableServices, id)
		if err != nil {
			return fmt.Errorf("%w: service %s", ErrNotFound, id)
		}
		svc := *o.(*api.Service)
		if svc.PreviousSpec == nil {
			return fmt.Errorf("%w: service %s has no previous spec to roll back to (it was never updated)", api.ErrInvalidSpec, svc.Spec.Name)
		}
		cur := svc.Spec
		now := time.Now().UTC()
		svc.Spec, svc.PreviousSpec, svc.UpdatedAt = *svc.PreviousSpec, &cur, now
		svc.UpdateStatus = &api.UpdateStatus{State: api.UpdateRollbackStarted, StartedAt: now, Message: "manually requested rollback"}
		out = &svc
		return tx.Update(TableServices, &svc)
	})
	return out, err
}

// RemoveService deletes a service; its tasks are shut down and removed.
func (m *Manager) RemoveService(ctx context.Context, id string) error {
	return m.store.Update(ctx, func(tx *raftstore.Tx) error {
		if err := tx.Delete(TableServices, id); err != nil {
			return fmt.Errorf("%w: service %s", ErrNotFound, id)
		}
		return nil
	})
}

// Service returns a service by ID or name.
func (m *Manager) Service(idOrName string) (*api.Service, error) {
	var out *api.Service
	err := m.store.View(func(tx *raftstore.ReadTx) error {
		if o, err := tx.Get(TableServices, idOrName); err == nil {
			out = o.(*api.Service)
			return nil
		}
		found, err := list[*api.Service](tx.Find(TableServices, IndexName, idOrName))
		if err != nil {
			return err
		}
		if len(found) == 0 {
			return fmt.Errorf("%w: service %q", ErrNotFound, idOrName)
		}
		out = found[0]
		return nil
	})
	return out, err
}

// Tasks lists a service's tasks (all tasks when serviceID is empty).
func (m *Manager) Tasks(serviceID string) ([]*api.Task, error) {
	var out []*api.Task
	err := m.store.View(func(tx *raftstore.ReadTx) (err error) {
		if serviceID == "" {
			out, err = list[*api.Task](tx.List(TableTasks))
		} else {
			out, err = list[*api.Task](tx.Find(TableTasks, IndexService, serviceID))
		}
		return err
	})
	return out, err
}

// Nodes lists the nodes.
func (m *Manager) Nodes() ([]*api.Node, error) {
	var out []*api.Node
	err := m.store.View(func(tx *raftstore.ReadTx) (err error) {
		out, err = list[*api.Node](tx.List(TableNodes))
		return err
	})
	return out, err
}

// SetNodeAvailability makes a node active, paused or drained.
func (m *Manager) SetNodeAvailability(ctx context.Context, nodeID string, a api.NodeAvailability) error {
	if a != api.NodeActive && a != api.NodePause && a != api.NodeDrain {
		return fmt.Errorf("%w: availability %q: want active, pause or drain", api.ErrInvalidSpec, a)
	}
	return m.store.Update(ctx, func(tx *raftstore.Tx) error {
		o, err := tx.Get(TableNodes, nodeID)
		if err != nil {
			return fmt.Errorf("%w: node %s", ErrNotFound, nodeID)
		}
		n := *o.(*api.Node)
		n.Spec.Availability, n.UpdatedAt = a, time.Now().UTC()
		return tx.Update(TableNodes, &n)
	})
}

// The dispatcher side, used by workers through the Dispatcher interface.

// Register records a node (new or back) as ready.
func (m *Manager) Register(ctx context.Context, nodeID string, desc api.NodeDescription) error {
	if nodeID == "" || strings.ContainsAny(nodeID, "/ ") {
		return fmt.Errorf("%w: node ID %q", api.ErrInvalidSpec, nodeID)
	}
	now := time.Now().UTC()
	err := m.store.Update(ctx, func(tx *raftstore.Tx) error {
		status := api.NodeStatus{State: api.NodeReady, Message: "registered"}
		if o, err := tx.Get(TableNodes, nodeID); err == nil {
			n := *o.(*api.Node)
			n.Description, n.Status, n.UpdatedAt = desc, status, now
			return tx.Update(TableNodes, &n)
		}
		return tx.Create(TableNodes, &api.Node{Meta: api.Meta{ID: nodeID, CreatedAt: now, UpdatedAt: now},
			Spec: api.NodeSpec{Role: api.RoleWorker, Availability: api.NodeActive}, Description: desc, Status: status})
	})
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.seen[nodeID] = time.Now()
	m.mu.Unlock()
	return nil
}

// Heartbeat tells the manager a node is alive; a node that was marked down
// is ready again. Only the leader takes heartbeats (it alone decides that
// nodes are down).
func (m *Manager) Heartbeat(ctx context.Context, nodeID string) error {
	if !m.store.IsLeader() {
		return fmt.Errorf("%w (%s)", ErrNotManagerLeader, m.ID)
	}
	m.mu.Lock()
	m.seen[nodeID] = time.Now()
	m.mu.Unlock()
	var down bool
	m.store.View(func(tx *raftstore.ReadTx) error {
		o, err := tx.Get(TableNodes, nodeID)
		if err != nil {
			return err
		}
		down = o.(*api.Node).Status.State != api.NodeReady
		return nil
	})
	if !down {
		return nil
	}
	return m.store.Update(ctx, func(tx *raftstore.Tx) error {
		o, err := tx.Get(TableNodes, nodeID)
		if err != nil {
			return fmt.Errorf("%w: node %s (register first)", ErrNotFound, nodeID)
		}
		n := *o.(*api.Node)
		n.Status = api.NodeStatus{State: api.NodeReady, Message: "heartbeat", Addr: n.Status.Addr}
		return tx.Update(TableNodes, &n)
	})
}

// Assignments streams the tasks a node must run or stop: each value is the
// whole set, sent at first and after every change to it.
func (m *Manager) Assignments(ctx context.Context, nodeID string) (<-chan []*api.Task, error) {
	w, err := m.store.Watch(ctx, 0, func(e raftstore.Event) bool {
		if e.Table != TableTasks {
			return false
		}
		for _, o := range []raftstore.Object{e.Object, e.Old} {
			if t, ok := o.(*api.Task); ok && t.NodeID == nodeID {
				return true
			}
		}
		return false
	})
	if err != nil {
		return nil, err
	}
	out := make(chan []*api.Task, 1)
	go func() {
		defer close(out)
		defer w.Stop()
		for {
			var set []*api.Task
			err := m.store.View(func(tx *raftstore.ReadTx) error {
				ts, err := list[*api.Task](tx.Find(TableTasks, IndexNode, nodeID))
				for _, t := range ts {
					if t.Status.State >= api.TaskAssigned && (t.DesiredState <= api.TaskRunning || !ended(t)) {
						set = append(set, t)
					}
				}
				return err
			})
			if err != nil {
				return
			}
			select {
			case out <- set:
			case <-ctx.Done():
				return
			}
			select {
			case _, ok := <-w.Events():
				if !ok {
					return
				}
			case <-ctx.Done():
				return
			}
			drain(w.Events())
		}
	}()
	return out, nil
}

// UpdateStatus records the status a node reports for its tasks, in one
// batch. Reports for tasks of other nodes, and backward moves, are ignored.
func (m *Manager) UpdateStatus(ctx context.Context, nodeID string, updates []agent.StatusUpdate) error {
	latest := map[string]api.TaskStatus{}
	for _, u := range updates {
		latest[u.TaskID] = u.Status
	}
	for attempt := 0; attempt < 3; attempt++ {
		res, err := m.store.Batch(ctx, func(b *raftstore.Batch) error {
			return m.store.View(func(tx *raftstore.ReadTx) error {
				for id, st := range latest {
					o, err := tx.Get(TableTasks, id)
					if err != nil {
						continue // removed meanwhile
					}
					t := *o.(*api.Task)
					if t.NodeID != nodeID {
						continue
					}
					if !api.CanTransition(t.Status.State, st.State) && !(st.State == t.Status.State && st.Health != t.Status.Health) {
						continue
					}
					t.Status = st
					if err := b.Update(TableTasks, &t); err != nil {
						return err
					}
				}
				return nil
			})
		})
		if err != nil {
			return err
		}
		if len(res.Conflicts) == 0 {
			return nil
		}
		// The orchestrator changed some of these tasks meanwhile: apply
		// the reports again on top of its change.
		kept := map[string]api.TaskStatus{}
		for _, c := range res.Conflicts {
			kept[c.ID] = latest[c.ID]
		}
		latest = kept
	}
	return nil
}
