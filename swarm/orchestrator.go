package swarm

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/shoalproject/shoal/scheduler"
	"github.com/shoalproject/shoal/swarm/api"
)

// Orchestration defaults, as Docker's.
const (
	// DefaultRestartDelay is how long a replacement waits after its
	// predecessor ended, when the restart policy sets no delay.
	DefaultRestartDelay = 5 * time.Second
	// DefaultTaskHistory is how many ended tasks are kept per slot.
	DefaultTaskHistory = 5
)

// plan is what one reconciliation of a service changes. Its tasks are the
// pass's refs: created ones are the pass's own, updated ones were copied
// by edit before the change.
type plan struct {
	create []*taskRef
	update []*taskRef
	remove []*taskRef
	// retryAt is when to look again (a restart delay ends); zero: no need.
	retryAt time.Time
	// service is the service with a changed UpdateStatus (or rolled back).
	service *api.Service
	// updating marks the tasks in update, so each goes in once.
	updating map[*taskRef]bool
}

// retryAfter asks for another look at the service at t (the earliest such
// time wins).
func (p *plan) retryAfter(t time.Time) {
	if p.retryAt.IsZero() || t.Before(p.retryAt) {
		p.retryAt = t
	}
}

// updated adds t to the plan's updates once.
func (p *plan) updated(t *taskRef) {
	if p.updating == nil {
		p.updating = map[*taskRef]bool{}
	}
	if !p.updating[t] {
		p.updating[t] = true
		p.update = append(p.update, t)
	}
}

// reconciler turns a service and its tasks into the changes that bring the
// tasks to the service's desired state: replicated slots or one task per
// eligible node, replacements by the restart policy, and the history kept
// per slot. It is pure: the caller reads the store and commits the plan.
type reconciler struct {
	now     time.Time
	newID   func() string
	history int // ended tasks kept per slot (the cluster's retention limit)
	// budget bounds the tasks one reconciliation creates (0: no bound),
	// so that a pass builds only the tasks it will commit; made counts
	// them, and cut says the bound left slots for a later pass.
	budget, made int
	cut          bool
	// supply, when set, hands out the tasks to create (tasksupply.go).
	supply *taskSupply
}

// room reports whether the budget allows one more task (noting when it
// does not).
func (r *reconciler) room() bool {
	if r.budget > 0 && r.made >= r.budget {
		r.cut = true
		return false
	}
	return true
}

// add puts a new task in the plan, counted against the budget.
func (r *reconciler) add(t *api.Task, p *plan) {
	r.made++
	p.create = append(p.create, newRef(t))
}

// alive is a task that runs or is on its way to running.
func alive(t *api.Task) bool {
	return t.DesiredState <= api.TaskRunning && t.Status.State <= api.TaskRunning
}

// ended is a task whose process has ended (or never will run).
func ended(t *api.Task) bool { return t.Status.State > api.TaskRunning }

// reconcile plans a service's changes. It changes tasks only through
// their refs' edit: the refs may hold the store's objects.
func (r *reconciler) reconcile(svc *api.Service, tasks []*taskRef, nodes map[string]*api.Node) plan {
	var p plan
	// Tasks on nodes that are down or gone will not report again: they are
	// orphaned, and replaced like failed ones. Tasks on drained nodes are
	// stopped; their slots get new tasks on other nodes (global services
	// and jobs stop theirs through eligibility).
	for _, t := range tasks {
		if t.NodeID == "" || !alive(t.Task) {
			continue
		}
		switch n := nodes[t.NodeID]; {
		case n == nil || n.Status.State == api.NodeDown:
			t.edit().Status = api.TaskStatus{Timestamp: r.now, State: api.TaskOrphaned, Message: "node down", Err: "node " + t.NodeID + " is down or gone"}
			p.updated(t)
		case n.Spec.Availability == api.NodeDrain && t.Slot > 0:
			r.shutdown(t, "node drained", &p)
		}
	}
	switch {
	case svc.Spec.Mode.IsJob():
		r.job(svc, tasks, nodes, &p)
	case svc.Spec.Mode.IsGlobal():
		r.global(svc, tasks, nodes, &p)
	default:
		r.replicated(svc, tasks, &p)
	}
	return p
}

// slotKey groups the tasks of one replica: the slot number, or the node of
// a global service.
func slotKey(t *api.Task) string {
	if t.Slot > 0 {
		return fmt.Sprint(t.Slot)
	}
	return "node/" + t.NodeID
}

func (r *reconciler) replicated(svc *api.Service, tasks []*taskRef, p *plan) {
	replicas := uint64(0)
	if svc.Spec.Mode.Replicated != nil {
		replicas = svc.Spec.Mode.Replicated.Replicas
	}
	// Slot n is live[n-1] (replicas is bounded by the cluster's cap),
	// and the slots' tasks share one array: a map of 100,000 slots, or a
	// slice per slot, cost more per pass than the slots' work.
	live := make([]slot, replicas)
	extra := map[uint64][]*taskRef{} // slot 0, and slots scaled away
	for _, t := range tasks {
		if t.Slot >= 1 && t.Slot <= replicas {
			live[t.Slot-1].slot++ // a count, for now
		} else {
			extra[t.Slot] = append(extra[t.Slot], t)
		}
	}
	shared := make([]*taskRef, 0, len(tasks))
	for i := range live {
		n := int(live[i].slot)
		live[i].tasks = shared[len(shared) : len(shared) : len(shared)+n]
		shared = shared[:len(shared)+n]
		live[i].slot = uint64(i + 1)
	}
	for _, t := range tasks {
		if t.Slot >= 1 && t.Slot <= replicas {
			s := &live[t.Slot-1]
			s.tasks = append(s.tasks, t) // within its part of shared
		}
	}
	for _, ts := range extra {
		for _, t := range ts {
			r.shutdown(t, "scaled down", p)
		}
	}
	r.rollingUpdate(svc, live, p)
	for _, s := range live {
		r.keep(svc, s, p)
	}
	for _, s := range live {
		r.reap(s.tasks, p)
	}
	for _, ts := range extra {
		r.reap(ts, p)
	}
}

func (r *reconciler) global(svc *api.Service, tasks []*taskRef, nodes map[string]*api.Node, p *plan) {
	byNode := map[string][]*taskRef{}
	for _, t := range tasks {
		byNode[t.NodeID] = append(byNode[t.NodeID], t)
	}
	eligible := nodeEligible(svc)
	for id, ts := range byNode {
		if n := nodes[id]; n == nil || !eligible(n) {
			for _, t := range ts {
				r.shutdown(t, "node no longer eligible", p)
			}
		}
	}
	ids := make([]string, 0, len(nodes))
	for id := range nodes {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var live []slot
	for _, id := range ids {
		n := nodes[id]
		// Paused nodes keep their task but get no new one.
		if !eligible(n) || (n.Spec.Availability == api.NodePause && len(byNode[id]) == 0) {
			continue
		}
		live = append(live, slot{tasks: byNode[id], node: id})
	}
	r.rollingUpdate(svc, live, p)
	for _, s := range live {
		r.keep(svc, s, p)
	}
	for _, ts := range byNode {
		r.reap(ts, p)
	}
}

// nodeEligible tells the nodes a global service (or job) runs on: ready,
// not drained, and meeting its constraints.
func nodeEligible(svc *api.Service) func(*api.Node) bool {
	var constraints []scheduler.Constraint
	if pl := svc.Spec.TaskTemplate.Placement; pl != nil {
		for _, c := range pl.Constraints {
			if con, err := scheduler.ParseConstraint(c); err == nil {
				constraints = append(constraints, con)
			}
		}
	}
	return func(n *api.Node) bool {
		if n.Status.State != api.NodeReady || n.Spec.Availability == api.NodeDrain {
			return false
		}
		sn := schedNode(n)
		for _, c := range constraints {
			if !c.Match(sn) {
				return false
			}
		}
		return true
	}
}

// job runs a job's tasks to completion: for a replicated job,
// TotalCompletions successes with at most MaxConcurrent tasks at a time;
// for a global job, one success on every eligible node, also on nodes that
// join later. Failed tasks are retried by the restart policy (on-failure by
// default); completed ones never run again. Tasks of an older iteration
// (before the job was updated) are shut down.
func (r *reconciler) job(svc *api.Service, tasks []*taskRef, nodes map[string]*api.Node, p *plan) {
	iter := uint64(0)
	if svc.JobStatus != nil {
		iter = svc.JobStatus.JobIteration
	}
	var current []*taskRef
	for _, t := range tasks {
		if t.JobIteration != iter {
			r.shutdown(t, "an older run of the job", p)
			continue
		}
		current = append(current, t)
	}
	done := func(ts []*taskRef) bool {
		for _, t := range ts {
			if t.Status.State == api.TaskComplete {
				return true
			}
		}
		return false
	}
	groups := map[string][]*taskRef{}
	if svc.Spec.Mode.GlobalJob != nil {
		for _, t := range current {
			groups[t.NodeID] = append(groups[t.NodeID], t)
		}
		eligible := nodeEligible(svc)
		ids := make([]string, 0, len(nodes))
		for id := range nodes {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		for _, id := range ids {
			if !eligible(nodes[id]) || done(groups[id]) || nodes[id].Spec.Availability == api.NodePause {
				continue
			}
			r.keepAs(svc, slot{tasks: groups[id], node: id, iter: iter}, p, api.RestartOnFailure)
		}
	} else {
		rj := svc.Spec.Mode.ReplicatedJob
		maxConcurrent := max(rj.MaxConcurrent, 1)
		total := rj.TotalCompletions
		if total == 0 {
			total = maxConcurrent
		}
		slotTasks := map[uint64][]*taskRef{}
		alive := uint64(0)
		for _, t := range current {
			slotTasks[t.Slot] = append(slotTasks[t.Slot], t)
		}
		for _, ts := range slotTasks {
			if c := currentTask(ts); c != nil && !ended(c.Task) {
				alive++
			}
		}
		for n := uint64(1); n <= total; n++ {
			ts := slotTasks[n]
			if done(ts) {
				continue
			}
			if len(ts) == 0 {
				if alive >= maxConcurrent {
					continue
				}
				alive++
			}
			r.keepAs(svc, slot{tasks: ts, slot: n, iter: iter}, p, api.RestartOnFailure)
		}
		for _, t := range current {
			groups[slotKey(t.Task)] = append(groups[slotKey(t.Task)], t)
		}
	}
	for _, ts := range groups {
		r.reap(ts, p)
	}
}

// keep makes one slot hold a task that runs: a new one when the slot is
// empty, a replacement when the last one ended and the restart policy says
// so (after its delay).
func (r *reconciler) keep(svc *api.Service, s slot, p *plan) {
	r.keepAs(svc, s, p, api.RestartAny)
}

// keepAs is keep with the restart condition used when the policy sets none.
func (r *reconciler) keepAs(svc *api.Service, s slot, p *plan, defaultCond api.RestartCondition) {
	ts := s.tasks
	current := currentTask(ts) // the newest task meant to run
	if current != nil && current.Status.State == api.TaskRunning {
		// A start-first update's old task goes once its successor runs.
		for _, t := range ts {
			if t != current && alive(t.Task) {
				r.shutdown(t, "replaced by a task of the new spec", p)
			}
		}
	}
	if current != nil && !ended(current.Task) {
		return
	}
	if current == nil {
		// Stop first: the slot's old task must be gone before a new one.
		for _, t := range ts {
			if t.DesiredState == api.TaskShutdown && !ended(t.Task) && t.NodeID != "" {
				return
			}
		}
	}
	if current != nil {
		rp := svc.Spec.TaskTemplate.RestartPolicy
		cond, delay := defaultCond, DefaultRestartDelay
		var maxAttempts uint64
		var window time.Duration
		if rp != nil {
			if rp.Condition != "" {
				cond = rp.Condition
			}
			if rp.Delay != nil {
				delay = *rp.Delay
			}
			maxAttempts, window = rp.MaxAttempts, rp.Window
		}
		if cond == api.RestartNone || (cond == api.RestartOnFailure && current.Status.State == api.TaskComplete) {
			return // the slot stays with its ended task
		}
		restarts := r.restarts(current, ts, window)
		if maxAttempts > 0 && uint64(len(restarts)) >= maxAttempts {
			return
		}
		// The delay is for tasks that ended (exited, failed, were
		// rejected): it keeps a task that cannot run from looping. A task
		// orphaned by its node (down or gone) did not fail; its slot gets
		// a new task at once.
		if at := current.Status.Timestamp.Add(delay); current.Status.State != api.TaskOrphaned && r.now.Before(at) {
			p.retryAfter(at)
			return
		}
		if !r.room() {
			return // the task stays until its replacement comes
		}
		r.shutdown(current, "replaced", p)
		t := r.newTask(svc)
		s.place(t)
		r.name(svc, t)
		// The replacement carries the slot's restart history, so the
		// restart policy still counts restarts whose tasks the history
		// limit has reaped (MaxAttempts may exceed it).
		if keep := min(max(maxAttempts, 1), maxRestartHistory); uint64(len(restarts)) >= keep {
			restarts = restarts[uint64(len(restarts))-keep+1:]
		}
		t.Restarts = append(restarts, r.now)
		r.add(t, p)
		return
	}
	if !r.room() {
		return
	}
	t := r.newTask(svc)
	s.place(t)
	r.name(svc, t)
	r.add(t, p)
}

// maxRestartHistory bounds the restart times a task carries.
const maxRestartHistory = 1000

// restarts returns when the slot's tasks were restarted within window (0:
// ever), oldest first: the times current carries, or, for tasks made
// before they carried them, one per older task still kept.
func (r *reconciler) restarts(current *taskRef, ts []*taskRef, window time.Duration) []time.Time {
	var out []time.Time
	for _, at := range current.Restarts {
		if window == 0 || r.now.Sub(at) <= window {
			out = append(out, at)
		}
	}
	if len(current.Restarts) > 0 {
		return out
	}
	for _, t := range ts {
		if t != current && (window == 0 || r.now.Sub(t.CreatedAt) <= window) {
			out = append(out, t.CreatedAt)
		}
	}
	slices.SortFunc(out, time.Time.Compare)
	return out
}

// name gives a task its name: SERVICE.SLOT.ID, or SERVICE.NODE.ID.
func (r *reconciler) name(svc *api.Service, t *api.Task) {
	mid := t.NodeID
	if t.Slot > 0 {
		mid = strconv.FormatUint(t.Slot, 10)
	}
	t.Annotations.Name = svc.Spec.Name + "." + mid + "." + t.ID
}

func newer(a, b *api.Task) bool {
	if !a.CreatedAt.Equal(b.CreatedAt) {
		return a.CreatedAt.After(b.CreatedAt)
	}
	return a.ID > b.ID
}

// shutdown sets a task's desired state to SHUTDOWN (once).
func (r *reconciler) shutdown(ref *taskRef, why string, p *plan) {
	if ref.DesiredState >= api.TaskShutdown {
		return
	}
	t := ref.edit()
	t.DesiredState = api.TaskShutdown
	if !ended(t) && t.NodeID == "" {
		// Never assigned: nothing runs it, so it is done now.
		t.Status = api.TaskStatus{Timestamp: r.now, State: api.TaskShutdown, Message: why}
	}
	p.updated(ref)
}

// reap removes the oldest ended tasks of a slot beyond the history limit.
func (r *reconciler) reap(ts []*taskRef, p *plan) {
	var done []*taskRef
	for _, t := range ts {
		if ended(t.Task) && t.DesiredState > api.TaskRunning {
			done = append(done, t)
		}
	}
	if len(done) <= r.history {
		return
	}
	slices.SortFunc(done, func(a, b *taskRef) int {
		if newer(a.Task, b.Task) {
			return 1
		}
		return -1
	})
	p.remove = append(p.remove, done[:len(done)-r.history]...)
}

func (r *reconciler) newTask(svc *api.Service) *api.Task {
	t := r.supply.take()
	if t == nil {
		t = &api.Task{Meta: api.Meta{ID: r.newID()}}
	}
	*t = api.Task{
		Meta:         api.Meta{ID: t.ID, CreatedAt: r.now, UpdatedAt: r.now},
		ServiceID:    svc.ID,
		Spec:         svc.Spec.TaskTemplate,
		SpecVersion:  svc.Version,
		Endpoint:     taskEndpoint(svc),
		DesiredState: api.TaskRunning,
		Status:       api.TaskStatus{Timestamp: r.now, State: api.TaskPending, Message: "pending task scheduling"},
	}
	return t
}

// taskEndpoint is the endpoint a new task of svc carries: what the
// managers allocated, or else the spec's ports as asked.
func taskEndpoint(svc *api.Service) *api.Endpoint {
	if svc.Endpoint != nil {
		e := *svc.Endpoint
		return &e
	}
	if es := svc.Spec.EndpointSpec; es != nil && len(es.Ports) > 0 {
		return &api.Endpoint{Spec: *es, Ports: slices.Clone(es.Ports)}
	}
	return nil
}

// schedNode describes a node to the scheduler (and to constraints).
func schedNode(n *api.Node) *scheduler.Node {
	sn := &scheduler.Node{ID: n.ID, Hostname: n.Description.Hostname, Role: string(cmp.Or(n.Spec.Role, api.RoleWorker)),
		Labels: n.Spec.Labels, EngineLabels: n.Description.Engine.Labels,
		OS: n.Description.Platform.OS, Arch: n.Description.Platform.Architecture,
		Ready: n.Status.State == api.NodeReady,
		Total: scheduler.Resources{NanoCPUs: n.Description.Resources.NanoCPUs, MemoryBytes: n.Description.Resources.MemoryBytes},
	}
	switch {
	case n.Description.NoTasks: // whatever an operator set: it has no executor
		sn.Availability = scheduler.Drain
	case n.Spec.Availability == api.NodePause:
		sn.Availability = scheduler.Pause
	case n.Spec.Availability == api.NodeDrain:
		sn.Availability = scheduler.Drain
	}
	for _, g := range n.Description.Resources.Generic {
		if g.Named != "" {
			if sn.Named == nil {
				sn.Named = map[string][]string{}
			}
			sn.Named[g.Kind] = append(sn.Named[g.Kind], g.Named)
			continue
		}
		if sn.Total.Generic == nil {
			sn.Total.Generic = map[string]int64{}
		}
		sn.Total.Generic[g.Kind] += g.Value
	}
	return sn
}
