package raftstore

import (
	"context"
	"testing"
)

// Stats show the member's Raft state, term, indexes and leader changes.
func TestStats(t *testing.T) {
	s := single(t)
	if err := s.Update(context.Background(), func(tx *Tx) error { return tx.Create("items", &item{ID: "a"}) }); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	if st.State != "Leader" || st.Term == 0 || st.CommitIndex == 0 || st.AppliedIndex < st.CommitIndex-1 || st.LastIndex < st.CommitIndex || st.LeaderChanges == 0 {
		t.Fatalf("stats %+v", st)
	}
	s.Close()
	if st := s.Stats(); st.State != "Shutdown" {
		t.Fatalf("stats after close %+v", st)
	}
}
