package swarm

import (
	"sync"
	"time"

	"github.com/shoalproject/shoal/raftstore"
)

// LatencyBuckets are the upper bounds of the buckets of a Latency.
var LatencyBuckets = []time.Duration{
	time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2500 * time.Millisecond,
	5 * time.Second, 10 * time.Second,
}

// Latency is a histogram of durations since the manager started, as a
// metrics system wants it: how many, their sum, and cumulative counts per
// bucket (Buckets[i] counts those at most LatencyBuckets[i]).
type Latency struct {
	Count   uint64
	Sum     time.Duration
	Buckets []uint64
}

// latency records durations into a Latency.
type latency struct {
	mu      sync.Mutex
	count   uint64
	sum     time.Duration
	buckets []uint64 // not cumulative
}

func (l *latency) observe(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buckets == nil {
		l.buckets = make([]uint64, len(LatencyBuckets))
	}
	l.count++
	l.sum += d
	for i, b := range LatencyBuckets {
		if d <= b {
			l.buckets[i]++
			break
		}
	}
}

func (l *latency) snapshot() Latency {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := Latency{Count: l.count, Sum: l.sum, Buckets: make([]uint64, len(LatencyBuckets))}
	var run uint64
	for i := range LatencyBuckets {
		if l.buckets != nil {
			run += l.buckets[i]
		}
		out.Buckets[i] = run
	}
	return out
}

// ManagerStats are a manager's figures, for metrics.
type ManagerStats struct {
	// Raft is the manager's Raft member's (State "Shutdown" while the
	// manager is locked or stopped).
	Raft raftstore.Stats
	// Leader is true while this manager leads.
	Leader bool
	// Sessions counts the workers' open assignment streams on this
	// manager (0 on followers: workers talk to the leader).
	Sessions int
	// Reconcile is the time of the leader's reconcile passes (each brings
	// the services that changed to their desired state, places pending
	// tasks and commits); Scheduling the part spent placing tasks.
	Reconcile, Scheduling Latency
	// LogRequests counts the logs requests the leader serves now, and
	// LogStreams the nodes' open log streams on it.
	LogRequests, LogStreams int
	// LogRequestsDropped counts log requests a node's full queue did not
	// take (the request named that node's tasks as not read), since this
	// manager last became leader.
	LogRequestsDropped uint64
}

// Stats returns the manager's figures. It never blocks on the network.
func (m *Manager) Stats() ManagerStats {
	m.mu.Lock()
	st, d, locked := m.store, m.disp, m.locked
	m.mu.Unlock()
	out := ManagerStats{Raft: raftstore.Stats{State: "Shutdown"}, Reconcile: m.reconcileTime.snapshot(), Scheduling: m.scheduleTime.snapshot()}
	if st != nil && !locked {
		out.Raft = st.Stats()
		out.Leader = st.IsLeader()
	}
	if d != nil {
		d.mu.Lock()
		out.Sessions = len(d.streams)
		logs := d.logs
		d.mu.Unlock()
		if logs != nil {
			logs.mu.Lock()
			out.LogRequests, out.LogStreams = len(logs.subs), len(logs.listeners)
			logs.mu.Unlock()
			out.LogRequestsDropped = logs.dropped.Load()
		}
	}
	return out
}
