package raftstore

import (
	"context"
	"testing"
)

// A batch's create of an ID that exists (before the batch, or earlier in
// the same entry) is a conflict that leaves the stored object, its version
// and its index entries as they were.
func TestBatchCreateOfAnExistingIDChangesNothing(t *testing.T) {
	s := single(t)
	ctx := context.Background()
	if _, err := s.Batch(ctx, func(b *Batch) error {
		return b.Create("items", &item{ID: "a", Group: "old", Value: 1})
	}); err != nil {
		t.Fatal(err)
	}
	var was uint64
	s.View(func(tx *ReadTx) error {
		o, err := tx.Get("items", "a")
		if err == nil {
			was = o.ObjectVersion()
		}
		return err
	})
	res, err := s.Batch(ctx, func(b *Batch) error {
		for _, it := range []*item{{ID: "a", Group: "new", Value: 2}, {ID: "b", Group: "new"}, {ID: "b", Group: "newer", Value: 3}} {
			if err := b.Create("items", it); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil || res.Applied != 1 || len(res.Conflicts) != 2 {
		t.Fatalf("creates over existing IDs: %+v %v", res, err)
	}
	if c := res.Conflicts[0]; c.ID != "a" || c.Actual != was {
		t.Fatalf("conflict %+v, want a at version %d", c, was)
	}
	s.View(func(tx *ReadTx) error {
		o, err := tx.Get("items", "a")
		if err != nil || o.(*item).Value != 1 || o.ObjectVersion() != was {
			t.Fatalf("a after the refused create: %+v %v", o, err)
		}
		if o, err := tx.Get("items", "b"); err != nil || o.(*item).Group != "new" {
			t.Fatalf("b after its second create: %+v %v", o, err)
		}
		for group, want := range map[string]int{"old": 1, "new": 1, "newer": 0} {
			if objs, err := tx.Find("items", "group", group); err != nil || len(objs) != want {
				t.Fatalf("group %s holds %d objects, want %d (%v)", group, len(objs), want, err)
			}
		}
		return nil
	})
}
