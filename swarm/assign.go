package swarm

import (
	"time"

	"github.com/shoalproject/shoal/scheduler"
	"github.com/shoalproject/shoal/swarm/api"
)

// assign places the pending tasks on nodes with the scheduler, a whole
// service (at one spec version) at a time, and returns the tasks it
// changed: assigned ones, and pending ones whose reason for waiting
// changed ("no suitable node (insufficient memory on 3 nodes)").
func assign(s *scheduler.Scheduler, nodes []*api.Node, tasks []*api.Task, now time.Time) []*api.Task {
	byID := map[string]*scheduler.Node{}
	var infos []*scheduler.Node
	for _, n := range nodes {
		sn := schedNode(n)
		sn.ServiceTasks = map[string]int{}
		byID[n.ID] = sn
		infos = append(infos, sn)
	}
	type groupKey struct {
		service string
		version uint64
	}
	groups := map[groupKey]*scheduler.Group{}
	var order []groupKey
	pending := map[string]*api.Task{}
	for _, t := range tasks {
		if t.Status.State == api.TaskPending && t.DesiredState <= api.TaskRunning {
			k := groupKey{t.ServiceID, t.SpecVersion}
			g := groups[k]
			if g == nil {
				g = groupFor(t)
				groups[k] = g
				order = append(order, k)
			}
			g.Tasks = append(g.Tasks, scheduler.TaskRef{ID: t.ID, NodeID: t.NodeID})
			pending[t.ID] = t
			continue
		}
		// What runs (or will) on a node counts against it.
		sn := byID[t.NodeID]
		if sn == nil || !alive(t) {
			continue
		}
		sn.ServiceTasks[t.ServiceID]++
		sn.TotalTasks++
		if r := t.Spec.Resources; r != nil && r.Reservations != nil {
			sn.Reserved.NanoCPUs += r.Reservations.NanoCPUs
			sn.Reserved.MemoryBytes += r.Reservations.MemoryBytes
		}
	}
	if len(order) == 0 {
		return nil
	}
	list := make([]*scheduler.Group, len(order))
	for i, k := range order {
		list[i] = groups[k]
	}
	res := s.Place(infos, list...)
	var changed []*api.Task
	for _, d := range res.Decisions {
		t := pending[d.TaskID]
		t.NodeID = d.NodeID
		t.Status = api.TaskStatus{Timestamp: now, State: api.TaskAssigned, Message: "scheduler assigned task to node"}
		changed = append(changed, t)
	}
	for _, e := range res.Unplaced {
		for _, id := range e.TaskIDs {
			t := pending[id]
			if msg := e.Error(); t.Status.Err != msg {
				t.Status.Err, t.Status.Timestamp = msg, now
				changed = append(changed, t)
			}
		}
	}
	return changed
}

// groupFor describes a task's service to the scheduler.
func groupFor(t *api.Task) *scheduler.Group {
	g := &scheduler.Group{ServiceID: t.ServiceID}
	if r := t.Spec.Resources; r != nil && r.Reservations != nil {
		g.Reservations = scheduler.Resources{NanoCPUs: r.Reservations.NanoCPUs, MemoryBytes: r.Reservations.MemoryBytes}
		for _, gr := range r.Reservations.Generic {
			if g.Reservations.Generic == nil {
				g.Reservations.Generic = map[string]int64{}
			}
			g.Reservations.Generic[gr.Kind] += gr.Value
		}
	}
	if p := t.Spec.Placement; p != nil {
		g.Constraints = p.Constraints
		g.MaxReplicas = int(p.MaxReplicas)
		for _, pref := range p.Preferences {
			g.Preferences = append(g.Preferences, pref.Spread)
		}
		for _, pl := range p.Platforms {
			g.Platforms = append(g.Platforms, scheduler.Platform{OS: pl.OS, Arch: pl.Architecture})
		}
	}
	return g
}
