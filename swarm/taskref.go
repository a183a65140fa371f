package swarm

import "github.com/shoalproject/shoal/swarm/api"

// taskRef is how a reconcile pass holds a task. It starts as the store's
// object, which every reader shares (the store decodes a record once) and
// nobody may change; edit gives the pass its own copy the first time the
// pass changes the task. Every list of the pass (a service's tasks, a
// slot, a node's tasks, the plan) holds the same ref, so all of them see
// the change. Copying every task of a service on every pass was the
// largest cost of creating a big service a bounded pass at a time.
//
// Reads go through the embedded pointer (ref.Status.State); writes go
// through edit only (ref.edit().DesiredState = ...): a write through the
// embedded pointer changes the store's object under its readers
// (TestReconcileNeverWritesStoreObjects catches that).
type taskRef struct {
	*api.Task
	owned bool // Task is the pass's own copy
}

// edit returns the pass's own copy of the task, made on the first call.
func (r *taskRef) edit() *api.Task {
	if !r.owned {
		c := *r.Task
		r.Task, r.owned = &c, true
	}
	return r.Task
}

// newRef holds a task the pass made itself.
func newRef(t *api.Task) *taskRef { return &taskRef{Task: t, owned: true} }

// refsOf holds store objects, in one allocation.
func refsOf(ts []*api.Task) []*taskRef {
	refs := make([]taskRef, len(ts))
	out := make([]*taskRef, len(ts))
	for i, t := range ts {
		refs[i].Task = t
		out[i] = &refs[i]
	}
	return out
}
