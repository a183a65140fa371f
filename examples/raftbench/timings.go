package main

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	metrics "github.com/hashicorp/go-metrics"
)

// timingSink collects hashicorp/raft's own timing samples (it reports them
// through go-metrics), so -raft-timings can say where a write's time goes:
// the leader's local log write, the round trip to a follower (its log write
// included), the follower's log write, commit and FSM apply.
type timingSink struct {
	mu   sync.Mutex
	sums map[string]*timingSum
}

type timingSum struct {
	n   int
	sum float64
}

// The keys printed, in the order a write passes through them.
var timingKeys = []struct{ key, what string }{
	{"raft.leader.dispatchLog", "leader: local log write (StoreLogs) before replication starts"},
	{"raft.replication.appendEntries.rpc", "leader: AppendEntries round trip to a follower"},
	{"raft.rpc.appendEntries", "follower: handling one AppendEntries"},
	{"raft.rpc.appendEntries.storeLogs", "follower: log write (StoreLogs)"},
	{"raft.commitTime", "leader: dispatch to commit"},
	{"raft.fsm.enqueue", "leader: handing committed entries to the FSM goroutine"},
	{"raft.fsm.applyBatch", "every member: FSM ApplyBatch"},
}

func newTimingSink() *timingSink { return &timingSink{sums: map[string]*timingSum{}} }

// install makes the sink raft's global metrics sink, with microsecond timers.
func (s *timingSink) install() error {
	conf := metrics.DefaultConfig("")
	conf.EnableHostname, conf.EnableRuntimeMetrics = false, false
	conf.TimerGranularity = time.Microsecond
	_, err := metrics.NewGlobal(conf, s)
	return err
}

func (s *timingSink) reset() {
	s.mu.Lock()
	clear(s.sums)
	s.mu.Unlock()
}

// print writes the mean of each key seen since the last reset.
func (s *timingSink) print() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range timingKeys {
		if t := s.sums[k.key]; t != nil && t.n > 0 {
			fmt.Printf("    %-38s %9.0f µs mean over %7d  (%s)\n", k.key, t.sum/float64(t.n), t.n, k.what)
		}
	}
}

func (s *timingSink) AddSample(key []string, val float32) {
	k := strings.Join(key, ".")
	if !slices.ContainsFunc(timingKeys, func(t struct{ key, what string }) bool { return t.key == k }) {
		return
	}
	s.mu.Lock()
	t := s.sums[k]
	if t == nil {
		t = &timingSum{}
		s.sums[k] = t
	}
	t.n++
	t.sum += float64(val)
	s.mu.Unlock()
}

func (s *timingSink) AddSampleWithLabels(key []string, val float32, _ []metrics.Label) {
	s.AddSample(key, val)
}
func (s *timingSink) SetGauge([]string, float32)                               {}
func (s *timingSink) SetGaugeWithLabels([]string, float32, []metrics.Label)    {}
func (s *timingSink) EmitKey([]string, float32)                                {}
func (s *timingSink) IncrCounter([]string, float32)                            {}
func (s *timingSink) IncrCounterWithLabels([]string, float32, []metrics.Label) {}
