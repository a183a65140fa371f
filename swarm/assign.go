package swarm

import (
	"cmp"
	"fmt"
	"time"

	"github.com/shoalproject/shoal/scheduler"
	"github.com/shoalproject/shoal/swarm/api"
)

// placement is what the scheduler knows of the nodes during a pass: what
// each runs, counted once from the store's tasks and then kept up to
// date with the pass's own assignments, so that a pass that commits in
// steps places each step's tasks on what the steps before took, without
// counting every task again.
type placement struct {
	s     *scheduler.Scheduler
	infos []*scheduler.Node
	byID  map[string]*scheduler.Node
	// took is the time spent counting and placing, for Stats.
	took time.Duration
}

// newPlacement counts what every task in all holds on its node.
func newPlacement(s *scheduler.Scheduler, nodes []*api.Node, all []*api.Task) *placement {
	began := time.Now()
	pl := &placement{s: s, byID: make(map[string]*scheduler.Node, len(nodes)), infos: make([]*scheduler.Node, 0, len(nodes))}
	defer func() { pl.took += time.Since(began) }()
	for _, n := range nodes {
		sn := schedNode(n)
		sn.ServiceTasks = map[string]int{}
		pl.byID[n.ID] = sn
		pl.infos = append(pl.infos, sn)
	}
	for _, t := range all {
		// What runs (or will) on a node counts against it.
		sn := pl.byID[t.NodeID]
		// A task told to stop that still runs holds its resources and
		// ports until it has stopped (a drain, an update, the enforcer).
		if sn == nil || ended(t) || pendingTask(t) {
			continue
		}
		countTask(sn, t)
	}
	return pl
}

// assign places pending tasks on nodes with the scheduler, a whole service
// (at one spec version) at a time, counts the tasks it assigned against
// their nodes, and returns the tasks it changed: assigned ones (with the
// named generic resources they were given), and pending ones whose reason
// for waiting changed ("no suitable node (insufficient memory on 3
// nodes)"). pending are the pass's refs of the tasks to place, changed
// through their edit.
func (pl *placement) assign(pending []*taskRef, now time.Time) []*taskRef {
	if len(pending) == 0 {
		return nil
	}
	began := time.Now()
	defer func() { pl.took += time.Since(began) }()
	type groupKey struct {
		service string
		version uint64
	}
	groups := map[groupKey]*scheduler.Group{}
	var order []groupKey
	byTask := make(map[string]*taskRef, len(pending))
	for _, t := range pending {
		k := groupKey{t.ServiceID, t.SpecVersion}
		g := groups[k]
		if g == nil {
			g = groupFor(t.Task)
			groups[k] = g
			order = append(order, k)
		}
		g.Tasks = append(g.Tasks, scheduler.TaskRef{ID: t.ID, NodeID: t.NodeID})
		byTask[t.ID] = t
	}
	list := make([]*scheduler.Group, len(order))
	for i, k := range order {
		list[i] = groups[k]
	}
	res := pl.s.Place(pl.infos, list...)
	var changed []*taskRef
	for _, d := range res.Decisions {
		ref := byTask[d.TaskID]
		t := ref.edit()
		t.NodeID = d.NodeID
		t.AssignedGenericResources = nil
		for _, u := range d.Named {
			t.AssignedGenericResources = append(t.AssignedGenericResources, api.GenericResource{Kind: u.Kind, Named: u.ID})
		}
		// The discrete part of a reservation stays a count.
		if r := reservations(t); r != nil {
			for _, g := range r.Generic {
				if g.Named == "" && g.Value > int64(countNamed(t.AssignedGenericResources, g.Kind)) {
					t.AssignedGenericResources = append(t.AssignedGenericResources,
						api.GenericResource{Kind: g.Kind, Value: g.Value - int64(countNamed(t.AssignedGenericResources, g.Kind))})
				}
			}
		}
		t.Status = api.TaskStatus{Timestamp: now, State: api.TaskAssigned, Message: "scheduler assigned task to node"}
		if sn := pl.byID[t.NodeID]; sn != nil {
			countTask(sn, t)
		}
		changed = append(changed, ref)
	}
	for _, e := range res.Unplaced {
		msg := e.Error()
		for _, id := range e.TaskIDs {
			ref := byTask[id]
			if ref.Status.Err != msg {
				t := ref.edit()
				t.Status.Err, t.Status.Timestamp = msg, now
				changed = append(changed, ref)
			}
		}
	}
	return changed
}

func reservations(t *api.Task) *api.Resources {
	if r := t.Spec.Resources; r != nil {
		return r.Reservations
	}
	return nil
}

func countNamed(gs []api.GenericResource, kind string) int {
	n := 0
	for _, g := range gs {
		if g.Kind == kind && g.Named != "" {
			n++
		}
	}
	return n
}

// countTask takes what a running (or assigned) task holds from its node:
// CPU, memory, generic resources (named units by identity), host ports.
func countTask(sn *scheduler.Node, t *api.Task) {
	sn.ServiceTasks[t.ServiceID]++
	sn.TotalTasks++
	if r := reservations(t); r != nil {
		sn.Reserved.NanoCPUs += r.NanoCPUs
		sn.Reserved.MemoryBytes += r.MemoryBytes
	}
	for _, g := range t.AssignedGenericResources {
		if g.Named != "" {
			sn.Named[g.Kind] = removeUnit(sn.Named[g.Kind], g.Named)
			continue
		}
		if sn.Reserved.Generic == nil {
			sn.Reserved.Generic = map[string]int64{}
		}
		sn.Reserved.Generic[g.Kind] += g.Value
	}
	if t.AssignedGenericResources == nil {
		// Assigned before units were recorded: count the reservation.
		if r := reservations(t); r != nil {
			for _, g := range r.Generic {
				if sn.Reserved.Generic == nil {
					sn.Reserved.Generic = map[string]int64{}
				}
				sn.Reserved.Generic[g.Kind] += g.Value
			}
		}
	}
	sn.HostPorts = append(sn.HostPorts, hostPorts(t)...)
}

func removeUnit(units []string, id string) []string {
	for i, u := range units {
		if u == id {
			out := make([]string, 0, len(units)-1)
			return append(append(out, units[:i]...), units[i+1:]...)
		}
	}
	return units
}

// hostPorts lists the host-mode published ports a task needs on its node,
// as the scheduler names them ("80/tcp"). A host port left 0 is picked by
// the node and cannot conflict.
func hostPorts(t *api.Task) []string {
	if t.Endpoint == nil {
		return nil
	}
	var out []string
	for _, p := range t.Endpoint.Ports {
		if p.PublishMode == api.PublishHost && p.PublishedPort != 0 {
			out = append(out, fmt.Sprintf("%d/%s", p.PublishedPort, cmp.Or(p.Protocol, api.TCP)))
		}
	}
	return out
}

// groupFor describes a task's service to the scheduler.
func groupFor(t *api.Task) *scheduler.Group {
	g := &scheduler.Group{ServiceID: t.ServiceID, HostPorts: hostPorts(t)}
	if r := reservations(t); r != nil {
		g.Reservations = scheduler.Resources{NanoCPUs: r.NanoCPUs, MemoryBytes: r.MemoryBytes}
		for _, gr := range r.Generic {
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
