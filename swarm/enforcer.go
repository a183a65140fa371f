package swarm

import (
	"fmt"
	"slices"

	"github.com/shoalproject/shoal/scheduler"
	"github.com/shoalproject/shoal/swarm/api"
)

// enforce stops the tasks of replicated services (and replicated jobs)
// that their node no longer accepts: its labels or role changed so that a
// placement constraint fails, or its resources shrank below what its tasks
// reserve (then the newest tasks go first, until the rest fit). The
// orchestrators replace them on nodes that fit. Global services need no
// enforcer: a node that stops being eligible loses their task anyway.
func enforce(nodes []*api.Node, bySvc map[string][]*taskRef, r *reconciler, p *plan) {
	byNode := map[string][]*taskRef{}
	for _, ts := range bySvc {
		for _, t := range ts {
			if t.NodeID != "" && t.Slot > 0 && alive(t.Task) && t.Status.State >= api.TaskAssigned {
				byNode[t.NodeID] = append(byNode[t.NodeID], t)
			}
		}
	}
	for _, n := range nodes {
		ts := byNode[n.ID]
		if len(ts) == 0 || n.Status.State == api.NodeDown {
			continue
		}
		sn := schedNode(n)
		var keep []*taskRef
		for _, t := range ts {
			if c, ok := failedConstraint(t.Task, sn); ok {
				r.shutdown(t, fmt.Sprintf("constraint %s no longer met by node %s", c, n.ID), p)
				continue
			}
			keep = append(keep, t)
		}
		var cpu, mem int64
		for _, t := range keep {
			if res := reservations(t.Task); res != nil {
				cpu += res.NanoCPUs
				mem += res.MemoryBytes
			}
		}
		total := n.Description.Resources
		if cpu <= total.NanoCPUs && mem <= total.MemoryBytes {
			continue
		}
		// Newest first: the tasks that ran longest keep their place.
		slices.SortFunc(keep, func(a, b *taskRef) int {
			if newer(a.Task, b.Task) {
				return -1
			}
			return 1
		})
		for _, t := range keep {
			if cpu <= total.NanoCPUs && mem <= total.MemoryBytes {
				break
			}
			res := reservations(t.Task)
			if res == nil || (res.NanoCPUs == 0 && res.MemoryBytes == 0) {
				continue
			}
			cpu -= res.NanoCPUs
			mem -= res.MemoryBytes
			r.shutdown(t, fmt.Sprintf("node %s no longer has the resources the task reserves", n.ID), p)
		}
	}
}

// failedConstraint returns the first of the task's constraints that the
// node fails.
func failedConstraint(t *api.Task, n *scheduler.Node) (string, bool) {
	if t.Spec.Placement == nil {
		return "", false
	}
	for _, c := range t.Spec.Placement.Constraints {
		con, err := scheduler.ParseConstraint(c)
		if err != nil {
			continue // refused when the service was created
		}
		if !con.Match(n) {
			return c, true
		}
	}
	return "", false
}
