package raftstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// The leader's append syncs in parallel with replication, so an entry can
// commit (a follower has it durably) before the leader's copy is durable.
// Until it is, nothing may learn of it: the writer is not answered, the
// leader's state does not show it, and no follower applies it.
func TestLeaderAcknowledgesOnlyDurableWrites(t *testing.T) {
	c := newCluster(t, 3, true, nil)
	if err := c.put(&item{ID: "before"}); err != nil {
		t.Fatal(err)
	}
	l := c.leader()
	release := make(chan struct{})
	hook := func() { <-release }
	l.logs.syncHook.Store(&hook)
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	target := l.logs.durableIndex() + 1
	done := make(chan error, 1)
	go func() {
		done <- l.Update(context.Background(), func(tx *Tx) error { return tx.Create("items", &item{ID: "held"}) })
	}()
	// The followers store the entry (so it commits)...
	for id, s := range c.stores {
		if s == l {
			continue
		}
		eventually(t, "entry stored on "+id, func() bool { last, _ := s.logs.LastIndex(); return last >= target })
	}
	// ...and for a while nothing shows it.
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			t.Fatalf("write acknowledged before the leader's copy was durable (err %v)", err)
		default:
		}
		for id, s := range c.stores {
			if s.AppliedIndex() >= target {
				t.Fatalf("%s applied entry %d before the leader's copy was durable", id, target)
			}
			s.View(func(tx *ReadTx) error {
				if _, err := tx.Get("items", "held"); err == nil {
					t.Fatalf("%s shows the write before the leader's copy was durable", id)
				}
				return nil
			})
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("write not acknowledged after the sync")
	}
	for id, s := range c.stores {
		eventually(t, "applied on "+id, func() bool { return countItems(s) == 2 })
	}
}

// The commit index a leader sends never passes its durable log, on the
// plain and the pipelined path.
func TestCommitGuardClampsCommitIndex(t *testing.T) {
	durable := uint64(5)
	_, a := raft.NewInmemTransport("a")
	_, b := raft.NewInmemTransport("b")
	a.Connect("b", b)
	seen := make(chan uint64, 4)
	go func() {
		for rpc := range b.Consumer() {
			seen <- rpc.Command.(*raft.AppendEntriesRequest).LeaderCommitIndex
			rpc.Respond(&raft.AppendEntriesResponse{Success: true}, nil)
		}
	}()
	g := guardCommits(a, func() uint64 { return durable })
	if _, ok := g.(raft.WithPreVote); !ok {
		t.Fatal("the guard hides the wrapped transport's pre-vote")
	}
	if _, ok := g.(raft.WithClose); ok {
		t.Fatal("raft would close the guarded transport when it shuts down (RecoverAlone restarts raft on it)")
	}
	var resp raft.AppendEntriesResponse
	if err := g.AppendEntries("b", "b", &raft.AppendEntriesRequest{LeaderCommitIndex: 9}, &resp); err != nil {
		t.Fatal(err)
	}
	if got := <-seen; got != 5 {
		t.Fatalf("commit index %d sent with 5 durable", got)
	}
	p, err := g.AppendEntriesPipeline("b", "b")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, tc := range []struct{ sent, want uint64 }{{7, 5}, {3, 3}} {
		if _, err := p.AppendEntries(&raft.AppendEntriesRequest{LeaderCommitIndex: tc.sent}, &resp); err != nil {
			t.Fatal(err)
		}
		if got := <-seen; got != tc.want {
			t.Fatalf("pipelined commit index %d sent (%d committed, 5 durable), want %d", got, tc.sent, tc.want)
		}
	}
	a.Close()
	b.Close()
}

// A data dir from before the WAL (its log in raft.db) starts with every
// object, and its log moves to the WAL.
func TestBoltLogIsMigrated(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	kek := make([]byte, KeySize)
	kek[1] = 3
	s := diskStore(t, dir, kek)
	for i := range 30 {
		if err := s.Update(ctx, func(tx *Tx) error { return tx.Create("items", &item{ID: fmt.Sprint(i)}) }); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	boltFromWAL(t, dir)

	s = diskStore(t, dir, kek)
	eventually(t, "migrated objects", func() bool { return countItems(s) == 30 })
	if err := s.Update(ctx, func(tx *Tx) error { return tx.Create("items", &item{ID: "after"}) }); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "raft.db")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("raft.db still there after the migration: %v", err)
	}
	s.Close()
	s = diskStore(t, dir, kek)
	eventually(t, "objects after a restart", func() bool { return countItems(s) == 31 })
}

// boltFromWAL turns a data dir's WAL back into a raft.db, as a data dir
// written before the WAL had it.
func boltFromWAL(t *testing.T, dir string) {
	t.Helper()
	var sealer Sealer
	if _, err := os.Stat(filepath.Join(dir, "keys.json")); err == nil {
		kek := make([]byte, KeySize)
		kek[1] = 3
		kr, err := OpenKeyRing(filepath.Join(dir, "keys.json"), kek)
		if err != nil {
			t.Fatal(err)
		}
		sealer = kr
	}
	w, err := OpenWAL(filepath.Join(dir, "wal"), sealer, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := OpenBoltLogStore(filepath.Join(dir, "raft.db"), sealer)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := w.FirstIndex()
	last, _ := w.LastIndex()
	for i := first; i <= last; i++ {
		var l raft.Log
		if err := w.GetLog(i, &l); err != nil {
			t.Fatal(err)
		}
		if err := b.StoreLog(&l); err != nil {
			t.Fatal(err)
		}
	}
	for k, v := range w.stable.vals {
		if key, ok := strings.CutPrefix(k, "raft."); ok {
			if err := b.Set([]byte(key), v); err != nil {
				t.Fatal(err)
			}
		}
	}
	w.Close()
	b.Close()
	if err := os.RemoveAll(filepath.Join(dir, "wal")); err != nil {
		t.Fatal(err)
	}
}
