package swarm_test

import (
	"testing"

	"github.com/shoalproject/shoal/internal/waitfor"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// A leader's stats count its workers' sessions and time its reconcile
// passes and placements.
func TestManagerStats(t *testing.T) {
	c := newCluster(t, 2)
	m := c.Leader()
	svc := create(t, c, service("web", api.Replicated(3)))
	waitfor.True(t, "3 running", func() bool { return len(c.Running(svc.ID)) == 3 })
	st := m.Stats()
	if !st.Leader || st.Raft.State != "Leader" || st.Raft.Term == 0 || st.Raft.CommitIndex == 0 {
		t.Fatalf("raft stats %+v", st)
	}
	if st.Sessions != 2 {
		t.Fatalf("%d sessions, want 2", st.Sessions)
	}
	for name, l := range map[string]swarm.Latency{"reconcile": st.Reconcile, "scheduling": st.Scheduling} {
		if l.Count == 0 || l.Sum <= 0 || len(l.Buckets) != len(swarm.LatencyBuckets) || l.Buckets[len(l.Buckets)-1] > l.Count {
			t.Fatalf("%s latency %+v", name, l)
		}
	}
}
