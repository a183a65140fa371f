package raftstore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// Two voters cut apart: the leader appends an entry it cannot commit and
// is stopped (the fence); the other recovers alone, leads with itself as
// the only voter (in the log too), keeps everything committed, takes
// writes, and stays alone after a restart. The old leader, restarted
// from its data dir, is no member and cannot lead; added back, it takes
// the survivor's log and its uncommitted entry is gone.
func TestRecoverAloneAfterPeerStops(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, 2, true, nil)
	lead := c.leader()
	var other string
	for _, id := range c.ids {
		if id != lead.ID {
			other = id
		}
	}
	if err := c.put(&item{ID: "committed"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the follower has the committed item", func() bool { return countItems(c.stores[other]) == 1 })

	c.net.Partition([]string{lead.ID}, []string{other})
	wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err := lead.Update(wctx, func(tx *Tx) error { return tx.Create("items", &item{ID: "ghost"}) })
	cancel()
	if err == nil {
		t.Fatal("a write committed on one of two voters")
	}
	if st := lead.Stats(); st.LastIndex <= st.CommitIndex {
		t.Fatalf("the uncommitted write is not in the old leader's log: %+v", st)
	}
	leadID := lead.ID
	c.kill(leadID) // the fence

	surv := c.stores[other]
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	defer rcancel()
	if err := surv.RecoverAlone(rctx); err != nil {
		t.Fatal(err)
	}
	if !surv.IsLeader() {
		t.Fatal("recovered, not leading")
	}
	if err := surv.RecoverAlone(ctx); !errors.Is(err, ErrIsLeader) {
		t.Fatalf("a second recovery on the leader: %v, want ErrIsLeader", err)
	}
	if v := votersOf(t, surv); len(v) != 1 || !v[other] {
		t.Fatalf("voters after recovery %v, want %s alone", v, other)
	}
	if !configInLog(t, surv) {
		t.Fatal("the one-voter configuration is not in the log")
	}
	if err := c.put(&item{ID: "after"}); err != nil {
		t.Fatalf("a write after recovery: %v", err)
	}
	has := func(s *Store, id string) bool {
		found := false
		s.View(func(tx *ReadTx) error { _, err := tx.Get("items", id); found = err == nil; return nil })
		return found
	}
	if !has(surv, "committed") || has(surv, "ghost") {
		t.Fatal("the survivor lost a committed item or has the uncommitted one")
	}

	// A restart from the data dir: still alone, still leading.
	c.kill(other)
	surv = c.start(other, nil, nil)
	eventually(t, "the survivor leads again after a restart", surv.IsLeader)
	if v := votersOf(t, surv); len(v) != 1 || !v[other] {
		t.Fatalf("voters after a restart %v", v)
	}

	// The old leader comes back: not a member, it cannot lead.
	c.net.Heal()
	back := c.start(leadID, nil, nil)
	if err := c.put(&item{ID: "while-out"}); err != nil {
		t.Fatal(err)
	}
	if back.IsLeader() || !surv.IsLeader() {
		t.Fatal("the returning member took leadership")
	}
	// Added back (a non-voter, then a voter), it takes the survivor's
	// log.
	if err := surv.AddNonvoter(ctx, leadID, leadID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the returning member converges", func() bool {
		return has(back, "committed") && has(back, "after") && has(back, "while-out")
	})
	if err := surv.AddVoter(ctx, leadID, leadID); err != nil {
		t.Fatal(err)
	}
	if err := c.put(&item{ID: "two-again"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "both have the last write", func() bool { return has(back, "two-again") && has(surv, "two-again") })
	if has(back, "ghost") || has(surv, "ghost") {
		t.Fatal("the entry that never committed survived")
	}
	if st := back.Stats(); st.LastIndex != surv.Stats().LastIndex {
		t.Fatalf("logs differ: returning %+v, survivor %+v", st, surv.Stats())
	}
}

func votersOf(t *testing.T, s *Store) map[string]bool {
	t.Helper()
	srvs, err := s.Servers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, x := range srvs {
		if x.Voter {
			out[x.ID] = true
		}
	}
	return out
}

// configInLog reports whether the log holds a configuration entry of the
// current term.
func configInLog(t *testing.T, s *Store) bool {
	t.Helper()
	first, _ := s.logStore.FirstIndex()
	last, _ := s.logStore.LastIndex()
	term := s.r().CurrentTerm()
	for i := first; i <= last && i > 0; i++ {
		var l raft.Log
		if err := s.logStore.GetLog(i, &l); err == nil && l.Type == raft.LogConfiguration && l.Term == term {
			return true
		}
	}
	return false
}
