package swarm

import (
	"sync"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/swarm/api"
)

// statusQueue is a worker's memory of what it reported: the latest status
// of each task it knows, and which of them no manager has acknowledged
// yet. A newer status replaces an unsent older one (only the latest
// matters); an acknowledgement clears a task only if nothing newer came
// while the report was on its way.
type statusQueue struct {
	mu      sync.Mutex
	latest  map[string]api.TaskStatus
	unacked map[string]uint64 // task -> generation of its unacknowledged status
	gen     uint64
	wake    chan struct{} // one pending wake-up for the reporter
}

func newStatusQueue() *statusQueue {
	return &statusQueue{latest: map[string]api.TaskStatus{}, unacked: map[string]uint64{}, wake: make(chan struct{}, 1)}
}

func (q *statusQueue) poke() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// put records a task's new status for sending.
func (q *statusQueue) put(u agent.StatusUpdate) {
	q.mu.Lock()
	q.gen++
	q.latest[u.TaskID] = u.Status
	q.unacked[u.TaskID] = q.gen
	q.mu.Unlock()
	q.poke()
}

// pending returns up to max unacknowledged statuses, of about maxBytes
// encoded at most (one at least), and the generations to acknowledge them
// by.
func (q *statusQueue) pending(max, maxBytes int) ([]agent.StatusUpdate, map[string]uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.unacked) == 0 {
		return nil, nil
	}
	batch := make([]agent.StatusUpdate, 0, min(len(q.unacked), max))
	sent := make(map[string]uint64, cap(batch))
	size := 0
	for id, gen := range q.unacked {
		u := agent.StatusUpdate{TaskID: id, Status: q.latest[id]}
		n := approxSize(u)
		if len(batch) == max || (len(batch) > 0 && size+n > maxBytes) {
			break
		}
		size += n
		batch = append(batch, u)
		sent[id] = gen
	}
	return batch, sent
}

// approxSize is about what a report takes encoded: its strings and ports
// and room for the rest.
func approxSize(u agent.StatusUpdate) int {
	st := u.Status
	return 256 + len(u.TaskID) + len(st.Message) + len(st.Err) + len(st.ContainerID) + len(st.Health) + 96*len(st.Ports)
}

// ack clears what a manager took, unless a newer status replaced it.
func (q *statusQueue) ack(sent map[string]uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for id, gen := range sent {
		if q.unacked[id] == gen {
			delete(q.unacked, id)
		}
	}
}

// resendAll marks every known status for sending again (a new session).
func (q *statusQueue) resendAll() {
	q.mu.Lock()
	for id := range q.latest {
		q.gen++
		q.unacked[id] = q.gen
	}
	n := len(q.latest)
	q.mu.Unlock()
	if n > 0 {
		q.poke()
	}
}

// forget drops a task the managers no longer assign.
func (q *statusQueue) forget(id string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.latest, id)
	delete(q.unacked, id)
}
