package raftstore

import (
	"context"
	"fmt"
	"testing"
)

// Cut ends a batch's entry: the changes after it commit in a later entry
// (a later version), even when both parts would fit in one.
func TestBatchCutEndsTheEntry(t *testing.T) {
	s := single(t)
	ctx := context.Background()
	res, err := s.Batch(ctx, func(b *Batch) error {
		for step := range 3 {
			for i := range 5 {
				if err := b.Create("items", &item{ID: fmt.Sprintf("s%d-%d", step, i), Group: "g"}); err != nil {
					return err
				}
			}
			if err := b.Cut(); err != nil {
				return err
			}
			if err := b.Cut(); err != nil { // nothing added: no entry
				return err
			}
		}
		return nil
	})
	if err != nil || res.Applied != 15 {
		t.Fatalf("batch: %+v %v", res, err)
	}
	versions := map[int]map[uint64]bool{}
	s.View(func(tx *ReadTx) error {
		objs, err := tx.List("items")
		for _, o := range objs {
			var step, i int
			fmt.Sscanf(o.ObjectID(), "s%d-%d", &step, &i)
			if versions[step] == nil {
				versions[step] = map[uint64]bool{}
			}
			versions[step][o.ObjectVersion()] = true
		}
		return err
	})
	seen := map[uint64]int{}
	for step := range 3 {
		if len(versions[step]) != 1 {
			t.Fatalf("step %d went in %d entries, want 1: %v", step, len(versions[step]), versions[step])
		}
		for v := range versions[step] {
			if other, ok := seen[v]; ok {
				t.Fatalf("steps %d and %d share the entry at %d", other, step, v)
			}
			seen[v] = step
		}
	}
}
