package swarm

import (
	"cmp"
	"context"
	"reflect"
	"slices"
	"time"

	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/scheduler"
	"github.com/shoalproject/shoal/swarm/api"
)

// passResult is what a reconcile pass leaves for the next ones.
type passResult struct {
	// retry says when to look at a service again (a restart delay or an
	// update step ends).
	retry map[string]time.Time
	// again lists services whose work the pass cut short (the bound on
	// tasks per pass), or whose changes raced another write (raced).
	again []string
	raced bool
	// stopped says the pass left planned tasks unwritten (a service
	// changed under it): what it allocated for them was not committed.
	stopped bool
}

// addrRetryDelay is how soon a service whose tasks wait for an address
// (their network's range is full) is looked at again.
const addrRetryDelay = time.Second

// earliest is the earlier of two times, a zero one not counting.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// reconcile is one pass of the leader: it brings the services in dirty
// (every service when all is set) to their desired state, places pending
// tasks, brings the nodes' network attachments up to date when all or
// netsChanged is set, and commits the changes in one batch. Its cost follows what
// changed: a task event reads that task's service and its tasks, not the
// whole cluster. Only a pass that places tasks reads every task, to know
// what each node already runs.
func (m *Manager) reconcile(ctx context.Context, st *raftstore.Store, dirty map[string]bool, all, netsChanged bool, book **allocator) (passResult, error) {
	now := time.Now().UTC()
	res := passResult{retry: map[string]time.Time{}}
	var (
		nodes    []*api.Node
		services []*api.Service
		gone     = map[string][]*taskRef{} // tasks of services removed
		bySvc    = map[string][]*taskRef{}
		cluster  = &api.Cluster{Spec: DefaultClusterSpec()}
		usage    []*api.Task // every task, when the pass places some
		place    bool        // the pass places tasks
		p        plan
		changed  []*api.Service
		nodeUps  []*api.Node
		unplaced = map[*taskRef]bool{} // pending tasks without their addresses
	)
	err := st.View(func(tx *raftstore.ReadTx) error {
		var err error
		if nodes, err = list[*api.Node](tx.List(TableNodes)); err != nil {
			return err
		}
		if cs, err := list[*api.Cluster](tx.List(TableClusters)); err != nil {
			return err
		} else if len(cs) > 0 {
			cluster = cs[0]
		}
		var tasks, every []*api.Task // every: the whole table, when read
		if all {
			if services, err = list[*api.Service](tx.List(TableServices)); err != nil {
				return err
			}
			if tasks, err = list[*api.Task](tx.List(TableTasks)); err != nil {
				return err
			}
			every = tasks
		} else {
			for id := range dirty {
				if o, err := tx.Get(TableServices, id); err == nil {
					services = append(services, o.(*api.Service))
				}
			}
			if tasks, every, err = dirtyTasks(tx, dirty, services, len(nodes)); err != nil {
				return err
			}
		}
		// The address book: rebuilt from the store at a full pass, else
		// kept up to date with what each pass allocates and frees.
		if all || *book == nil {
			if *book, err = newAllocator(tx); err != nil {
				return err
			}
		} else {
			nets, err := list[*api.Network](tx.List(TableNetworks))
			if err != nil {
				return err
			}
			(*book).syncNetworks(nets)
		}
		alloc := *book
		vipChanged := map[string]bool{}
		for i, svc := range services {
			c := *svc
			if ch, err := alloc.serviceVIPs(&c); err != nil {
				m.logger().Warn("swarm: allocating a service's VIPs", "service", svc.Spec.Name, "err", err)
			} else if ch {
				services[i], vipChanged[svc.ID] = &c, true
			}
		}
		known := map[string]bool{}
		for _, s := range services {
			known[s.ID] = true
		}
		// Store objects are read-only and shared: the pass holds them by
		// refs, which copy a task only when the pass changes it (copying
		// every task was most of a pass's time on a big service).
		for _, c := range refsOf(tasks) {
			if known[c.ServiceID] {
				bySvc[c.ServiceID] = append(bySvc[c.ServiceID], c)
			} else {
				gone[c.ServiceID] = append(gone[c.ServiceID], c)
			}
		}
		passOrder(services, len(nodes))

		nodeByID := make(map[string]*api.Node, len(nodes))
		for _, n := range nodes {
			nodeByID[n.ID] = n
		}
		r := &reconciler{now: now, newID: newID, history: cluster.Spec.Orchestration.TaskHistoryRetentionLimit}
		if all {
			// Nodes changed (that is what full passes follow): stop tasks
			// on nodes that no longer meet their constraints or resources.
			enforce(nodes, bySvc, r, &p)
		}
		budget := m.maxTasksPerPass()
		// Many tasks to create: have them made ahead (tasksupply.go).
		if want := min(missingReplicas(services, bySvc), budget); want >= supplyMin {
			r.supply = supplyTasks(want, newID)
			defer r.supply.stop()
		}
		for _, svc := range services {
			if budget <= 0 {
				res.again = append(res.again, svc.ID)
				continue
			}
			// The budget goes down to the reconciler: it builds only the
			// tasks this pass commits.
			r.budget, r.made, r.cut = budget, 0, false
			sp := r.reconcile(svc, bySvc[svc.ID], nodeByID)
			if r.cut {
				res.again = append(res.again, svc.ID)
			}
			budget -= r.made
			if sp.service != nil {
				changed = append(changed, sp.service)
			} else if vipChanged[svc.ID] {
				changed = append(changed, svc)
			}
			// Addresses: for the tasks to place (before placement), and
			// freed for the tasks that ended.
			for _, t := range append(slices.Clone(bySvc[svc.ID]), sp.create...) {
				switch {
				case ended(t.Task) || t.DesiredState > api.TaskRunning && t.NodeID == "":
					alloc.releaseTask(t.Task)
				case pendingTask(t.Task):
					nets, ch, err := alloc.taskAddrs(svc, t.Task)
					if ch {
						t.edit().Networks = nets
					}
					if err != nil {
						unplaced[t] = true
						if msg := "waiting for an address: " + err.Error(); t.Status.Err != msg {
							t.edit().Status.Err = msg
							p.updated(t)
						}
						// Addresses come free as other services' tasks
						// end (a full range): look again soon rather
						// than at the next full pass.
						sp.retryAt = earliest(sp.retryAt, now.Add(addrRetryDelay))
					}
				}
			}
			p.merge(&sp)
			if !sp.retryAt.IsZero() {
				res.retry[svc.ID] = sp.retryAt
			}
		}
		// Tasks of removed services: shut down, then gone once ended.
		for id, ts := range gone {
			alloc.releaseServiceByID(id)
			for _, t := range ts {
				if ended(t.Task) {
					alloc.releaseTask(t.Task)
				}
				switch {
				case ended(t.Task) || t.NodeID == "":
					p.remove = append(p.remove, t)
				case t.DesiredState < api.TaskShutdown:
					t.edit().DesiredState = api.TaskShutdown
					p.updated(t)
				}
			}
		}
		for _, t := range p.remove {
			alloc.releaseTask(t.Task)
		}
		if all || netsChanged {
			// Every ready node has its address on ingress (the mesh
			// reaches tasks on other nodes from it), and none keeps one
			// on a network that is gone (a replaced ingress).
			for _, n := range nodes {
				// Only nodes with a data-plane address run a network
				// agent (and a routing mesh) that needs one.
				ready := n.Status.State == api.NodeReady && n.Description.DataAddr != ""
				c := *n
				if ch, err := alloc.nodeAttachments(&c, ready); err != nil {
					m.logger().Warn("swarm: allocating a node's ingress address", "err", err)
				} else if ch {
					nodeUps = append(nodeUps, &c)
				}
			}
		}
		// Placement needs what every node already runs, so only a pass
		// with pending tasks reads all of them.
		if place = hasPending(bySvc, p.create); place {
			n, err := tx.Count(TableTasks)
			if err != nil {
				return err
			}
			switch {
			case every != nil:
				usage = every
			case n == len(tasks):
				usage = tasks // every task was read already (one service, say)
			default:
				usage, err = list[*api.Task](tx.List(TableTasks))
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	var pl *placement
	var pending []*taskRef
	if place {
		sched := m.Scheduler
		if sched == nil {
			sched = scheduler.New(scheduler.Config{})
		}
		pending = slices.DeleteFunc(byPending(bySvc, p.create), func(t *taskRef) bool { return unplaced[t] })
		pl = newPlacement(sched, nodes, usage)
	}
	return res, m.commit(ctx, st, now, &p, pl, pending, changed, nodeUps, services, nodes, &res)
}

// commit writes a pass: creations first (with their placement when the
// pass places them), then updates, each object once. A pass creates up to
// MaxTasksPerPass tasks and commits them in steps of at most
// DefaultPassStep, each placed on what the steps before took and cut into
// its own log entries: the leader places and encodes a step while the
// store applies the one before (on two cores, the pass takes about the
// longer of the two, not their sum), and the pass reads the service's
// tasks once, not once a step (reading back 100,000 tasks every 10,000
// was most of creating a big service). Before each step after the first
// it looks at what the placement of the rest depends on: a service it
// still creates tasks for that was removed or whose spec changed (a
// scale, an update), or a node whose spec, state or description changed
// (drained, paused, down, removed, re-registered), ends the pass there, and the next pass starts
// again from the store (res.stopped). readNodes are the nodes the pass
// read; nodes those it updates.
func (m *Manager) commit(ctx context.Context, st *raftstore.Store, now time.Time, p *plan, pl *placement, pending []*taskRef, services []*api.Service, nodes []*api.Node, read []*api.Service, readNodes []*api.Node, res *passResult) error {
	steps := passSteps(p.create, min(m.maxTasksPerPass(), m.passStep()))
	// Pending tasks that the pass did not create are placed in the first
	// step; the created ones in their own.
	creating := make(map[*taskRef]bool, len(p.create))
	for _, t := range p.create {
		creating[t] = true
	}
	toPlace := make(map[*taskRef]bool, len(pending))
	var older []*taskRef
	for _, t := range pending {
		toPlace[t] = true
		if !creating[t] {
			older = append(older, t)
		}
	}
	if len(p.create)+len(p.update)+len(older)+len(p.remove)+len(services)+len(nodes) == 0 {
		return nil
	}
	var (
		updating []*taskRef
		seen     = map[*taskRef]bool{}
		written  []*taskRef // created tasks the batch wrote
	)
	byService := make(map[string]*api.Service, len(read))
	for _, s := range read {
		byService[s.ID] = s
	}
	var byNode map[string]*api.Node // what placement went by; nil: none
	if pl != nil && len(steps) > 1 {
		byNode = make(map[string]*api.Node, len(readNodes))
		for _, n := range readNodes {
			byNode[n.ID] = n
		}
	}
	out, err := st.Batch(ctx, func(b *raftstore.Batch) error {
		// Everything written is the pass's own copy, dropped after the
		// pass: the store may keep it as the object its readers share
		// (the leader's watcher then need not decode 100,000 new tasks).
		b.HandOver()
		for i, step := range steps {
			if i > 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
				if m.stepHook != nil {
					m.stepHook(i)
				}
				if what := changedUnder(st, byService, byNode, step); what != "" {
					res.stopped = true
					for _, rest := range steps[i:] {
						for _, t := range rest {
							if len(res.again) == 0 || res.again[len(res.again)-1] != t.ServiceID {
								res.again = append(res.again, t.ServiceID)
							}
						}
					}
					m.logger().Debug("swarm: what a pass placed on changed; the next pass goes on", "changed", what)
					return nil
				}
			}
			var places []*taskRef
			if i == 0 {
				places = older
			}
			for _, t := range step {
				if toPlace[t] {
					places = append(places, t)
				}
			}
			var assigned []*taskRef
			if pl != nil {
				assigned = pl.assign(places, now)
			}
			if i == 0 {
				for _, n := range nodes {
					if err := b.Update(TableNodes, n); err != nil {
						return err
					}
				}
				for _, svc := range services {
					svc.UpdatedAt = now
					if err := b.Update(TableServices, svc); err != nil {
						return err
					}
					if svc.UpdateStatus != nil {
						m.logger().Info("swarm: service update", "service", svc.Spec.Name, "state", svc.UpdateStatus.State, "message", svc.UpdateStatus.Message)
					}
				}
			}
			for _, t := range step {
				if err := b.Create(TableTasks, t.Task); err != nil {
					return err
				}
				written = append(written, t)
			}
			var upd []*taskRef
			if i == 0 {
				upd = p.update
			}
			for _, ref := range append(upd, assigned...) {
				if creating[ref] || seen[ref] {
					continue
				}
				seen[ref] = true
				updating = append(updating, ref)
				t := ref.edit() // a copy already: what the pass changed
				t.UpdatedAt = now
				if err := b.Update(TableTasks, t); err != nil {
					return err
				}
			}
			if i == 0 {
				for _, t := range p.remove {
					if err := b.Delete(TableTasks, t.ID, t.Version); err != nil {
						return err
					}
				}
			}
			if err := b.Cut(); err != nil {
				return err
			}
		}
		return nil
	})
	if pl != nil {
		m.scheduleTime.observe(pl.took)
	}
	// A worker's report or a user's change raced this pass: its services
	// get another look (the event of that change asks for it too).
	res.raced = len(out.Conflicts) > 0
	var owner map[string]string // task ID -> service ID, of the tasks written
	if res.raced {
		owner = map[string]string{}
		for _, ts := range [][]*taskRef{written, updating, p.remove} {
			for _, t := range ts {
				owner[t.ID] = t.ServiceID
			}
		}
	}
	for _, c := range out.Conflicts {
		switch c.Table {
		case TableServices:
			res.again = append(res.again, c.ID)
		case TableTasks:
			if id, ok := owner[c.ID]; ok {
				res.again = append(res.again, id)
			}
		}
	}
	if len(out.Conflicts) > 0 {
		m.logger().Debug("swarm: reconcile conflicts", "count", len(out.Conflicts))
	}
	return err
}

// passSteps splits the tasks a pass creates into steps of at most per
// (one step, maybe empty, when there are none: it carries the pass's
// other writes).
func passSteps(create []*taskRef, per int) [][]*taskRef {
	var steps [][]*taskRef
	for len(create) > per {
		steps = append(steps, create[:per:per])
		create = create[per:]
	}
	return append(steps, create[:len(create):len(create)])
}

// changedUnder says what changed since the pass read it, of what the
// placement of step depends on: a service step creates tasks for that was
// removed or whose spec changed (a rollback the pass wrote itself counts:
// the next pass goes on from the store), or a node of nodes (nil: no
// placement) whose spec (availability, labels, role), state or
// description (resources, engine labels, platform, "no tasks": what
// placement reads) changed or that was removed (the pass's own node
// writes change addresses only).
// "" when nothing did.
func changedUnder(st *raftstore.Store, read map[string]*api.Service, nodes map[string]*api.Node, step []*taskRef) (changed string) {
	ids := map[string]bool{}
	for _, t := range step {
		ids[t.ServiceID] = true
	}
	st.View(func(tx *raftstore.ReadTx) error {
		for id := range ids {
			was := read[id]
			o, err := tx.Get(TableServices, id)
			if err != nil || was == nil {
				changed = "service " + id
				return nil
			}
			if cur := o.(*api.Service); cur != was && !reflect.DeepEqual(cur.Spec, was.Spec) {
				changed = "service " + id
				return nil
			}
		}
		for id, was := range nodes {
			o, err := tx.Get(TableNodes, id)
			if err != nil {
				changed = "node " + id
				return nil
			}
			if cur := o.(*api.Node); cur != was && (cur.Status.State != was.Status.State || !reflect.DeepEqual(cur.Spec, was.Spec) ||
				!reflect.DeepEqual(cur.Description, was.Description)) {
				changed = "node " + id
				return nil
			}
		}
		return nil
	})
	return changed
}

// dirtyTasks reads the tasks of the services in dirty (services are those
// still in the store): by the service index or, when those services' tasks
// are likely most of the table (a big service being created), by one scan
// of the table, which costs less than an index lookup per task and gives
// placement every task too (every; nil when the table was not read).
func dirtyTasks(tx *raftstore.ReadTx, dirty map[string]bool, services []*api.Service, nodes int) (tasks, every []*api.Task, err error) {
	n, err := tx.Count(TableTasks)
	if err != nil {
		return nil, nil, err
	}
	var want uint64
	for _, s := range services {
		want += expectedTasks(s, nodes)
	}
	if n > 0 && want >= uint64(n)/2 {
		if every, err = list[*api.Task](tx.List(TableTasks)); err != nil {
			return nil, nil, err
		}
		for _, t := range every {
			if dirty[t.ServiceID] {
				tasks = append(tasks, t)
			}
		}
		return tasks, every, nil
	}
	for id := range dirty {
		ts, err := list[*api.Task](tx.Find(TableTasks, IndexService, id))
		if err != nil {
			return nil, nil, err
		}
		tasks = append(tasks, ts...)
	}
	return tasks, nil, nil
}

// missingReplicas is about how many tasks the replicated services lack
// (their tasks of any state count as present: it is an estimate).
// passOrder orders the services of a pass smallest first (by the tasks a
// converged one has), then by ID: when the pass's bound on tasks runs out,
// what is left over is the biggest service's creation, not a small
// service's replacement of a task on a node gone down. In ID order, a
// service sorting after a big one being created waited for the whole run
// of passes that creation took.
func passOrder(services []*api.Service, nodes int) {
	slices.SortFunc(services, func(a, b *api.Service) int {
		if x, y := expectedTasks(a, nodes), expectedTasks(b, nodes); x != y {
			return cmp.Compare(x, y)
		}
		return cmpString(a.ID, b.ID)
	})
}

func missingReplicas(services []*api.Service, bySvc map[string][]*taskRef) int {
	n := 0
	for _, s := range services {
		if r := s.Spec.Mode.Replicated; r != nil && r.Replicas > uint64(len(bySvc[s.ID])) {
			n += int(r.Replicas - uint64(len(bySvc[s.ID])))
		}
	}
	return n
}

// expectedTasks is about how many tasks a converged service has, its
// history aside.
func expectedTasks(s *api.Service, nodes int) uint64 {
	switch m := s.Spec.Mode; {
	case m.Replicated != nil:
		return m.Replicated.Replicas
	case m.ReplicatedJob != nil:
		return max(m.ReplicatedJob.TotalCompletions, 1)
	}
	return uint64(nodes) // global services and jobs
}

func (p *plan) merge(o *plan) {
	p.create = append(p.create, o.create...)
	for _, t := range o.update {
		p.updated(t)
	}
	p.remove = append(p.remove, o.remove...)
}

func pendingTask(t *api.Task) bool {
	return t.Status.State == api.TaskPending && t.DesiredState <= api.TaskRunning
}

func hasPending(bySvc map[string][]*taskRef, created []*taskRef) bool {
	if len(created) > 0 {
		return true
	}
	for _, ts := range bySvc {
		for _, t := range ts {
			if pendingTask(t.Task) {
				return true
			}
		}
	}
	return false
}

// byPending returns the pending tasks of the pass: those read from the
// store in a stable order, then those the pass created in the order it
// made them (already stable: by service, then slot or node), which is the
// order its steps commit them in.
func byPending(bySvc map[string][]*taskRef, created []*taskRef) []*taskRef {
	var out []*taskRef
	for _, ts := range bySvc {
		for _, t := range ts {
			if pendingTask(t.Task) {
				out = append(out, t)
			}
		}
	}
	slices.SortFunc(out, func(a, b *taskRef) int {
		if c := cmpString(a.ServiceID, b.ServiceID); c != 0 {
			return c
		}
		return cmpString(a.ID, b.ID)
	})
	return append(out, created...)
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
