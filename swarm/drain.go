package swarm

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/shoalproject/shoal/swarm/api"
)

// Draining, the managers' side. A task told to stop (scale down, update,
// node drain, removal) that is a backend somewhere (a VIP, the routing
// mesh, DNS) must stop taking new connections on every node before its
// process stops, or clients meet a closed port. A fixed delay between the
// two is a guess that a loaded cluster loses; instead the leader counts
// confirmations:
//
//   - the book marks the task not ready in the views and raises the view
//     version (api.NetworkView.Version); the task's drain waits for that
//     version;
//   - every node's worker tells the leader the version of the view its
//     network agent has applied (AckNetwork), after the kernel took it;
//   - once every live node with a data plane has confirmed that version
//     or a later one, the drain is done: the task is listed in its node's
//     Assignment.Drained, and the worker stops it once its clients have
//     closed their connections (the requests already under way), within
//     Worker.DrainDelay.
//
// What a lost message or a dead node does: versions only grow and views
// are whole, so a lost view or ack is made good by the next one (the
// worker sends its latest version until the leader takes it, and a new
// stream starts with the whole view). A node marked down (no heartbeat
// for three periods) is not waited for; a node that never confirms (its
// network agent fails, a stream that does not reach it) is waited for at
// most DrainTimeout, then the task stops anyway and the leader logs which
// nodes had not confirmed. The acknowledgements live in the leader's
// memory: a new leader (or leader loop) starts a new book whose versions
// are above every earlier one (the Raft term is in the high bits, and a
// book restarted within a term continues its predecessor's count), so an
// old acknowledgement never counts for a new drain, and every node
// confirms again from its new stream. The worker has a bound of its own
// for when no leader answers at all, derived from this one (it learns it
// in its session; see workerdrain.go).

// DefaultDrainTimeout is how long the leader waits at most for every node
// to confirm that a stopping task is out of its backends.
const DefaultDrainTimeout = 10 * time.Second

// NetworkAcker is how a worker confirms the network views its node has
// applied: the leader lets a stopping task's process stop once every node
// confirmed a view without it (see Assignment.Drained). *Manager,
// RemoteDispatcher and Failover implement it; a worker whose Dispatcher
// does not confirms nothing, and its tasks wait for the leader's bound.
type NetworkAcker interface {
	// AckNetwork says the node's network agent has applied the view of
	// that version (api.NetworkView.Version) or a later one.
	AckNetwork(ctx context.Context, nodeID string, version uint64) error
}

var (
	_ NetworkAcker = (*Manager)(nil)
	_ NetworkAcker = (*RemoteDispatcher)(nil)
	_ NetworkAcker = (*Failover)(nil)
)

// drainState is the book's part that tracks drains; the book's mutex
// guards it.
type drainState struct {
	timeout time.Duration
	// version is the views' version; see api.NetworkView.Version.
	version uint64
	// index is the Raft index of the last change the book took in, and
	// read the index of the state each existing service's entry was last
	// computed from: a task whose version is not above its service's read
	// is known to the book. (index alone is not enough: the events of one
	// Raft entry may come in two batches, and the first may not name the
	// task's service.) Removed services fall back on index: their tasks
	// are no backend anywhere any more.
	index uint64
	read  map[string]uint64
	live  map[string]bool       // data-plane nodes that are ready: those a drain waits for
	acked map[string]uint64     // the view version each data-plane node confirmed
	tasks map[string]*taskDrain // the drains, by task ID
	// news is closed and replaced when a drain ends or the book takes in
	// changes, for the streams that wait on a drain.
	news chan struct{}
	// kick wakes the timeout loop (a new drain); capacity 1.
	kick chan struct{}
}

// taskDrain is one task leaving the backends.
type taskDrain struct {
	service, node string
	version       uint64    // the first view version without it as a backend
	since         time.Time // when the book saw it
	missing       int       // live nodes that have not confirmed version yet
	done          bool
}

func newDrainState(base uint64, timeout time.Duration) drainState {
	if timeout <= 0 {
		timeout = DefaultDrainTimeout
	}
	return drainState{timeout: timeout, version: base, read: map[string]uint64{}, live: map[string]bool{}, acked: map[string]uint64{},
		tasks: map[string]*taskDrain{}, news: make(chan struct{}), kick: make(chan struct{}, 1)}
}

// viewVersionBase is where a leader's view versions start: above those of
// every earlier term (the term in the high bits) and of an earlier book of
// this manager (last).
func viewVersionBase(term, last uint64) uint64 { return max(term<<32, last) }

// noteDrains takes in a recomputed batch of the book (under b.mu): the
// drains that start or end with the services' entries (computed from the
// state at Raft index read; exists names those not removed), the nodes
// the batch read (nil: not, or no longer, a data-plane node) and whether
// each is ready, and the Raft index of the last event taken in. It
// reports whether the version rose (the views changed).
func (b *netBook) noteDrains(svcs map[string]*bookService, exists map[string]bool, read uint64, nodes map[string]*api.NodeEndpoint, live map[string]bool, index uint64, now time.Time) bool {
	s := &b.drainState
	for id := range svcs {
		if exists[id] {
			s.read[id] = read
		} else {
			delete(s.read, id)
		}
	}
	recount := false
	for id, e := range nodes {
		was := s.live[id]
		switch {
		case e == nil:
			delete(s.live, id)
			delete(s.acked, id)
		case live[id]:
			s.live[id] = true
		default:
			delete(s.live, id) // down: not waited for
		}
		recount = recount || was != s.live[id]
	}
	raised := false
	for svc, e := range svcs {
		want := map[string]*api.TaskEndpoint{}
		if e != nil {
			for _, te := range e.draining {
				want[te.ID] = te
			}
		}
		for id, d := range s.tasks {
			if d.service == svc && want[id] == nil {
				delete(s.tasks, id) // stopped, or no longer reachable at all
			}
		}
		for id, te := range want {
			if s.tasks[id] != nil {
				continue
			}
			if !raised {
				s.version++
				raised = true
			}
			s.tasks[id] = &taskDrain{service: svc, node: te.NodeID, version: s.version, since: now}
			recount = true
		}
	}
	if recount {
		// Rare (a drain starts, a node comes or goes): confirmations
		// then only count down.
		for _, d := range s.tasks {
			d.missing = 0
			for n := range s.live {
				if s.acked[n] < d.version {
					d.missing++
				}
			}
		}
	}
	if raised {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	if index > s.index {
		s.index = index
		b.drainNews()
	}
	b.settle(now)
	return raised
}

// drainNews wakes the streams that wait on a drain (under b.mu).
func (b *netBook) drainNews() {
	close(b.news)
	b.news = make(chan struct{})
}

// settle ends the drains every live node confirmed, and those that waited
// DrainTimeout (under b.mu).
func (b *netBook) settle(now time.Time) {
	s := &b.drainState
	ended := false
	for id, d := range s.tasks {
		switch {
		case d.done:
		case d.missing <= 0:
			d.done, ended = true, true
			b.logger.Debug("swarm: a stopping task is out of every node's backends", "task", id, "after", now.Sub(d.since).Round(time.Millisecond))
		case now.Sub(d.since) >= s.timeout:
			d.done, ended = true, true
			var missing []string
			for n := range s.live {
				if s.acked[n] < d.version {
					missing = append(missing, n)
				}
			}
			slices.Sort(missing)
			b.logger.Warn("swarm: nodes did not confirm that a stopping task left their backends; it stops anyway, and they may still send it connections",
				"task", id, "node", d.node, "waited", now.Sub(d.since).Round(time.Millisecond), "unconfirmed", missing)
		}
	}
	if ended {
		b.drainNews()
	}
}

// ack records that a node applied the view of a version (or a later one).
// Only data-plane nodes count, and never for a version this book has not
// made (a stale leader's, or made up).
func (b *netBook) ack(nodeID string, version uint64, now time.Time) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.nodes[nodeID] == nil:
		return nil // no network view: nothing to confirm
	case version > b.version:
		return fmt.Errorf("%w: node %s confirmed network view %d, but the leader's latest is %d", api.ErrInvalidSpec, nodeID, version, b.version)
	case version <= b.acked[nodeID]:
		return nil
	}
	old := b.acked[nodeID]
	b.acked[nodeID] = version
	if !b.live[nodeID] {
		return nil
	}
	ending := false
	for _, d := range b.tasks {
		if !d.done && old < d.version && version >= d.version {
			d.missing--
			ending = ending || d.missing <= 0
		}
	}
	if ending {
		b.settle(now)
	}
	return nil
}

// drained lists the tasks of a node's set that were told to stop and need
// not wait any more: their drain is done, or they are no backend anywhere.
// pending, when not nil, is closed when the answer may change (a drain
// ends, or the book catches up with a task it has not seen yet).
func (b *netBook) drained(tasks []*api.Task) (ids []string, pending <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, t := range tasks {
		if t.DesiredState <= api.TaskRunning || ended(t) {
			continue
		}
		d := b.tasks[t.ID]
		read, ok := b.read[t.ServiceID]
		if !ok {
			read = b.index
		}
		switch {
		case d != nil && d.done, d == nil && read >= t.Version:
			ids = append(ids, t.ID)
		default:
			pending = b.news
		}
	}
	return ids, pending
}

// expireDrains ends the drains that reach DrainTimeout, while ctx lives.
func (b *netBook) expireDrains(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		b.mu.Lock()
		b.settle(time.Now())
		var next time.Time
		for _, d := range b.tasks {
			if at := d.since.Add(b.timeout); !d.done && (next.IsZero() || at.Before(next)) {
				next = at
			}
		}
		kick := b.kick
		b.mu.Unlock()
		wait := time.Hour
		if !next.IsZero() {
			wait = max(time.Until(next), time.Millisecond)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-kick:
			// A new drain: its deadline may come first. (Reset needs no
			// draining of the channel since Go 1.23.)
		case <-timer.C:
		}
	}
}

// drainBounds are the bounds the workers are told in their sessions: the
// leader's wait for confirmations and the linger (see workerdrain.go). A
// linger not set is sent as 0: its default depends on the worker (whether
// its network agent counts a task's connections).
func (d *dispatcher) drainBounds() (timeout, delay time.Duration) {
	timeout = d.drainTimeout
	if timeout <= 0 {
		timeout = DefaultDrainTimeout
	}
	return timeout, d.drainDelay
}

// lastVersion is the book's view version now.
func (b *netBook) lastVersion() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.version
}

// ackNetwork takes a node's confirmation of the view it applied.
func (d *dispatcher) ackNetwork(nodeID string, version uint64) error {
	if err := checkNodeID(nodeID); err != nil {
		return err
	}
	if err := d.leading(); err != nil {
		return err
	}
	book := d.netBook()
	if book == nil {
		return d.notLeader()
	}
	return book.ack(nodeID, version, time.Now())
}

// AckNetwork records that a node applied a network view; see NetworkAcker.
func (m *Manager) AckNetwork(ctx context.Context, nodeID string, version uint64) error {
	d, err := m.dispatcher()
	if err != nil {
		return err
	}
	return d.ackNetwork(nodeID, version)
}

// AckNetwork reaches the leader.
func (f *Failover) AckNetwork(ctx context.Context, nodeID string, version uint64) error {
	return f.call(func(d Dispatcher) error {
		a, ok := d.(NetworkAcker)
		if !ok {
			return fmt.Errorf("swarm: dispatcher %T cannot confirm network views: %w", d, errors.ErrUnsupported)
		}
		return a.AckNetwork(ctx, nodeID, version)
	})
}

// networkAck is the body of the ack call.
type networkAck struct {
	Version uint64 `json:"version"`
}

// AckNetwork confirms a network view to the leader.
func (d *RemoteDispatcher) AckNetwork(ctx context.Context, nodeID string, version uint64) error {
	return d.post(ctx, "network-ack", nodeID, networkAck{Version: version}, nil)
}
