package swarm

import (
	"context"
	"errors"
	"maps"
	"net"
	"time"

	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm/api"
)

// leadRestartDelay is how long the manager waits before it restarts a
// leader loop that ended on an error while this manager still leads.
const leadRestartDelay = 100 * time.Millisecond

// conflictPause is the wait before a pass that follows one whose changes
// raced other writes.
const conflictPause = 10 * time.Millisecond

// fullPassEvery is how often the leader reconciles every service even
// when no event asked for it: a safety net, cheap at this rate.
const fullPassEvery = time.Minute

// run follows leadership: while this manager leads, lead runs. A leader
// loop that ends while the manager still leads is started again.
func (m *Manager) run(ctx context.Context) {
	defer close(m.done)
	st := m.store
	if m.TwoNode != nil {
		guarded := make(chan struct{})
		go func() { defer close(guarded); m.guardPeer(ctx, st) }()
		defer func() { <-guarded }()
	}
	leaders, err := st.WatchLeader(ctx)
	if err != nil {
		m.logger().Error("swarm: manager cannot watch leadership", "err", err)
		return
	}
	var (
		stop     context.CancelFunc
		ended    chan struct{} // closed when the running lead returns
		term     uint64        // the term the running lead started in
		restart  <-chan time.Time
		stopLead = func() {
			if stop != nil {
				stop()
				<-ended
				stop, ended = nil, nil
			}
		}
		startLead = func(t uint64) {
			lctx, cancel := context.WithCancel(ctx)
			stop, ended, term = cancel, make(chan struct{}), t
			done := ended
			m.logger().Info("swarm: leading", "manager", m.ID, "term", t)
			go func() {
				defer close(done)
				if err := m.lead(lctx, st, t); err != nil && lctx.Err() == nil {
					m.logger().Error("swarm: leader loop ended", "err", err)
				}
			}()
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
			switch {
			case li.Self && stop == nil:
				startLead(li.Term)
			case li.Self && li.Term != term:
				// Leadership was lost and won again between two looks:
				// the running loop's view belongs to the old term.
				stopLead()
				startLead(li.Term)
			case !li.Self:
				stopLead()
				restart = nil
			}
		case <-ended:
			// lead returned by itself: the store closed, or an error.
			stop, ended = nil, nil
			if st.IsLeader() {
				restart = time.After(leadRestartDelay)
			}
		case <-restart:
			restart = nil
			if li := st.Leader(); li.Self && stop == nil {
				startLead(li.Term)
			}
		}
	}
}

// leaderState is what the leader loop knows between passes: which
// services an event touched since the last pass, and when a service must
// be looked at again (a restart delay or an update step ends).
type leaderState struct {
	dirty map[string]bool
	all   bool
	// nets is set when a network was created or removed: the nodes'
	// attachments follow (a replaced ingress), not every service.
	nets  bool
	retry map[string]time.Time
}

func (s *leaderState) mark(ev raftstore.Event) {
	switch ev.Table {
	case TableServices:
		s.dirty[ev.ID] = true
	case TableTasks:
		if starting(ev) {
			return
		}
		for _, o := range []raftstore.Object{ev.Object, ev.Old} {
			if t, ok := o.(*api.Task); ok {
				s.dirty[t.ServiceID] = true
			}
		}
	case TableNetworks:
		s.nets = true
	case TableNodes, TableClusters:
		// A node's state, availability, labels or resources can change
		// what every service needs (global services, orphans, the
		// constraint enforcer, placement): look at all of them.
		s.all = true
	}
}

// starting reports whether a task event is only a step of a start on its
// node (assigned, accepted, preparing, ready, starting), which nothing in a
// pass acts on: a pass looks at tasks pending placement, running (rolling
// updates, start-first replacements) and ended. A burst of such reports
// (20,000 tasks starting) would otherwise run a pass over the service's
// tasks for each batch of them.
func starting(ev raftstore.Event) bool {
	t, ok := ev.Object.(*api.Task)
	old, okOld := ev.Old.(*api.Task)
	if !ok || !okOld {
		return false // created or removed
	}
	return t.Status.State > api.TaskPending && t.Status.State < api.TaskRunning &&
		t.DesiredState == old.DesiredState && t.NodeID == old.NodeID && t.ServiceID == old.ServiceID
}

func (s *leaderState) due(now time.Time) (next time.Time) {
	for id, at := range s.retry {
		if !at.After(now) {
			s.dirty[id] = true
			delete(s.retry, id)
		} else if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	return next
}

// lead reconciles while this manager leads: after every change of
// services, tasks, nodes, networks or the cluster object, when a delay
// ends, and every half heartbeat period for silent nodes. It returns when ctx ends
// (leadership lost, manager closing) or the store closes.
func (m *Manager) lead(ctx context.Context, st *raftstore.Store, term uint64) error {
	// A new leader may not yet have applied all that the old one
	// committed (raft applies those entries once one of the new term
	// commits): acting on that view would, say, fill slots twice. The
	// dispatcher waits too: a worker must not be sent a past set.
	if err := st.Barrier(ctx); err != nil {
		return err
	}
	m.disp.startLeading(term)
	defer m.disp.stopLeading()
	if err := m.ensureCluster(ctx, st); err != nil {
		return err
	}
	m.leadArbiters(ctx, st)
	m.recordLastFence(ctx, st)
	m.recordPendingForcedOut(ctx, st)
	filter := func(e raftstore.Event) bool {
		switch e.Table {
		case TableServices, TableTasks, TableNodes, TableClusters, TableNetworks:
			return true
		}
		return false
	}
	state := &leaderState{dirty: map[string]bool{}, all: true, retry: map[string]time.Time{}}
	var book *allocator // the address book, rebuilt at every full pass
	var w *raftstore.Watcher
	defer func() {
		if w != nil {
			w.Stop()
		}
	}()
	tick := time.NewTicker(m.heartbeatPeriod() / 2)
	defer tick.Stop()
	full := time.NewTicker(fullPassEvery)
	defer full.Stop()
	for ctx.Err() == nil {
		if w == nil {
			var err error
			// Watch from the state the pass below reads (or older): no
			// change falls between them.
			if w, err = st.Watch(ctx, st.AppliedIndex(), filter); err != nil {
				if errors.Is(err, raftstore.ErrResync) {
					continue
				}
				return err
			}
			state.all = true
		}
		dirty, all, nets := state.dirty, state.all, state.nets
		state.dirty, state.all, state.nets = map[string]bool{}, false, false
		if all {
			if err := m.reconcileMembership(ctx, st); err != nil && ctx.Err() == nil {
				m.logger().Warn("swarm: manager membership", "err", err)
			}
		}
		if all || nets || len(dirty) > 0 {
			began := time.Now()
			res, err := m.reconcile(ctx, st, dirty, all, nets, &book)
			m.reconcileTime.observe(time.Since(began))
			switch {
			case err == nil:
			case ctx.Err() != nil:
				return nil
			case errors.Is(err, net.ErrClosed):
				return err
			default:
				// Not applied (lost leadership, no quorum, a conflict):
				// try the same services again on the next wake-up.
				m.logger().Warn("swarm: reconcile", "err", err)
				// The address book freed and allocated for a pass that
				// may not have applied: read it again from the store.
				book = nil
				maps.Copy(state.dirty, dirty)
				state.all = state.all || all
				state.nets = state.nets || nets
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(leadRestartDelay):
				}
			}
			maps.Copy(state.retry, res.retry)
			for _, id := range res.again {
				state.dirty[id] = true
			}
			if res.stopped {
				// The pass left tasks it had given addresses unwritten.
				book = nil
			}
			if res.raced {
				// Some of the pass's writes lost to others: the book may
				// hold allocations or frees that were not committed.
				book = nil
				// Another write keeps winning (a worker's reports, say):
				// give it room rather than spin one entry per pass.
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(conflictPause):
				}
			}
			if len(state.dirty) > 0 || state.all || state.nets {
				// Work left over from a bounded pass: go on at once,
				// but do what the wait below would have: take the
				// events queued meanwhile (a long run of passes must not
				// overflow the watch and cost a full resync), and mark
				// silent nodes down on time (their tasks are replaced
				// only then).
				drainEvents(w, state)
				select {
				case <-tick.C:
					if err := m.markSilentNodesDown(ctx, st); err != nil && ctx.Err() == nil {
						m.logger().Warn("swarm: marking silent nodes down", "err", err)
					}
				default:
				}
				continue
			}
		}
		var retry <-chan time.Time
		if next := state.due(time.Now()); !next.IsZero() {
			retry = time.After(time.Until(next))
		}
		if len(state.dirty) > 0 {
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events():
			if !ok {
				if errors.Is(w.Err(), raftstore.ErrResync) {
					m.logger().Info("swarm: leader watch resyncs")
					w = nil
					continue
				}
				if ctx.Err() != nil {
					return nil
				}
				return w.Err()
			}
			state.mark(ev)
			drainEvents(w, state)
		case <-tick.C:
			if err := m.markSilentNodesDown(ctx, st); err != nil && ctx.Err() == nil {
				m.logger().Warn("swarm: marking silent nodes down", "err", err)
			}
		case <-full.C:
			state.all = true
		case <-retry:
		}
	}
	return nil
}

// drainEvents marks the events w has queued, without waiting. A closed
// watch is left for the loop's wait to handle (it says why it closed).
func drainEvents(w *raftstore.Watcher, state *leaderState) {
	for {
		select {
		case ev, ok := <-w.Events():
			if !ok {
				return
			}
			state.mark(ev)
		default:
			return
		}
	}
}

// markSilentNodesDown commits the nodes whose heartbeats stopped as down;
// the node events that follow make the next pass replace their tasks.
func (m *Manager) markSilentNodesDown(ctx context.Context, st *raftstore.Store) error {
	var nodes []*api.Node
	if err := st.View(func(tx *raftstore.ReadTx) (err error) {
		nodes, err = list[*api.Node](tx.List(TableNodes))
		return err
	}); err != nil {
		return err
	}
	down := m.disp.expired(nodes, time.Now())
	if len(down) == 0 {
		return nil
	}
	_, err := st.Batch(ctx, func(b *raftstore.Batch) error {
		for _, n := range down {
			m.logger().Warn("swarm: node down", "node", n.ID, "reason", n.Status.Message)
			if err := b.Update(TableNodes, n); err != nil {
				return err
			}
		}
		return nil
	})
	return err
}

// ensureCluster creates the cluster object on a new cluster's first
// leader, with Docker's defaults.
func (m *Manager) ensureCluster(ctx context.Context, st *raftstore.Store) error {
	for {
		var n int
		if err := st.View(func(tx *raftstore.ReadTx) (err error) {
			n, err = tx.Count(TableClusters)
			return err
		}); err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
		c, err := newClusterObject(m.RootCA, time.Now().UTC())
		if err != nil {
			return err
		}
		// A new cluster gets its ingress network with it, as Docker's.
		err = st.Update(ctx, func(tx *raftstore.Tx) error {
			if n, err := tx.Count(TableClusters); err != nil || n > 0 {
				return err
			}
			if err := tx.Create(TableClusters, c); err != nil {
				return err
			}
			ingress, err := newNetwork(&tx.ReadTx, api.NetworkSpec{Annotations: api.Annotations{Name: IngressNetworkName}, Ingress: true,
				IPAM: &api.IPAMConfig{Subnet: DefaultIngressSubnet.String()}}, c.CreatedAt, false)
			if err != nil {
				return err
			}
			return tx.Create(TableNetworks, ingress)
		})
		if err == nil || ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
			return err
		}
		m.logger().Warn("swarm: creating the cluster object", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(leadRestartDelay):
		}
	}
}
