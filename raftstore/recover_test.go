package raftstore

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

// A cluster of two loses one member for good: the survivor alone has no
// quorum and takes no write. Recover makes it a one-voter cluster from its
// own (sealed) data: every object is there and it takes writes again,
// after a restart too.
func TestRecoverMakesTheSurvivorAOneVoterCluster(t *testing.T) {
	ctx := context.Background()
	kek := make([]byte, KeySize)
	kek[0] = 7
	c := newCluster(t, 2, true, func(s *Store) { s.KeyEncryptionKey = kek; s.SnapshotThreshold = 16; s.TrailingLogs = 4 })
	for i := range 40 { // past a snapshot, so that both snapshot and log are replayed
		if err := c.put(&item{ID: fmt.Sprint("a", i), Value: i}); err != nil {
			t.Fatal(err)
		}
	}
	leader := c.leader()
	if err := leader.Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := c.put(&item{ID: fmt.Sprint("b", i), Value: i}); err != nil {
			t.Fatal(err)
		}
	}
	survivor := "m0"
	c.kill("m1") // gone for good
	c.kill(survivor)
	s := c.start(survivor, nil, func(s *Store) { s.KeyEncryptionKey = kek })
	err := s.Update(ctx, func(tx *Tx) error { return tx.Create("items", &item{ID: "alone"}) })
	if err == nil {
		t.Fatal("a member of two took a write alone")
	}
	if _, err := s.Recover(ctx, []Server{{ID: survivor, Address: survivor, Voter: true}}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Recover on a running store: %v, want ErrInvalidConfig", err)
	}
	c.kill(survivor)

	r := &Store{ID: survivor, Dir: c.dirs[survivor], Schema: testSchema(), KeyEncryptionKey: kek}
	if _, err := r.Recover(ctx, []Server{{ID: "m1", Address: "m1", Voter: true}}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Recover without this member: %v, want ErrInvalidConfig", err)
	}
	if _, err := (&Store{ID: survivor, Dir: c.dirs[survivor], Schema: testSchema(), KeyEncryptionKey: make([]byte, KeySize)}).
		Recover(ctx, []Server{{ID: survivor, Address: survivor, Voter: true}}); !errors.Is(err, ErrBadKey) {
		t.Fatalf("Recover with a wrong key: %v, want ErrBadKey", err)
	}
	before, err := r.Recover(ctx, []Server{{ID: survivor, Address: survivor, Voter: true}})
	if err != nil {
		t.Fatal(err)
	}
	ids := func(srvs []Server) []string {
		var out []string
		for _, v := range srvs {
			if v.Voter {
				out = append(out, v.ID)
			}
		}
		slices.Sort(out)
		return out
	}
	if got := ids(before); !slices.Equal(got, []string{"m0", "m1"}) {
		t.Fatalf("Recover says the configuration was %v, want voters m0 and m1", before)
	}

	for round := range 2 { // recovered, then restarted as it is
		s = c.start(survivor, nil, func(s *Store) { s.KeyEncryptionKey = kek })
		c.leader(survivor)
		if err := s.Barrier(ctx); err != nil {
			t.Fatal(err)
		}
		if got := countItems(s); got != 45+round {
			t.Fatalf("round %d: %d items after recovery, want %d", round, got, 45+round)
		}
		srvs, err := s.Servers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := ids(srvs); !slices.Equal(got, []string{survivor}) {
			t.Fatalf("round %d: voters %v, want only %s", round, got, survivor)
		}
		if err := s.Update(ctx, func(tx *Tx) error { return tx.Create("items", &item{ID: fmt.Sprint("after", round)}) }); err != nil {
			t.Fatalf("round %d: write after recovery: %v", round, err)
		}
		c.kill(survivor)
	}
}

// An offline Recover run a second time (an operator retrying after a
// crash, or ForceNewCluster called again) writes its snapshot at the last
// log index, a configuration entry the FSM's own index never counted, and
// cuts the log past it: the restarted member must still see its state as
// complete, or Barrier, linearizable reads and readiness wait for ever.
func TestRecoverTwiceThenBarrierAndWrite(t *testing.T) {
	for _, times := range []int{1, 2} {
		t.Run(fmt.Sprint(times), func(t *testing.T) {
			ctx := context.Background()
			m0, m1, dir, kek := startTwoMembers(t)
			leader := func() *Store {
				if m1.IsLeader() {
					return m1
				}
				return m0
			}
			eventually(t, "a leader", func() bool { return m0.IsLeader() || m1.IsLeader() })
			for i := range 5 {
				if err := leader().Update(ctx, func(tx *Tx) error { return tx.Create("items", &item{ID: fmt.Sprint(i)}) }); err != nil {
					t.Fatal(err)
				}
			}
			// The last entry is a configuration change, as when a manager
			// joins.
			if err := leader().AddNonvoter(ctx, "m2", "m2"); err != nil {
				t.Fatal(err)
			}
			last, _ := leader().logStore.LastIndex()
			eventually(t, "m0 has every entry", func() bool { return countItems(m0) == 5 && m0.r().AppliedIndex() >= last })
			// An orderly stop before an offline recovery (not a crash
			// test: the kill -9 cases are in recover_crash_test.go).
			m1.Close()
			m0.Close()
			self := []Server{{ID: "m0", Address: "m0", Voter: true}}
			for range times {
				if _, err := (&Store{ID: "m0", Dir: dir, Schema: testSchema(), KeyEncryptionKey: kek}).Recover(ctx, self); err != nil {
					t.Fatal(err)
				}
			}
			s := &Store{ID: "m0", Dir: dir, Schema: testSchema(), Transport: NewMemNetwork().Transport("m0"), KeyEncryptionKey: kek}
			if err := s.Start(ctx); err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			eventually(t, "leads", s.IsLeader)
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if err := s.Barrier(wctx); err != nil {
				fa, _ := s.fsm.appliedIndex()
				first, _ := s.logStore.FirstIndex()
				t.Fatalf("barrier after %d recoveries: %v (fsm applied %d, raft applied %d, log from %d)", times, err, fa, s.r().AppliedIndex(), first)
			}
			if err := s.Update(wctx, func(tx *Tx) error { return tx.Create("items", &item{ID: "after"}) }); err != nil {
				t.Fatalf("write after %d recoveries: %v", times, err)
			}
			if n := countItems(s); n != 6 {
				t.Fatalf("%d items after %d recoveries, want 6", n, times)
			}
		})
	}
}

// RecoverNoting hands the caller the configuration it is about to
// replace before it rewrites anything, and an error from the caller stops
// it with the data as it was (a second try still sees the old members).
func TestRecoverNotingComesFirstAndCanStopIt(t *testing.T) {
	ctx := context.Background()
	m0, m1, dir, kek := startTwoMembers(t)
	eventually(t, "a leader", func() bool { return m0.IsLeader() || m1.IsLeader() })
	m1.Close()
	m0.Close()
	self := []Server{{ID: "m0", Address: "m0", Voter: true}}
	refuse := errors.New("cannot note them")
	var noted []Server
	_, err := (&Store{ID: "m0", Dir: dir, Schema: testSchema(), KeyEncryptionKey: kek}).RecoverNoting(ctx, self, func(before []Server) error {
		noted = before
		return refuse
	})
	if !errors.Is(err, refuse) || len(noted) != 2 {
		t.Fatalf("RecoverNoting with a refusing note: %v, noted %v; want the refusal and both members noted", err, noted)
	}
	before, err := (&Store{ID: "m0", Dir: dir, Schema: testSchema(), KeyEncryptionKey: kek}).RecoverNoting(ctx, self, func(b []Server) error { noted = b; return nil })
	if err != nil || len(before) != 2 || len(noted) != 2 {
		t.Fatalf("second try: before %v, noted %v (%v); want both members: the refused try changed nothing", before, noted, err)
	}
	before, err = (&Store{ID: "m0", Dir: dir, Schema: testSchema(), KeyEncryptionKey: kek}).Recover(ctx, self)
	if err != nil || len(before) != 1 {
		t.Fatalf("third: before %v (%v); want m0 alone after the second", before, err)
	}
}

// startTwoMembers starts two voters on an in-memory network, m0 on disk
// (dir, sealed with kek) and m1 in memory.
func startTwoMembers(t *testing.T) (m0, m1 *Store, dir string, kek []byte) {
	t.Helper()
	dir = t.TempDir()
	kek = make([]byte, KeySize)
	rand.Read(kek)
	net := NewMemNetwork()
	two := []Server{{ID: "m0", Address: "m0", Voter: true}, {ID: "m1", Address: "m1", Voter: true}}
	m0 = &Store{ID: "m0", Dir: dir, Schema: testSchema(), Transport: net.Transport("m0"), Bootstrap: two, KeyEncryptionKey: kek}
	m1 = &Store{ID: "m1", Schema: testSchema(), Transport: net.Transport("m1"), Bootstrap: two}
	for _, s := range []*Store{m0, m1} {
		if err := s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	return m0, m1, dir, kek
}
