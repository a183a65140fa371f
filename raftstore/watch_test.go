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
