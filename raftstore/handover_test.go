package raftstore

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"
)

// TestBatchHandOverSharesTheProposersObjects: a batch with HandOver, in a
// compressed table (its first entry carries the dictionary as an extra
// op) and over several entries, leaves on the leader the very objects it
// was given, with their committed version, to readers and watchers; the
// followers decode equal objects; a change skipped as a conflict leaves
// its object alone and the stored one in place; nothing stays registered;
// without HandOver the leader decodes as before.
func TestBatchHandOverSharesTheProposersObjects(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := newCluster(t, 3, false, func(s *Store) {
		s.Schema.Tables[0].Compress = true
		s.MaxEntryBytes = 1024 // several entries
	})
	l := c.leader()
	// The conflict is in another table: the batch is the compressed
	// table's first write, so its first entry carries the dictionary.
	if err := l.Update(ctx, func(tx *Tx) error { return tx.Create("other", &item{ID: "taken", Value: 1}) }); err != nil {
		t.Fatal(err)
	}
	w, err := l.Watch(ctx, l.AppliedIndex(), nil)
	if err != nil {
		t.Fatal(err)
	}
	given := map[string]*item{}
	clash := &item{ID: "taken", Value: 2, Version: 0}
	res, err := l.Batch(ctx, func(b *Batch) error {
		b.HandOver()
		for i := range 100 {
			it := &item{ID: fmt.Sprintf("h%03d", i), Group: "g", Tags: []string{"t"}, Value: i}
			given[it.ID] = it
			if err := b.Create("items", it); err != nil {
				return err
			}
		}
		return b.Create("other", clash) // exists: skipped
	})
	if err != nil || res.Applied != 100 || len(res.Conflicts) != 1 {
		t.Fatalf("batch: %+v %v", res, err)
	}
	if n := l.fsm.handed.len(); n != 0 {
		t.Fatalf("%d entries' objects still registered after the batch", n)
	}
	if clash.Version != 0 {
		t.Fatalf("the skipped change's object got version %d", clash.Version)
	}
	l.View(func(tx *ReadTx) error {
		for id, it := range given {
			o, err := tx.Get("items", id)
			if err != nil {
				t.Fatal(err)
			}
			if o != Object(it) {
				t.Fatalf("%s: the leader holds a decoded copy, not the object handed over", id)
			}
			if it.Version == 0 || it.Version > res.Index {
				t.Fatalf("%s: version %d, batch index %d", id, it.Version, res.Index)
			}
		}
		if o, _ := tx.Get("other", "taken"); o.(*item).Value != 1 || o == Object(clash) {
			t.Fatalf("the conflicting object replaced the stored one: %+v", o)
		}
		return nil
	})
	for seen := 0; seen < 100; {
		select {
		case ev := <-w.Events():
			if it := given[ev.ID]; it != nil {
				if ev.Object != Object(it) {
					t.Fatalf("%s: the watcher decoded a copy", ev.ID)
				}
				seen++
			}
		case <-ctx.Done():
			t.Fatalf("%d of 100 events", seen)
		}
	}
	for id, s := range c.stores {
		if s == l {
			continue
		}
		if err := s.WaitIndex(ctx, res.Index); err != nil {
			t.Fatal(err)
		}
		s.View(func(tx *ReadTx) error {
			for gid, it := range given {
				o, err := tx.Get("items", gid)
				if err != nil {
					t.Fatalf("follower %s: %v", id, err)
				}
				if o == Object(it) || !reflect.DeepEqual(o, Object(it)) {
					t.Fatalf("follower %s: %s is %+v, want a decoded copy of %+v", id, gid, o, it)
				}
			}
			return nil
		})
	}
	plain := &item{ID: "plain"}
	if _, err := l.Batch(ctx, func(b *Batch) error { return b.Create("items", plain) }); err != nil {
		t.Fatal(err)
	}
	l.View(func(tx *ReadTx) error {
		if o, _ := tx.Get("items", "plain"); o == Object(plain) || o == nil {
			t.Fatalf("without HandOver the leader holds the caller's object: %v", o)
		}
		return nil
	})
}

// TestBatchReusedBuffersKeepEveryObject: a Batch encodes and compresses
// each change in buffers it reuses for the next; objects of very
// different sizes (some too unlike the dictionary to compress, one over
// the bound on a kept buffer) all come back as written, decoded from the
// bytes the log holds.
func TestBatchReusedBuffersKeepEveryObject(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l := single(t, func(s *Store) { s.Schema.Tables[0].Compress = true })
	want, others := map[string]*item{}, map[string]*item{}
	res, err := l.Batch(ctx, func(b *Batch) error {
		for i := range 300 {
			it := &item{ID: fmt.Sprintf("r%03d", i), Group: "g", Value: i, Tags: []string{}} // json v2 decodes a nil slice as empty
			for j := range (i * 7919) % 97 {
				it.Tags = append(it.Tags, fmt.Sprintf("tag-%d-%d", i, j))
			}
			if i == 150 {
				// Over maxScratch, in index keys under their 64 KiB bound.
				it.Tags = nil
				for k := range 40 {
					it.Tags = append(it.Tags, fmt.Sprintf("%02d%s", k, make([]byte, 60<<10)))
				}
			}
			want[it.ID] = it.copy()
			if err := b.Create("items", it); err != nil {
				return err
			}
			if i%10 == 0 {
				// An uncompressed table's change between compressed
				// ones: its bytes are the encode buffer's, which the
				// next change is encoded into and compressed from.
				o := &item{ID: fmt.Sprintf("o%03d", i), Group: "h", Value: -i, Tags: []string{fmt.Sprintf("other-%d", i)}}
				others[o.ID] = o.copy()
				if err := b.Create("other", o); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil || res.Applied != 330 {
		t.Fatalf("batch: %+v %v", res, err)
	}
	// Without HandOver the store decodes each record's bytes: what the
	// log and every member hold.
	for _, s := range []*Store{l} {
		s.View(func(tx *ReadTx) error {
			for table, objs := range map[string]map[string]*item{"items": want, "other": others} {
				for id, w := range objs {
					o, err := tx.Get(table, id)
					if err != nil {
						t.Fatalf("%s: %s/%s: %v", s.ID, table, id, err)
					}
					got := o.(*item).copy()
					got.Version = 0
					if !reflect.DeepEqual(got, w) {
						t.Fatalf("%s: %s/%s came back as %+v, want %+v", s.ID, table, id, got, w)
					}
				}
			}
			return nil
		})
	}
}
