package raftstore

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

func uniqueSchema() *Schema {
	return &Schema{Tables: []Table{
		{Name: "items", New: func() Object { return &item{} }, Unique: []string{"group"}, Indexes: map[string]IndexFunc{
			"group": func(o Object) []string { return []string{o.(*item).Group} },
			"tag":   func(o Object) []string { return o.(*item).Tags },
		}},
	}}
}

// Writers that each saw a key free cannot both take it: the check is made
// when the change applies, not only when it is proposed.
func TestUniqueIndexHoldsUnderConcurrentCreates(t *testing.T) {
	s := single(t, func(s *Store) { s.Schema = uniqueSchema() })
	ctx := context.Background()
	const n = 8
	start := make(chan struct{})
	errs := make(chan error, n)
	for i := range n {
		go func() {
			<-start
			errs <- s.Update(ctx, func(tx *Tx) error {
				// Every writer sees the name free at proposal time.
				return tx.Create("items", &item{ID: fmt.Sprint("x", i), Group: "web", Tags: []string{"a"}})
			})
		}()
	}
	close(start)
	wins := 0
	for range n {
		err := <-errs
		var ce *ConflictError
		switch {
		case err == nil:
			wins++
		case errors.As(err, &ce) && ce.Index == "group" && ce.Key == "web" && ce.HeldBy != "":
		default:
			t.Fatalf("unexpected error: %v", err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d creates took the unique key, want 1", wins)
	}
	s.View(func(tx *ReadTx) error {
		if got, _ := tx.Find("items", "group", "web"); len(got) != 1 {
			t.Fatalf("%d objects hold the unique key", len(got))
		}
		return nil
	})
	// A non-unique index may repeat keys.
	if err := s.Update(ctx, func(tx *Tx) error { return tx.Create("items", &item{ID: "y", Group: "db", Tags: []string{"a"}}) }); err != nil {
		t.Fatal(err)
	}
}

func TestUniqueIndexInTransactionsAndBatches(t *testing.T) {
	s := single(t, func(s *Store) { s.Schema = uniqueSchema() })
	ctx := context.Background()
	a := &item{ID: "a", Group: "g1"}
	if err := s.Update(ctx, func(tx *Tx) error { return tx.Create("items", a) }); err != nil {
		t.Fatal(err)
	}
	// Two objects taking one key in one transaction: refused whole.
	err := s.Update(ctx, func(tx *Tx) error {
		if err := tx.Create("items", &item{ID: "b", Group: "g2"}); err != nil {
			return err
		}
		return tx.Create("items", &item{ID: "c", Group: "g2"})
	})
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("two creates of one key in a transaction: %v", err)
	}
	// Deleting the holder and giving its key to another in one
	// transaction is a rename, and allowed.
	err = s.Update(ctx, func(tx *Tx) error {
		if err := tx.Delete("items", "a"); err != nil {
			return err
		}
		return tx.Create("items", &item{ID: "d", Group: "g1"})
	})
	if err != nil {
		t.Fatalf("handing a key over in one transaction: %v", err)
	}
	// An update that keeps its own key is not a conflict with itself.
	var d *item
	s.View(func(tx *ReadTx) error { o, _ := tx.Get("items", "d"); d = o.(*item).copy(); return nil })
	d.Value = 7
	if err := s.Update(ctx, func(tx *Tx) error { return tx.Update("items", d) }); err != nil {
		t.Fatalf("update keeping its key: %v", err)
	}
	// In a batch, each change is checked alone: the taken key is a
	// reported conflict, the rest applies.
	res, err := s.Batch(ctx, func(b *Batch) error {
		b.Create("items", &item{ID: "e", Group: "g1"})
		b.Create("items", &item{ID: "f", Group: "g5"})
		b.Create("items", &item{ID: "g", Group: "g5"})
		return nil
	})
	if err != nil || res.Applied != 1 || len(res.Conflicts) != 2 {
		t.Fatalf("batch: applied %d conflicts %v err %v", res.Applied, res.Conflicts, err)
	}
	for _, c := range res.Conflicts {
		if c.Index != "group" || (c.ID != "e" && c.ID != "g") {
			t.Fatalf("conflict %v", c)
		}
	}
	// A schema naming a unique index that does not exist is refused.
	bad := &Schema{Tables: []Table{{Name: "t", New: func() Object { return &item{} }, Unique: []string{"nope"}}}}
	if err := bad.init(); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("unknown unique index: %v", err)
	}
}
