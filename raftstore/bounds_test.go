package raftstore

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// An ID or index key that a snapshot could not hold back is refused when
// written, through a transaction and through a batch: committed, it would
// make every restart from the next snapshot, and every follower that
// needs it installed, fail.
func TestRecordsASnapshotCannotHoldAreRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := single(t)
	long := strings.Repeat("k", maxKeyBytes+1)
	for name, it := range map[string]*item{
		"index key": {ID: "a", Group: long},
		"ID":        {ID: strings.Repeat("i", maxIDBytes+1), Group: "g"},
	} {
		err := s.Update(ctx, func(tx *Tx) error { return tx.Create("items", it) })
		if !errors.Is(err, ErrTooLarge) {
			t.Errorf("%s over the bound through a transaction: %v, want ErrTooLarge", name, err)
		}
		_, err = s.Batch(ctx, func(b *Batch) error { return b.Create("items", it) })
		if !errors.Is(err, ErrTooLarge) {
			t.Errorf("%s over the bound through a batch: %v, want ErrTooLarge", name, err)
		}
	}
	// At the bound it is taken.
	if err := s.Update(ctx, func(tx *Tx) error {
		return tx.Create("items", &item{ID: "b", Group: long[:maxKeyBytes]})
	}); err != nil {
		t.Fatalf("a key of exactly %d bytes: %v", maxKeyBytes, err)
	}
}
