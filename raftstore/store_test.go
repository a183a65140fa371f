package raftstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func single(t *testing.T, tweak ...func(*Store)) *Store {
	var tw func(*Store)
	if len(tweak) > 0 {
		tw = tweak[0]
	}
	c := newCluster(t, 1, false, tw)
	s := c.leader()
	<-s.Ready()
	return s
}

func TestTransactionSemantics(t *testing.T) {
	s := single(t)
	ctx := context.Background()
	a := &item{ID: "a", Group: "g1", Tags: []string{"x", "y"}, Value: 1}
	if err := s.Update(ctx, func(tx *Tx) error {
		if err := tx.Create("items", a); err != nil {
			return err
		}
		// Reads inside the transaction see its own writes.
		got, err := tx.Find("items", "group", "g1")
		if err != nil || len(got) != 1 {
			return fmt.Errorf("find in tx: %v %v", got, err)
		}
		return tx.Create("items", &item{ID: "b", Group: "g2", Tags: []string{"y"}})
	}); err != nil {
		t.Fatal(err)
	}
	if a.Version == 0 {
		t.Fatal("version not set on commit")
	}
	if err := s.Update(ctx, func(tx *Tx) error { return tx.Create("items", &item{ID: "a"}) }); !errors.Is(err, ErrExists) {
		t.Fatalf("create existing: %v", err)
	}
	stale := a.copy()
	upd := a.copy()
	upd.Value = 2
	if err := s.Update(ctx, func(tx *Tx) error { return tx.Update("items", upd) }); err != nil {
		t.Fatal(err)
	}
	err := s.Update(ctx, func(tx *Tx) error { return tx.Update("items", stale) })
	var ce *ConflictError
	if !errors.As(err, &ce) || ce.Expected != stale.Version || ce.Actual != upd.Version {
		t.Fatalf("stale update: want conflict, got %v", err)
	}
	// A failing function commits nothing.
	boom := errors.New("boom")
	if err := s.Update(ctx, func(tx *Tx) error {
		tx.Create("items", &item{ID: "c"})
		return boom
	}); !errors.Is(err, boom) {
		t.Fatal(err)
	}
	s.View(func(tx *ReadTx) error {
		if _, err := tx.Get("items", "c"); !errors.Is(err, ErrNotFound) {
			t.Errorf("aborted create visible: %v", err)
		}
		if got, _ := tx.Find("items", "tag", "y"); len(got) != 2 {
			t.Errorf("tag y: %d items", len(got))
		}
		if got, _ := tx.FindPrefix("items", IndexID, "a"); len(got) != 1 {
			t.Errorf("prefix a: %d", len(got))
		}
		if _, err := tx.Find("items", "nope", "x"); !errors.Is(err, ErrNoIndex) {
			t.Errorf("unknown index: %v", err)
		}
		if _, err := tx.List("nope"); !errors.Is(err, ErrNoTable) {
			t.Errorf("unknown table: %v", err)
		}
		got, _ := tx.Get("items", "a")
		if got.(*item).Value != 2 {
			t.Errorf("value %d", got.(*item).Value)
		}
		return nil
	})
	// Create+delete in one tx is no change; delete+create is a replacement.
	if err := s.Update(ctx, func(tx *Tx) error {
		if err := tx.Create("items", &item{ID: "tmp"}); err != nil {
			return err
		}
		if err := tx.Delete("items", "tmp"); err != nil {
			return err
		}
		if err := tx.Delete("items", "b"); err != nil {
			return err
		}
		return tx.Create("items", &item{ID: "b", Group: "g3"})
	}); err != nil {
		t.Fatal(err)
	}
	s.View(func(tx *ReadTx) error {
		if _, err := tx.Get("items", "tmp"); !errors.Is(err, ErrNotFound) {
			t.Errorf("tmp exists")
		}
		if got, _ := tx.Find("items", "group", "g3"); len(got) != 1 {
			t.Errorf("replacement b not found by new group")
		}
		if got, _ := tx.Find("items", "group", "g2"); len(got) != 0 {
			t.Errorf("old index entry of b remains")
		}
		return nil
	})
}

func TestConcurrentConflictsExactlyOneWins(t *testing.T) {
	s := single(t)
	ctx := context.Background()
	base := &item{ID: "x"}
	if err := s.Update(ctx, func(tx *Tx) error { return tx.Create("items", base) }); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 8)
	for i := range 8 {
		go func() {
			u := base.copy()
			u.Value = i
			errs <- s.Update(ctx, func(tx *Tx) error { return tx.Update("items", u) })
		}()
	}
	wins := 0
	for range 8 {
		err := <-errs
		switch {
		case err == nil:
			wins++
		case errors.Is(err, ErrConflict):
		default:
			t.Fatal(err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d concurrent updates of one version won, want 1", wins)
	}
}

func TestBatchReportsConflictsAndAppliesTheRest(t *testing.T) {
	s := single(t)
	ctx := context.Background()
	s.MaxEntryBytes = 2048 // force several entries
	res, err := s.Batch(ctx, func(b *Batch) error {
		for i := range 1000 {
			if err := b.Create("items", &item{ID: fmt.Sprintf("i%04d", i), Group: "g"}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil || res.Applied != 1000 || len(res.Conflicts) != 0 {
		t.Fatalf("batch create: %+v %v", res, err)
	}
	var objs []Object
	s.View(func(tx *ReadTx) error { objs, _ = tx.List("items"); return nil })
	res, err = s.Batch(ctx, func(b *Batch) error {
		for i, o := range objs {
			u := o.(*item).copy()
			u.Value = 7
			if i%10 == 0 {
				u.Version-- // stale: must be skipped
			}
			b.Update("items", u)
		}
		return b.Create("items", &item{ID: "i0000"}) // exists: conflict
	})
	if err != nil || res.Applied != 900 || len(res.Conflicts) != 101 {
		t.Fatalf("batch update: applied %d conflicts %d err %v", res.Applied, len(res.Conflicts), err)
	}
	n := 0
	s.View(func(tx *ReadTx) error {
		objs, _ := tx.List("items")
		for _, o := range objs {
			if o.(*item).Value == 7 {
				n++
			}
		}
		return nil
	})
	if n != 900 {
		t.Fatalf("%d updated, want 900", n)
	}
}

func TestLeaderKillKeepsAcknowledgedWrites(t *testing.T) {
	c := newCluster(t, 3, false, nil)
	var acked []string
	for i := range 50 {
		id := fmt.Sprintf("k%d", i)
		if err := c.put(&item{ID: id}); err != nil {
			t.Fatal(err)
		}
		acked = append(acked, id)
	}
	old := c.leader()
	c.kill(old.ID)
	nl := c.leader()
	if nl.ID == old.ID {
		t.Fatal("dead leader still leader")
	}
	for i := 50; i < 80; i++ {
		id := fmt.Sprintf("k%d", i)
		if err := c.put(&item{ID: id}); err != nil {
			t.Fatal(err)
		}
		acked = append(acked, id)
	}
	for _, s := range c.stores {
		eventually(t, "replication to "+s.ID, func() bool { return countItems(s) == len(acked) })
		s.View(func(tx *ReadTx) error {
			for _, id := range acked {
				if _, err := tx.Get("items", id); err != nil {
					t.Errorf("%s lost acknowledged %s", s.ID, id)
				}
			}
			return nil
		})
	}
}

func TestMinorityPartitionCannotCommitAndHeals(t *testing.T) {
	c := newCluster(t, 3, false, nil)
	if err := c.put(&item{ID: "before"}); err != nil {
		t.Fatal(err)
	}
	old := c.leader()
	var rest []string
	for _, id := range c.ids {
		if id != old.ID {
			rest = append(rest, id)
		}
	}
	c.net.Isolate(old.ID)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := old.Update(ctx, func(tx *Tx) error { return tx.Create("items", &item{ID: "minority"}) })
	if !errors.Is(err, ErrNoQuorum) && !errors.Is(err, ErrNotLeader) {
		t.Fatalf("write in minority: want no-quorum/not-leader error, got %v", err)
	}
	if err := old.LinearizableView(ctx, func(*ReadTx) error { return nil }); !errors.Is(err, ErrNotLeader) && !errors.Is(err, ErrNoQuorum) {
		t.Fatalf("linearizable read in minority: %v", err)
	}
	nl := c.leader(rest...)
	if err := nl.Update(ctx, func(tx *Tx) error { return tx.Create("items", &item{ID: "majority"}) }); err != nil {
		t.Fatalf("majority write: %v", err)
	}
	c.net.Heal()
	for _, s := range c.stores {
		eventually(t, "convergence on "+s.ID, func() bool {
			ok := false
			s.View(func(tx *ReadTx) error {
				_, e1 := tx.Get("items", "majority")
				_, e2 := tx.Get("items", "minority")
				ok = e1 == nil && errors.Is(e2, ErrNotFound)
				return nil
			})
			return ok
		})
	}
}

func TestFollowerRefusesWritesNamingLeader(t *testing.T) {
	c := newCluster(t, 3, false, nil)
	l := c.leader()
	for _, s := range c.stores {
		if s == l {
			continue
		}
		eventually(t, "follower knows leader", func() bool { return s.Leader().ID == l.ID })
		err := s.Update(context.Background(), func(tx *Tx) error { return tx.Create("items", &item{ID: "f"}) })
		var nle *NotLeaderError
		if !errors.As(err, &nle) || nle.LeaderID != l.ID {
			t.Fatalf("follower write: %v", err)
		}
	}
}

func TestLinearizableViewSeesCommittedWrite(t *testing.T) {
	c := newCluster(t, 3, false, nil)
	ctx := context.Background()
	for i := range 20 {
		if err := c.put(&item{ID: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := c.leader().LinearizableView(ctx, func(tx *ReadTx) error { n, _ = tx.Count("items"); return nil }); err != nil {
			t.Fatal(err)
		}
		if n != i+1 {
			t.Fatalf("linearizable read saw %d items after %d writes", n, i+1)
		}
	}
}

func TestRestartFromDiskKeepsEveryCommit(t *testing.T) {
	c := newCluster(t, 3, true, func(s *Store) { s.SnapshotThreshold = 64; s.TrailingLogs = 16 })
	for i := range 300 {
		if err := c.put(&item{ID: fmt.Sprintf("r%03d", i), Value: i}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.leader().Snapshot(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := 300; i < 320; i++ { // some after the snapshot, only in the log
		if err := c.put(&item{ID: fmt.Sprintf("r%03d", i), Value: i}); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range c.ids {
		eventually(t, "replication", func() bool { return countItems(c.stores[id]) == 320 })
	}
	for _, id := range c.ids {
		c.kill(id)
	}
	var boot []Server
	for _, id := range c.ids {
		c.start(id, boot, func(s *Store) { s.SnapshotThreshold = 64; s.TrailingLogs = 16 })
	}
	c.leader()
	for _, id := range c.ids {
		s := c.stores[id]
		eventually(t, "restored state on "+id, func() bool { return countItems(s) == 320 })
	}
}

func TestLaggingMemberCatchesUpBySnapshot(t *testing.T) {
	tweak := func(s *Store) { s.SnapshotThreshold = 32; s.TrailingLogs = 8 }
	c := newCluster(t, 3, true, tweak)
	if err := c.put(&item{ID: "first"}); err != nil {
		t.Fatal(err)
	}
	lagger := c.ids[0]
	if c.leader().ID == lagger {
		lagger = c.ids[1]
	}
	c.kill(lagger)
	for i := range 200 {
		if err := c.put(&item{ID: fmt.Sprintf("s%03d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.leader().Snapshot(context.Background()); err != nil {
		t.Fatal(err)
	}
	s := c.start(lagger, nil, tweak)
	w, err := s.Watch(context.Background(), s.AppliedIndex(), nil)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "catch-up", func() bool { return countItems(s) == 201 })
	// The log it missed was compacted, so it must have installed a snapshot,
	// which tells watchers to resync.
	for range w.Events() {
	}
	if !errors.Is(w.Err(), ErrResync) {
		t.Fatalf("watcher across a snapshot install: %v", w.Err())
	}
}

func TestCloseTwiceWrapsErrClosed(t *testing.T) {
	s := single(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second close: %v", err)
	}
	if err := s.Update(context.Background(), func(*Tx) error { return nil }); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("update after close: %v", err)
	}
}

func TestInvalidConfig(t *testing.T) {
	for name, s := range map[string]*Store{
		"no id":        {Transport: NewMemNetwork().Transport("a"), Schema: testSchema()},
		"no transport": {ID: "a", Schema: testSchema()},
		"no schema":    {ID: "a", Transport: NewMemNetwork().Transport("a")},
		"kek no dir":   {ID: "a", Transport: NewMemNetwork().Transport("a"), Schema: testSchema(), KeyEncryptionKey: make([]byte, 32)},
		"dup table":    {ID: "a", Transport: NewMemNetwork().Transport("a"), Schema: &Schema{Tables: []Table{{Name: "t", New: func() Object { return &item{} }}, {Name: "t", New: func() Object { return &item{} }}}}},
	} {
		if err := s.Start(context.Background()); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestMembershipAndLeadershipTransfer(t *testing.T) {
	c := newCluster(t, 1, false, nil)
	l := c.leader()
	lch, err := l.WatchLeader(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"m1", "m2"} {
		c.ids = append(c.ids, id)
		c.start(id, nil, nil)
		if err := l.AddVoter(context.Background(), id, id); err != nil {
			t.Fatal(err)
		}
	}
	c.start("obs", nil, nil)
	if err := l.AddNonvoter(context.Background(), "obs", "obs"); err != nil {
		t.Fatal(err)
	}
	if err := c.put(&item{ID: "x"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "non-voter replicates", func() bool { return countItems(c.stores["obs"]) == 1 })
	srvs, _ := l.Servers(context.Background())
	voters := 0
	for _, s := range srvs {
		if s.Voter {
			voters++
		}
	}
	if len(srvs) != 4 || voters != 3 {
		t.Fatalf("servers %+v", srvs)
	}
	if err := l.TransferLeadership(context.Background(), "m2"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "m2 leads", func() bool { return c.stores["m2"].IsLeader() })
	seen := false
	timeout := time.After(5 * time.Second)
	for !seen {
		select {
		case li := <-lch:
			seen = li.ID == "m2"
		case <-timeout:
			t.Fatal("leader change not observed")
		}
	}
	if err := c.stores["m2"].RemoveServer(context.Background(), "m0"); err != nil {
		t.Fatal(err)
	}
	srvs, _ = c.stores["m2"].Servers(context.Background())
	if slices.ContainsFunc(srvs, func(s Server) bool { return s.ID == "m0" }) {
		t.Fatal("m0 still a member")
	}
}

// A write queued when the store closes returns an error instead of
// waiting for ever: raft answers no future left in its queue at shutdown.
func TestWritesInFlightReturnWhenClosed(t *testing.T) {
	c := newCluster(t, 1, false, nil)
	s := c.leader()
	<-s.Ready()
	ctx := context.Background()
	const writers = 64
	done := make(chan error, writers)
	start := make(chan struct{})
	for i := range writers {
		go func() {
			<-start
			var err error
			for j := 0; err == nil; j++ {
				err = s.Update(ctx, func(tx *Tx) error { return tx.Create("items", &item{ID: fmt.Sprint(i, "-", j)}) })
			}
			done <- err
		}()
	}
	close(start)
	time.Sleep(20 * time.Millisecond) // let the writers fill raft's queue
	s.Close()
	timeout := time.After(10 * time.Second)
	for range writers {
		select {
		case err := <-done:
			if err == nil {
				t.Fatal("a write after Close succeeded")
			}
		case <-timeout:
			t.Fatal("writes in flight at Close never returned")
		}
	}
}

// Raft keeps every entry (the log's cache of recent entries, replication):
// a batch's entry must be the size of what it holds, not of the buffer it
// was built in (320 KiB for a one-change batch, before).
func TestBatchEntriesAreTheirSize(t *testing.T) {
	s := single(t)
	ctx := context.Background()
	for i := range 3 {
		res, err := s.Batch(ctx, func(b *Batch) error {
			return b.Create("items", &item{ID: fmt.Sprint("small", i), Group: "x"})
		})
		if err != nil {
			t.Fatal(err)
		}
		var l raft.Log
		if err := s.logStore.GetLog(res.Index, &l); err != nil {
			t.Fatal(err)
		}
		if len(l.Data) == 0 || cap(l.Data) > len(l.Data)+len(l.Data)/4 {
			t.Fatalf("a one-change batch's entry holds %d bytes in a buffer of %d", len(l.Data), cap(l.Data))
		}
	}
}

// A member remembers the last leader it saw go, and when it last heard
// from it: the next leader counts that member's silence from then.
func TestFormerLeaderIsTheLeaderLostWithItsLastContact(t *testing.T) {
	c := newCluster(t, 3, false, nil)
	old := c.leader()
	// Every member knows the leader (and has heard from it).
	if err := c.put(&item{ID: "a"}); err != nil {
		t.Fatal(err)
	}
	for _, s := range c.stores {
		eventually(t, "the leader known", func() bool { return s.Leader().ID == old.ID })
	}
	if f := old.FormerLeader(); f.ID != "" {
		t.Fatalf("the first leader has a former leader: %+v", f)
	}
	c.kill(old.ID)
	killed := time.Now()
	next := c.leader()
	// Leader changes are taken in order from raft's observations, a
	// moment after raft's own state (WatchLeader tells of the new
	// leadership only after the loss of the old one).
	eventually(t, "the new leader knows the old one went", func() bool { return next.FormerLeader().ID != "" })
	f := next.FormerLeader()
	// A message already in flight may land a few microseconds after
	// kill returns; the election came at least a heartbeat timeout
	// (200 ms in these clusters) later: the contact must be the former.
	if f.ID != old.ID || f.LastContact.IsZero() || f.LastContact.After(killed.Add(100*time.Millisecond)) {
		t.Fatalf("the new leader's former leader: %+v; want %s, heard from when it was killed at %v (not at the election)", f, old.ID, killed)
	}
}

// PromoteNonvoter lets a non-voter vote, leaves a voter alone, and never
// brings back a member that left the configuration (a demotion that raced
// with the promotion must win).
func TestPromoteNonvoterNeverAddsAMember(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, 1, false, nil)
	l := c.leader()
	c.ids = append(c.ids, "obs")
	c.start("obs", nil, nil)
	if err := l.AddNonvoter(ctx, "obs", "obs"); err != nil {
		t.Fatal(err)
	}
	suffrage := func(id string) (in, votes bool) {
		srvs, err := l.Servers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range srvs {
			if s.ID == id {
				return true, s.Voter
			}
		}
		return false, false
	}
	if err := l.PromoteNonvoter(ctx, "obs"); err != nil {
		t.Fatal(err)
	}
	if in, votes := suffrage("obs"); !in || !votes {
		t.Fatalf("after promotion: member %v, votes %v", in, votes)
	}
	if err := l.PromoteNonvoter(ctx, "obs"); err != nil {
		t.Fatalf("promoting a voter again: %v", err)
	}
	if err := l.RemoveServer(ctx, "obs"); err != nil {
		t.Fatal(err)
	}
	if err := l.PromoteNonvoter(ctx, "obs"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("promoting a removed member: %v, want ErrNotFound", err)
	}
	if in, _ := suffrage("obs"); in {
		t.Fatal("promoting a removed member brought it back")
	}
}
