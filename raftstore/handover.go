package raftstore

import (
	"sync"
	"unsafe"
)

// Handing objects over: a record holds its object encoded, and the first
// reader decodes it (record.object). For the changes this member proposed
// itself the decoding is wasted: the proposer held the objects. A Batch
// with HandOver set registers its objects under the entry's bytes; when
// the FSM of the same member applies that entry (raft gives the leader's
// FSM the very slice the leader proposed), each record it writes takes
// its object as already decoded, so neither the watchers nor the readers
// of this member decode it. Other members, and this one when it applies
// the entry from the log (after a restart, or a leadership change before
// the entry applied), decode as before: the objects are an optimisation
// of the local apply, never what the state is made of.
//
// Creating a large service, the leader's watcher decoded every new task
// only to learn its service (about a sixth of the leader's CPU time).

// handover holds the objects of proposed entries until they apply. The
// zero value is ready.
type handover struct {
	mu sync.Mutex
	// byEntry is keyed by the first byte of the entry's data: the entry
	// is held by raft until applied, so no other entry has that address.
	byEntry map[*byte][]Object
}

// put registers objs (one per op of entry, in order; nil for ops without
// an object) for entry.
func (h *handover) put(entry []byte, objs []Object) {
	if len(entry) == 0 {
		return
	}
	h.mu.Lock()
	if h.byEntry == nil {
		h.byEntry = map[*byte][]Object{}
	}
	h.byEntry[unsafe.SliceData(entry)] = objs
	h.mu.Unlock()
}

// take returns and forgets the objects registered for entry (nil if none).
func (h *handover) take(entry []byte) []Object {
	if len(entry) == 0 {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	k := unsafe.SliceData(entry)
	objs, ok := h.byEntry[k]
	if ok {
		delete(h.byEntry, k)
	}
	return objs
}

// len is how many entries wait to apply (for tests: none may be left
// behind).
func (h *handover) len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.byEntry)
}

// seed gives a new record the object it was encoded from, with the
// record's version: readers share it as if they had decoded it.
func (r *record) seed(obj Object) {
	obj.SetObjectVersion(r.version)
	r.obj.Store(&obj)
}
