package swarm

import (
	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm/api"
)

// ownProgress reports whether a task event is only its node telling how
// far the task got on its way to running (accepted, preparing, ready,
// starting, running), which changes nothing the node is told: the same
// task, to run, with the same spec, on the same node. The node's
// assignment stream need not send its set again for it. A start wave of
// 20,000 tasks on 2,000 nodes otherwise sent each node its whole set back
// after each of its reports, tens of thousands of pushes the leader made
// while it also had to keep its Raft lease.
//
// The stream reads the set afresh for any other change, and a node that
// reconnects gets a fresh read: what it is sent is never older than a
// change it needs.
func ownProgress(ev raftstore.Event) bool {
	t, ok := ev.Object.(*api.Task)
	old, okOld := ev.Old.(*api.Task)
	if !ok || !okOld {
		return false // created or removed
	}
	return old.Status.State >= api.TaskAssigned && old.Status.State <= api.TaskRunning &&
		t.Status.State > api.TaskAssigned && t.Status.State <= api.TaskRunning &&
		t.DesiredState == old.DesiredState && t.NodeID == old.NodeID &&
		t.SpecVersion == old.SpecVersion && t.ServiceID == old.ServiceID
}
