package raftstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestRandomTransactionsMatchModel runs random transactions (creates,
// updates with fresh or stale versions, deletes, aborts) against the store
// and a plain map, and checks after each that both agree, including on which
// transactions failed and on what each secondary index finds (updates move
// objects between index keys, or keep them).
func TestRandomTransactionsMatchModel(t *testing.T) {
	c := newCluster(t, 3, false, nil)
	s := c.leader()
	<-s.Ready()
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	type entry struct {
		val     int
		version uint64
		group   string
		tags    []string
	}
	groups, tags := []string{"g0", "g1", "g2"}, []string{"x", "y", "z"}
	// keys picks an object's index keys; often the ones it has.
	keys := func(o *item) {
		if rng.IntN(2) == 0 {
			o.Group = groups[rng.IntN(len(groups))]
		}
		if rng.IntN(2) == 0 {
			o.Tags = nil
			for _, t := range tags {
				if rng.IntN(2) == 0 {
					o.Tags = append(o.Tags, t)
				}
			}
		}
	}
	model := map[string]entry{}
	// Stale copies read in earlier rounds, to provoke conflicts.
	stale := map[string]*item{}
	for round := range 400 {
		next := map[string]entry{}
		for k, v := range model {
			next[k] = v
		}
		wantErr := error(nil)
		abort := rng.IntN(10) == 0
		var objs []*item
		err := s.Update(ctx, func(tx *Tx) error {
			for range 1 + rng.IntN(4) {
				id := fmt.Sprintf("k%d", rng.IntN(12))
				cur, exists := next[id]
				switch r := rng.IntN(10); {
				case r < 4:
					o := &item{ID: id, Value: round}
					keys(o)
					err := tx.Create("items", o)
					if exists != errors.Is(err, ErrExists) || (!exists && err != nil) {
						return fmt.Errorf("create %s exists=%v: %v", id, exists, err)
					}
					if !exists {
						next[id] = entry{val: round, group: o.Group, tags: o.Tags}
						objs = append(objs, o)
					}
				case r < 8:
					var o *item
					useStale := stale[id] != nil && rng.IntN(3) == 0
					if useStale {
						o = stale[id].copy()
					} else if got, err := tx.Get("items", id); err == nil {
						o = got.(*item).copy()
					} else {
						continue
					}
					o.Value = round
					keys(o)
					err := tx.Update("items", o)
					if useStale && exists && o.Version != cur.version && cur.version != 0 {
						if !errors.Is(err, ErrConflict) {
							return fmt.Errorf("stale update %s: %v", id, err)
						}
						continue
					}
					if err == nil {
						next[id] = entry{val: round, version: cur.version, group: o.Group, tags: o.Tags}
						objs = append(objs, o)
					} else if !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrConflict) {
						return err
					}
				default:
					err := tx.Delete("items", id)
					if exists != (err == nil) {
						return fmt.Errorf("delete %s exists=%v: %v", id, exists, err)
					}
					delete(next, id)
				}
			}
			if abort {
				wantErr = errors.New("abort")
				return wantErr
			}
			return nil
		})
		if err != nil && !errors.Is(err, wantErr) {
			t.Fatalf("round %d: %v", round, err)
		}
		if err == nil {
			model = next
			for _, o := range objs {
				if e, ok := model[o.ID]; ok && e.val == o.Value {
					e.version = o.Version
					model[o.ID] = e
				}
			}
		}
		// Compare the whole state.
		s.View(func(tx *ReadTx) error {
			all, _ := tx.List("items")
			if len(all) != len(model) {
				t.Fatalf("round %d: store has %d objects, model %d", round, len(all), len(model))
			}
			for _, o := range all {
				it := o.(*item)
				m, ok := model[it.ID]
				if !ok || m.val != it.Value || (m.version != 0 && m.version != it.Version) {
					t.Fatalf("round %d: %s store=%+v model=%+v", round, it.ID, it, m)
				}
				if rng.IntN(4) == 0 {
					stale[it.ID] = it.copy()
				}
			}
			for _, q := range []struct {
				index string
				keys  []string
				has   func(e entry, k string) bool
			}{
				{"group", groups, func(e entry, k string) bool { return e.group == k }},
				{"tag", tags, func(e entry, k string) bool { return slices.Contains(e.tags, k) }},
			} {
				for _, k := range q.keys {
					var want []string
					for id, e := range model {
						if q.has(e, k) {
							want = append(want, id)
						}
					}
					found, err := tx.Find("items", q.index, k)
					if err != nil {
						t.Fatal(err)
					}
					var got []string
					for _, o := range found {
						got = append(got, o.(*item).ID)
					}
					slices.Sort(want)
					slices.Sort(got)
					if !slices.Equal(got, want) {
						t.Fatalf("round %d: Find(%s, %s) = %v, model %v", round, q.index, k, got, want)
					}
				}
			}
			return nil
		})
	}
	// Followers hold the same state.
	for _, f := range c.stores {
		eventually(t, "follower "+f.ID, func() bool { return countItems(f) == len(model) })
	}
}

func FuzzDecodeEntryNeverPanics(f *testing.F) {
	o := &op{kind: opUpdate, table: "items", id: "x", expect: 3, data: []byte(`{"id":"x"}`)}
	e := appendOp(newEntry(entryTx, 0), o)
	setCount(e, 1)
	f.Add(e)
	f.Add([]byte{1, 2, 255, 255, 255, 255, 255, 255, 255, 255, 255, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		decodeEntry(data)
	})
}
