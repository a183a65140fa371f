package swarm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm/api"
)

// Dispatcher is what a worker needs of the managers. *Manager implements
// it in-process, RemoteDispatcher across the network; Failover spreads a
// worker over several.
type Dispatcher interface {
	// Register records the node (new or back) as ready, and starts a
	// session: the managers say how often to heartbeat, and where they are.
	Register(ctx context.Context, nodeID string, desc api.NodeDescription) (Session, error)
	// Heartbeat tells the leader the node is alive; it answers the period
	// to keep, which grows with the cluster.
	Heartbeat(ctx context.Context, nodeID string) (time.Duration, error)
	// Assignments streams the node's assignment: each value is whole (its
	// tasks, the secrets and configs they use, its network view), sent at
	// first and after every change. The channel closes when ctx ends or
	// the manager goes away; call again.
	Assignments(ctx context.Context, nodeID string) (<-chan *api.Assignment, error)
	// UpdateStatus records task states the node reports. nil means every
	// report was applied (or was stale and is not needed); an error means
	// the reports must be sent again.
	UpdateStatus(ctx context.Context, nodeID string, updates []agent.StatusUpdate) error
}

var _ Dispatcher = (*Manager)(nil)

// Session is what a node learns when it registers.
type Session struct {
	// HeartbeatPeriod is how often the node must heartbeat: the managers
	// decide it (it grows with the number of nodes), so a worker needs no
	// setting of its own.
	HeartbeatPeriod time.Duration `json:"heartbeatPeriod"`
	// Managers are the managers' management addresses, for failing over.
	Managers []string `json:"managers,omitempty"`
	// DrainTimeout and DrainDelay are the managers' drain bounds
	// (Manager.DrainTimeout and Manager.DrainDelay; see workerdrain.go):
	// the managers decide them, and a worker whose host did not set its
	// own derives its bounds from them. Zero (a manager from before they
	// were sent, or a DrainDelay the managers did not set) leaves the
	// worker's defaults; a negative DrainDelay means no linger. (Managers
	// from before workers counted connections sent their default, 1 s,
	// explicitly: a newer worker then lingers at most that long.)
	DrainTimeout time.Duration `json:"drainTimeout,omitempty"`
	DrainDelay   time.Duration `json:"drainDelay,omitempty"`
}

// DefaultHeartbeatsPerSecond is how many heartbeats a second the leader
// takes at most: with more nodes than that many times the base period,
// the period grows (as Nomad scales its heartbeat TTL), so the leader's
// load stays bounded. A dead node is still noticed within three periods.
const DefaultHeartbeatsPerSecond = 500

// Bounds on what one worker call may carry.
const (
	// MaxStatusUpdates is the most task reports one UpdateStatus takes.
	MaxStatusUpdates = 10_000
	// maxStatusText bounds a reported message or error; longer ones are
	// cut (a runaway health check must not fill the Raft log).
	maxStatusText = 4096
)

// dispatcher serves workers: registration, heartbeats, assignments and
// status. Heartbeats live in the leader's memory only (as in swarmkit):
// a new leader gives every node a full grace period before it can be
// declared down, but the node of the leader it replaced (see
// startLeading).
type dispatcher struct {
	store  *raftstore.Store
	period time.Duration // the base period, for small clusters
	rate   int           // heartbeats per second the leader takes at most
	logger *slog.Logger
	// managers returns the managers' addresses for sessions.
	managers func() []string
	// drainTimeout bounds a stopping task's wait for every node's
	// confirmation (drain.go); 0 means DefaultDrainTimeout. drainDelay is
	// the workers' linger, told in the session (0: the workers' default).
	drainTimeout, drainDelay time.Duration

	// serving is set while this manager's leader loop runs, past its
	// barrier: only then are its state and answers current.
	serving atomic.Bool

	mu       sync.Mutex
	seen     map[string]time.Time // last heartbeat of each registered node
	leadAt   time.Time            // when this manager became leader
	leadTerm uint64               // in which term
	streams  map[string]*stream   // the assignment stream of each node
	book     *netBook             // the data plane's book, while leading
	logs     *logBroker           // the log subscriptions, while leading
	bgStop   context.CancelFunc   // ends the book and the task pump
	bgDone   sync.WaitGroup
	lastView uint64 // the view version the last book reached (drain.go)
}

// stream is one node's assignment stream. One shared watch of the tasks
// (the pump) wakes the streams whose nodes' tasks changed: thousands of
// streams cost no watch each.
type stream struct {
	cancel context.CancelFunc
	wake   chan struct{} // capacity 1: a change since the stream last read
}

func (s *stream) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// startLeading begins serving workers in a term. A new term forgets
// heartbeats seen before, so every node gets a full grace, except the node
// of the leader this manager saw go: nothing heartbeats for it while it is
// silent, and its silence is known from Raft, so it counts from the last
// contact (a dead leader's node gets no new grace). A leader loop restarted
// within its term keeps the heartbeats (a dead node gets no new grace).
func (d *dispatcher) startLeading(term uint64) {
	d.mu.Lock()
	if term != d.leadTerm || d.seen == nil {
		now := time.Now()
		d.seen, d.leadAt, d.leadTerm = map[string]time.Time{}, now, term
		if f := d.store.FormerLeader(); f.ID != "" && !f.LastContact.IsZero() && f.LastContact.Before(now) {
			d.seen[f.ID] = f.LastContact
		}
	}
	if d.logs == nil {
		d.logs = newLogBroker()
	}
	if d.book == nil {
		ctx, cancel := context.WithCancel(context.Background())
		d.book, d.bgStop = newNetBook(d.store, d.logger, viewVersionBase(term, d.lastView), d.drainTimeout), cancel
		book := d.book
		d.bgDone.Add(3)
		go func() { defer d.bgDone.Done(); book.run(ctx) }()
		go func() { defer d.bgDone.Done(); book.expireDrains(ctx) }()
		go func() { defer d.bgDone.Done(); d.pump(ctx) }()
	}
	d.mu.Unlock()
	d.serving.Store(true)
}

// netBook is the data plane's book while this manager leads.
func (d *dispatcher) netBook() *netBook {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.book
}

// stopLeading stops serving workers, and ends their assignment streams:
// the leader loop ended.
func (d *dispatcher) stopLeading() {
	d.serving.Store(false)
	d.mu.Lock()
	for id, s := range d.streams {
		s.cancel()
		delete(d.streams, id)
	}
	stop := d.bgStop
	if d.book != nil {
		d.lastView = d.book.lastVersion()
	}
	d.book, d.bgStop = nil, nil
	logs := d.logs
	d.logs = nil
	d.mu.Unlock()
	if logs != nil {
		logs.stop()
	}
	if stop != nil {
		stop()
		d.bgDone.Wait()
	}
}

// endStream ends a node's assignment stream (the node was removed).
func (d *dispatcher) endStream(nodeID string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if s := d.streams[nodeID]; s != nil {
		s.cancel()
		delete(d.streams, nodeID)
	}
	delete(d.seen, nodeID)
}

// pump follows the tasks while this manager leads and wakes the streams
// of the nodes whose tasks changed; after a resync (the watch fell behind)
// it wakes them all, and they read their sets again.
func (d *dispatcher) pump(ctx context.Context) {
	filter := func(e raftstore.Event) bool { return e.Table == TableTasks }
	for ctx.Err() == nil {
		w, err := d.store.Watch(ctx, d.store.AppliedIndex(), filter)
		if errors.Is(err, raftstore.ErrResync) {
			continue
		}
		if err != nil {
			d.logger.Error("swarm: watching tasks for the assignment streams; trying again", "err", err)
			if !sleepCtx(ctx, bookRetryDelay) {
				return
			}
			continue
		}
		// Changes between the streams' reads and this watch's start
		// would be missed: every stream reads again.
		d.pokeAll()
		for ev := range w.Events() {
			if ownProgress(ev) {
				continue
			}
			d.mu.Lock()
			for _, o := range []raftstore.Object{ev.Object, ev.Old} {
				if t, ok := o.(*api.Task); ok && t.NodeID != "" {
					if s := d.streams[t.NodeID]; s != nil {
						s.poke()
					}
				}
			}
			d.mu.Unlock()
		}
		w.Stop()
	}
}

func (d *dispatcher) pokeAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range d.streams {
		s.poke()
	}
}

// leading refuses calls unless this manager leads and has caught up.
func (d *dispatcher) leading() error {
	if !d.serving.Load() || !d.store.IsLeader() {
		return d.notLeader()
	}
	return nil
}

func (d *dispatcher) touch(nodeID string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.seen == nil {
		d.seen = map[string]time.Time{}
	}
	d.seen[nodeID] = time.Now()
}

// periodFor is the heartbeat period with n nodes: the base period (the
// cluster's, else the manager's), or longer so that n nodes send at most
// rate heartbeats a second.
func (d *dispatcher) periodFor(base time.Duration, n int) time.Duration {
	if base <= 0 {
		base = d.period
	}
	rate := d.rate
	if rate <= 0 {
		rate = DefaultHeartbeatsPerSecond
	}
	return max(base, time.Duration(n)*time.Second/time.Duration(rate))
}

// clusterBase is the heartbeat period the cluster object sets (0: none).
func (d *dispatcher) clusterBase() time.Duration {
	var base time.Duration
	d.store.View(func(tx *raftstore.ReadTx) error {
		if spec, err := clusterSpec(tx); err == nil {
			base = spec.Dispatcher.HeartbeatPeriod
		}
		return nil
	})
	return base
}

func (d *dispatcher) currentPeriod() time.Duration {
	n := 0
	var base time.Duration
	d.store.View(func(tx *raftstore.ReadTx) (err error) {
		if spec, err := clusterSpec(tx); err == nil {
			base = spec.Dispatcher.HeartbeatPeriod
		}
		n, err = tx.Count(TableNodes)
		return err
	})
	return d.periodFor(base, n)
}

// expired returns copies of the ready nodes silent for three periods,
// marked down. It forgets nodes that no longer exist, so the map of
// heartbeats holds registered nodes only.
func (d *dispatcher) expired(nodes []*api.Node, now time.Time) []*api.Node {
	return d.expiredAt(nodes, now, d.periodFor(d.clusterBase(), len(nodes)))
}

// expiredAt is expired at heartbeat period p.
func (d *dispatcher) expiredAt(nodes []*api.Node, now time.Time, p time.Duration) []*api.Node {
	d.mu.Lock()
	defer d.mu.Unlock()
	grace := 3 * p
	var out []*api.Node
	known := make(map[string]bool, len(nodes))
	for _, n := range nodes {
		known[n.ID] = true
		last, ok := d.seen[n.ID]
		if !ok {
			// A new leader gives every node a full grace from when the
			// node could have found it: a worker connected to a leader
			// cut off by a partition (no reset comes) leaves it when its
			// pings go unanswered, leaveSilentAfter at most.
			last = d.leadAt.Add(leaveSilentAfter(p))
		}
		if n.Status.State == api.NodeReady && now.Sub(last) > grace {
			c := *n
			c.Status = api.NodeStatus{State: api.NodeDown, Message: fmt.Sprintf("no heartbeat for %v", now.Sub(last).Round(time.Millisecond)), Addr: n.Status.Addr}
			c.UpdatedAt = now.UTC()
			out = append(out, &c)
		}
	}
	for id := range d.seen {
		if !known[id] {
			delete(d.seen, id)
		}
	}
	return out
}

// notLeader refuses a call only the leader takes, naming the leader.
func (d *dispatcher) notLeader() error {
	li := d.store.Leader()
	return &raftstore.NotLeaderError{LeaderID: li.ID, LeaderAddr: li.Address}
}

func checkNodeID(nodeID string) error {
	if nodeID == "" || len(nodeID) > 128 || strings.ContainsAny(nodeID, "/ \t\n") {
		return fmt.Errorf("%w: node ID %q: 1 to 128 characters, no spaces or '/'", api.ErrInvalidSpec, nodeID)
	}
	return nil
}

func (d *dispatcher) register(ctx context.Context, nodeID string, role api.NodeRole, desc api.NodeDescription) (Session, error) {
	if err := checkNodeID(nodeID); err != nil {
		return Session{}, err
	}
	if err := desc.Validate(); err != nil {
		return Session{}, err
	}
	if err := d.leading(); err != nil {
		return Session{}, err
	}
	now := time.Now().UTC()
	write := func() error {
		return d.store.Update(ctx, func(tx *raftstore.Tx) error {
			// A removed node stays out, even over a connection it
			// opened before its removal.
			if c, err := clusterObject(&tx.ReadTx); err == nil && removed(c, nodeID) {
				return fmt.Errorf("%w: node %s was removed from the cluster; join it again with a join token", errForbidden, nodeID)
			}
			status := api.NodeStatus{State: api.NodeReady, Message: "registered", Addr: desc.DataAddr}
			if o, err := tx.Get(TableNodes, nodeID); err == nil {
				n := *o.(*api.Node)
				n.Description, n.Status, n.UpdatedAt = desc, status, now
				return tx.Update(TableNodes, &n)
			}
			avail := api.NodeActive
			if desc.NoTasks {
				avail = api.NodeDrain // as node ls should show it
			}
			return tx.Create(TableNodes, &api.Node{Meta: api.Meta{ID: nodeID, CreatedAt: now, UpdatedAt: now},
				Spec: api.NodeSpec{Role: role, Availability: avail}, Description: desc, Status: status})
		})
	}
	// The node's object may change under the registration (the leader
	// marking it down, an operator's update): read it again and retry.
	// A node back with nothing new needs no write at all: after a leader
	// change every node opens a new session at once, and 2,000 Raft
	// writes in a burst held up the new leader's own heartbeats.
	var err error
	if !d.registered(nodeID, desc) {
		err = write()
		for i := 0; i < 5 && errors.Is(err, raftstore.ErrConflict); i++ {
			err = write()
		}
	}
	if err != nil {
		return Session{}, err
	}
	d.touch(nodeID)
	s := Session{HeartbeatPeriod: d.currentPeriod()}
	s.DrainTimeout, s.DrainDelay = d.drainBounds()
	if d.managers != nil {
		s.Managers = d.managers()
	}
	return s, nil
}

// registered reports whether the node's object already says what a
// registration would write: ready, with this description, not removed.
func (d *dispatcher) registered(nodeID string, desc api.NodeDescription) bool {
	same := false
	d.store.View(func(tx *raftstore.ReadTx) error {
		if c, err := clusterObject(tx); err == nil && removed(c, nodeID) {
			return nil
		}
		o, err := tx.Get(TableNodes, nodeID)
		if err != nil {
			return nil
		}
		n := o.(*api.Node)
		same = n.Status.State == api.NodeReady && reflect.DeepEqual(n.Description, desc)
		return nil
	})
	return same
}

func (d *dispatcher) heartbeat(ctx context.Context, nodeID string) (time.Duration, error) {
	if err := d.leading(); err != nil {
		return 0, err
	}
	var down bool
	err := d.store.View(func(tx *raftstore.ReadTx) error {
		o, err := tx.Get(TableNodes, nodeID)
		if err != nil {
			return notFound("node", nodeID+" (register first)")
		}
		down = o.(*api.Node).Status.State != api.NodeReady
		return nil
	})
	if err != nil {
		return 0, err
	}
	// Only registered nodes are remembered: the map cannot grow from
	// heartbeats of made-up IDs.
	d.touch(nodeID)
	period := d.currentPeriod()
	if !down {
		return period, nil
	}
	return period, d.store.Update(ctx, func(tx *raftstore.Tx) error {
		o, err := tx.Get(TableNodes, nodeID)
		if err != nil {
			return notFound("node", nodeID)
		}
		n := *o.(*api.Node)
		n.Status = api.NodeStatus{State: api.NodeReady, Message: "heartbeat", Addr: n.Status.Addr}
		n.UpdatedAt = time.Now().UTC()
		return tx.Update(TableNodes, &n)
	})
}

// assigned is what a node must know of: tasks handed to it that run or
// should, and those told to stop that have not ended yet.
func assigned(t *api.Task) bool {
	return t.Status.State >= api.TaskAssigned && (t.DesiredState <= api.TaskRunning || !ended(t))
}

// assignments streams a node's assignment while this manager leads: its
// tasks, the secrets and configs they use, and (for a node with a network
// agent) its network view. The watch behind it survives a resync (a
// snapshot restore, or a burst of changes larger than the store's event
// buffer): it reads the set again and watches from there.
func (d *dispatcher) assignments(ctx context.Context, nodeID string) (<-chan *api.Assignment, error) {
	if err := checkNodeID(nodeID); err != nil {
		return nil, err
	}
	read := func() (*api.Assignment, error) {
		a := &api.Assignment{}
		err := d.store.View(func(tx *raftstore.ReadTx) error {
			ts, err := list[*api.Task](tx.Find(TableTasks, IndexNode, nodeID))
			if err != nil {
				return err
			}
			for _, t := range ts {
				if assigned(t) {
					a.Tasks = append(a.Tasks, t)
				} else if t.Status.State >= api.TaskAssigned {
					a.Kept = append(a.Kept, t.ID)
				}
			}
			a.Secrets, a.Configs, err = dataOfTasks(tx, a.Tasks)
			return err
		})
		return a, err
	}
	// Only the leader hands out assignments, and only while it leads: a
	// follower's state may lag, and one cut off from the others would keep
	// feeding its workers a past that the cluster has left. When it stops
	// leading, stopLeading ends every stream.
	if err := d.leading(); err != nil {
		return nil, err
	}
	book := d.netBook()
	if book == nil {
		return nil, d.notLeader()
	}
	ctx, cancel := context.WithCancel(ctx)
	// One stream per node: a new one (the worker reconnected) ends the
	// old, so a node cannot pile up streams. The stream is known to the
	// pump before its first read: no change falls in between.
	mine := &stream{cancel: cancel, wake: make(chan struct{}, 1)}
	d.mu.Lock()
	if d.streams == nil {
		d.streams = map[string]*stream{}
	}
	if old := d.streams[nodeID]; old != nil {
		old.cancel()
	}
	d.streams[nodeID] = mine
	d.mu.Unlock()
	forget := func() {
		d.mu.Lock()
		if d.streams[nodeID] == mine { // a newer stream may have replaced it
			delete(d.streams, nodeID)
		}
		d.mu.Unlock()
	}
	if err := d.leading(); err != nil {
		// Leadership ended between the check and the registration (and
		// stopLeading may have run before it): no stream.
		cancel()
		forget()
		return nil, err
	}
	bookChanged := book.wait()
	a, err := read()
	if err != nil {
		cancel()
		forget()
		return nil, err
	}
	out := make(chan *api.Assignment, 1)
	go func() {
		defer close(out)
		defer forget()
		defer cancel()
		for {
			if book.has(nodeID) {
				a.Network = book.view(taskNetworks(a.Tasks))
			}
			var pending <-chan struct{}
			a.Drained, pending = book.drained(a.Tasks)
			select {
			case out <- a:
			case <-ctx.Done():
				return
			}
			// The next value is a new one: the worker may hold this.
			sent := a.Drained
			a = &api.Assignment{Tasks: a.Tasks, Secrets: a.Secrets, Configs: a.Configs, Kept: a.Kept}
		wait:
			for {
				select {
				case <-mine.wake:
					if a, err = read(); err != nil {
						return
					}
					break wait
				case <-bookChanged:
					bookChanged = book.wait()
					break wait
				case <-pending:
					// A drain of this node's tasks may have ended.
					var now []string
					if now, pending = book.drained(a.Tasks); !slices.Equal(now, sent) {
						break wait
					}
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}

// taskNetworks are the networks of a node's tasks that run or may run.
func taskNetworks(tasks []*api.Task) map[string]bool {
	out := map[string]bool{}
	for _, t := range tasks {
		if ended(t) {
			continue
		}
		for _, na := range t.Networks {
			out[na.NetworkID] = true
		}
	}
	return out
}

// dataOfTasks reads the secrets and configs that a node's tasks (those not
// ended) reference, with their data: the node needs nothing else.
func dataOfTasks(tx *raftstore.ReadTx, tasks []*api.Task) ([]*api.Secret, []*api.Config, error) {
	var secrets []*api.Secret
	var configs []*api.Config
	seen := map[string]bool{}
	for _, t := range tasks {
		if ended(t) {
			continue
		}
		for _, r := range t.Spec.Secrets {
			if seen["s"+r.SecretID] {
				continue
			}
			seen["s"+r.SecretID] = true
			if o, err := tx.Get(TableSecrets, r.SecretID); err == nil {
				secrets = append(secrets, o.(*api.Secret))
			}
		}
		for _, r := range t.Spec.Configs {
			if seen["c"+r.ConfigID] {
				continue
			}
			seen["c"+r.ConfigID] = true
			if o, err := tx.Get(TableConfigs, r.ConfigID); err == nil {
				configs = append(configs, o.(*api.Config))
			}
		}
	}
	return secrets, configs, nil
}

// updateStatus applies a node's reports in one batch. Reports about tasks
// of other nodes or of removed tasks, and moves backwards (late or
// repeated reports), are dropped: sending them again would not help. A
// report that conflicts with a concurrent change of its task is applied
// again on top of it; if that keeps failing, an error asks the worker to
// send it again.
func (d *dispatcher) updateStatus(ctx context.Context, nodeID string, updates []agent.StatusUpdate) error {
	if len(updates) > MaxStatusUpdates {
		return fmt.Errorf("%w: %d status updates in one call, at most %d", api.ErrInvalidSpec, len(updates), MaxStatusUpdates)
	}
	if err := d.leading(); err != nil {
		return err
	}
	latest := make(map[string]api.TaskStatus, len(updates))
	for _, u := range updates {
		st := u.Status
		if err := checkStatus(u.TaskID, &st); err != nil {
			return err
		}
		// As a decoding of the report would be (the store keeps this very
		// value on the leader, see HandOver below): in UTC without a
		// monotonic clock reading, no empty list that decodes as none.
		st.Timestamp = st.Timestamp.UTC()
		if len(st.Ports) == 0 {
			st.Ports = nil
		}
		latest[u.TaskID] = st
	}
	const attempts = 5
	for range attempts {
		res, err := d.store.Batch(ctx, func(b *raftstore.Batch) error {
			// Each report writes a fresh copy of its task: the leader's
			// watchers (the streams' pump, the leader loop) need not
			// decode it again.
			b.HandOver()
			return d.store.View(func(tx *raftstore.ReadTx) error {
				for id, st := range latest {
					o, err := tx.Get(TableTasks, id)
					if err != nil {
						delete(latest, id) // removed meanwhile: nothing to tell
						continue
					}
					t := *o.(*api.Task)
					if t.NodeID != nodeID {
						delete(latest, id)
						continue
					}
					if !api.CanTransition(t.Status.State, st.State) && !(st.State == t.Status.State && st.Health != t.Status.Health) {
						delete(latest, id)
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
		kept := make(map[string]api.TaskStatus, len(res.Conflicts))
		for _, c := range res.Conflicts {
			kept[c.ID] = latest[c.ID]
		}
		latest = kept
	}
	return fmt.Errorf("swarm: %d task report(s) of node %s conflicted with other changes %d times; send them again", len(latest), nodeID, attempts)
}

// checkStatus refuses a report that cannot be right and bounds what it may
// write: a worker must not fill the Raft log.
func checkStatus(taskID string, st *api.TaskStatus) error {
	switch {
	case taskID == "" || len(taskID) > 128:
		return fmt.Errorf("%w: a status report names task %q", api.ErrInvalidSpec, clip(taskID))
	case st.State < api.TaskNew || st.State > api.TaskOrphaned:
		return fmt.Errorf("%w: task %s: unknown state %d", api.ErrInvalidSpec, taskID, int(st.State))
	case st.Health != "" && st.Health != agent.HealthStarting && st.Health != agent.HealthHealthy && st.Health != agent.HealthUnhealthy:
		return fmt.Errorf("%w: task %s: health %q is not starting, healthy or unhealthy", api.ErrInvalidSpec, taskID, clip(st.Health))
	case len(st.Ports) > maxStatusPorts:
		return fmt.Errorf("%w: task %s: %d ports, at most %d", api.ErrInvalidSpec, taskID, len(st.Ports), maxStatusPorts)
	}
	// Made valid UTF-8 before the length checks: replacing bytes can
	// lengthen a string.
	st.Message, st.Err, st.ContainerID = clip(st.Message), clip(st.Err), clip(st.ContainerID)
	if len(st.ContainerID) > 128 {
		return fmt.Errorf("%w: task %s: container ID of %d characters", api.ErrInvalidSpec, taskID, len(st.ContainerID))
	}
	for i := range st.Ports {
		p := &st.Ports[i]
		switch {
		case p.Protocol != "" && p.Protocol != api.TCP && p.Protocol != api.UDP && p.Protocol != api.SCTP:
			return fmt.Errorf("%w: task %s: port protocol %q", api.ErrInvalidSpec, taskID, clip(string(p.Protocol)))
		case p.PublishMode != "" && p.PublishMode != api.PublishIngress && p.PublishMode != api.PublishHost:
			return fmt.Errorf("%w: task %s: port publish mode %q", api.ErrInvalidSpec, taskID, clip(string(p.PublishMode)))
		}
		if p.Name = clip(p.Name); len(p.Name) > 128 {
			return fmt.Errorf("%w: task %s: a port name of %d bytes, at most 128", api.ErrInvalidSpec, taskID, len(p.Name))
		}
	}
	if y := st.Timestamp.Year(); y < 1 || y > 9999 {
		// The store's JSON cannot hold it, and the whole batch of
		// reports would fail with it: the manager's clock stands in.
		st.Timestamp = time.Now().UTC()
	}
	return nil
}

// maxStatusPorts bounds the ports a status report may list.
const maxStatusPorts = 256

// clip bounds a worker's text and makes it valid UTF-8 (the store's JSON
// refuses anything else, and with it the whole batch of reports), cutting
// at a character's boundary.
func clip(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= maxStatusText {
		return s
	}
	cut := maxStatusText
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// Register records a node (new or back) as ready and starts its session.
func (m *Manager) Register(ctx context.Context, nodeID string, desc api.NodeDescription) (Session, error) {
	d, err := m.dispatcher()
	if err != nil {
		return Session{}, err
	}
	return d.register(ctx, nodeID, api.RoleWorker, desc)
}

// Heartbeat tells the manager a node is alive; a node that was marked down
// is ready again. Only the leader takes heartbeats (it alone decides that
// nodes are down). It answers the period to keep.
func (m *Manager) Heartbeat(ctx context.Context, nodeID string) (time.Duration, error) {
	d, err := m.dispatcher()
	if err != nil {
		return 0, err
	}
	return d.heartbeat(ctx, nodeID)
}

// Assignments streams a node's assignment: the tasks it must run or stop,
// the secrets and configs they use, its network view; see Dispatcher.
func (m *Manager) Assignments(ctx context.Context, nodeID string) (<-chan *api.Assignment, error) {
	d, err := m.dispatcher()
	if err != nil {
		return nil, err
	}
	return d.assignments(ctx, nodeID)
}

// UpdateStatus records the status a node reports for its tasks, in one
// batch; see Dispatcher.
func (m *Manager) UpdateStatus(ctx context.Context, nodeID string, updates []agent.StatusUpdate) error {
	d, err := m.dispatcher()
	if err != nil {
		return err
	}
	return d.updateStatus(ctx, nodeID, updates)
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
