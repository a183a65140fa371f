package raftstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
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
