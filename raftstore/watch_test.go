package raftstore

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestWatchOrderResumeAndFilter(t *testing.T) {
	s := single(t)
	ctx := context.Background()
	var start uint64
	s.View(func(tx *ReadTx) error { start = tx.Index(); return nil })
	w, err := s.Watch(ctx, start, func(ev Event) bool { return ev.Table == "items" })
	if err != nil {
		t.Fatal(err)
	}
	a := &item{ID: "a"}
	s.Update(ctx, func(tx *Tx) error { return tx.Create("items", a) })
	s.Update(ctx, func(tx *Tx) error { return tx.Create("other", &item{ID: "o"}) })
	b := a.copy()
	b.Value = 1
	s.Update(ctx, func(tx *Tx) error { return tx.Update("items", b) })
	s.Update(ctx, func(tx *Tx) error { return tx.Delete("items", "a") })
	want := []EventKind{Created, Updated, Deleted}
	var got []Event
	for len(got) < len(want) {
		select {
		case ev := <-w.Events():
			got = append(got, ev)
		case <-time.After(5 * time.Second):
			t.Fatalf("got %d events", len(got))
		}
	}
	for i, ev := range got {
		if ev.Kind != want[i] || ev.ID != "a" {
			t.Fatalf("event %d: %+v", i, ev)
		}
		if i > 0 && ev.Index <= got[i-1].Index {
			t.Fatal("events out of order")
		}
	}
	if got[1].Old.(*item).Value != 0 || got[1].Object.(*item).Value != 1 || got[2].Object != nil {
		t.Fatal("old/new objects wrong")
	}
	w.Stop()
	// Resume after the first event: exactly the later ones come again.
	w2, err := s.Watch(ctx, got[0].Index, func(ev Event) bool { return ev.Table == "items" })
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Stop()
	for i := 1; i < 3; i++ {
		ev := <-w2.Events()
		if ev.Index != got[i].Index || ev.Kind != got[i].Kind {
			t.Fatalf("resumed event %d: %+v", i, ev)
		}
	}
}

func TestSlowWatcherResyncsAndNeverStallsWrites(t *testing.T) {
	c := newCluster(t, 1, false, func(s *Store) { s.WatchBuffer = 64 })
	s := c.leader()
	<-s.Ready()
	ctx := context.Background()
	w, err := s.Watch(ctx, s.AppliedIndex(), nil)
	if err != nil {
		t.Fatal(err)
	}
	// Nobody reads w: 500 writes must still go through quickly.
	done := make(chan error)
	go func() {
		for i := range 500 {
			if err := s.Update(ctx, func(tx *Tx) error { return tx.Create("items", &item{ID: fmt.Sprint(i)}) }); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("writes stalled behind an unread watcher")
	}
	n := 0
	for range w.Events() {
		n++
	}
	if !errors.Is(w.Err(), ErrResync) {
		t.Fatalf("slow watcher ended with %v after %d events, want ErrResync", w.Err(), n)
	}
	if n >= 500 {
		t.Fatalf("slow watcher got all %d events from a 64-event buffer", n)
	}
	// Too far back to resume: refused at once.
	if _, err := s.Watch(ctx, 1, nil); !errors.Is(err, ErrResync) {
		t.Fatalf("watch from evicted index: %v", err)
	}
}

func TestWatchEndsOnClose(t *testing.T) {
	s := single(t)
	w, err := s.Watch(context.Background(), s.AppliedIndex(), nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	for range w.Events() {
	}
	if w.Err() == nil {
		t.Fatal("no error after close")
	}
}

// The ring starts small and grows: every event up to its capacity is kept
// (a watcher from the start gets them all, in order), and past it the
// oldest go.
func TestEventRingGrowsToItsCapacity(t *testing.T) {
	r := newEventRing(3000, "items")
	mk := func(from, to int) []Event {
		var evs []Event
		for i := from; i <= to; i++ {
			evs = append(evs, Event{Index: uint64(i), Kind: Created, Table: "items", rec: newRecord(fmt.Sprint(i), nil, uint64(i), nil, nil)})
		}
		return evs
	}
	r.append(mk(1, 700))
	r.append(mk(701, 2500)) // past the first 1024 slots, within 3000
	seq, ok := r.seqAfter(0)
	if !ok || seq != r.start {
		t.Fatalf("events from the start not kept (ok %v)", ok)
	}
	for i := uint64(0); i < 2500; i++ {
		ev := r.event(&r.buf[(r.start+i)%uint64(len(r.buf))])
		if ev.Index != i+1 || ev.ID != fmt.Sprint(i+1) || ev.Table != "items" || ev.Kind != Created {
			t.Fatalf("event %d read back as %+v", i+1, ev)
		}
	}
	r.append(mk(2501, 3500))
	if len(r.buf) != 3000 {
		t.Fatalf("ring of %d slots, capacity 3000", len(r.buf))
	}
	if _, ok := r.seqAfter(100); ok {
		t.Fatal("evicted events reported as kept")
	}
	if seq, ok := r.seqAfter(500); !ok || r.event(&r.buf[seq%3000]).Index != 501 {
		t.Fatalf("oldest kept event: ok %v", ok)
	}
}

// Large objects changed often fill the ring's byte bound before its count:
// the old versions it holds stay within WatchBufferBytes, a watch from
// before them is told to resync, and a watcher that keeps up sees every
// change with its old value.
func TestWatchRingIsBoundedByTheBytesOfOldVersions(t *testing.T) {
	const bound = 1 << 20
	c := newCluster(t, 1, false, func(s *Store) { s.WatchBufferBytes = bound })
	s := c.leader()
	<-s.Ready()
	ctx := context.Background()
	it := &item{ID: "big", Group: string(make([]byte, 64<<10))}
	if err := s.Update(ctx, func(tx *Tx) error { return tx.Create("items", it) }); err != nil {
		t.Fatal(err)
	}
	from := s.AppliedIndex()
	current, err := s.Watch(ctx, s.AppliedIndex(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer current.Stop()
	const updates = 100 // 6.4 MiB of old versions
	for i := 1; i <= updates; i++ {
		next := it.copy()
		next.Value = i
		if err := s.Update(ctx, func(tx *Tx) error { return tx.Update("items", next) }); err != nil {
			t.Fatal(err)
		}
		it = next
		select {
		case ev, ok := <-current.Events():
			if !ok || ev.Kind != Updated || ev.Old.(*item).Value != i-1 || ev.Object.(*item).Value != i {
				t.Fatalf("update %d: event %+v (open %v, err %v)", i, ev, ok, current.Err())
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("update %d: no event", i)
		}
	}
	s.events.mu.Lock()
	held, kept := s.events.oldBytes, s.events.next-s.events.start
	s.events.mu.Unlock()
	if held > bound || kept >= updates {
		t.Fatalf("ring holds %d bytes of old versions in %d events; bound %d", held, kept, bound)
	}
	// The first updates are gone: a watch from before them must list again.
	if _, err := s.Watch(ctx, from, nil); !errors.Is(err, ErrResync) {
		t.Fatalf("watch from index %d, behind the bound: %v, want ErrResync", from, err)
	}
}
