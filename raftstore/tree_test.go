package raftstore

import (
	stdcmp "cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"unsafe"
)

// The tree matches a sorted slice through random inserts, replacements and
// deletes in random, ascending and descending key orders, and every clone
// taken on the way still reads as it was when taken.
func TestTreeMatchesModelAndClonesStayFrozen(t *testing.T) {
	type kv struct{ k, v int }
	for _, order := range []string{"random", "ascending", "descending"} {
		t.Run(order, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, uint64(len(order))))
			tr := newTree(stdcmp.Compare[int], func(e kv) int { return e.k })
			var model []kv // sorted by k
			type frozen struct {
				tree  *tree[int, kv]
				items []kv
			}
			var clones []frozen
			next := 0
			key := func() int {
				switch order {
				case "ascending":
					next++
					return next
				case "descending":
					next--
					return next
				}
				return rng.IntN(5000)
			}
			for step := range 40000 {
				switch r := rng.IntN(10); {
				case r < 6 || len(model) == 0:
					e := kv{key(), step}
					if rng.IntN(4) == 0 && len(model) > 0 {
						e.k = model[rng.IntN(len(model))].k // a replacement
					}
					old, replaced := tr.ReplaceOrInsert(e)
					i, found := slices.BinarySearchFunc(model, e.k, func(a kv, k int) int { return stdcmp.Compare(a.k, k) })
					if replaced != found || found && old != model[i] {
						t.Fatalf("step %d: insert %v replaced %v (%v), model has it: %v", step, e, replaced, old, found)
					}
					if found {
						model[i] = e
					} else {
						model = slices.Insert(model, i, e)
					}
				case r < 9:
					k := rng.IntN(5000)
					if rng.IntN(2) == 0 {
						k = model[rng.IntN(len(model))].k
					}
					if order != "random" && rng.IntN(2) == 0 {
						k = model[0].k // old keys go first, as with time-ordered IDs
					}
					old, ok := tr.Delete(k)
					i, found := slices.BinarySearchFunc(model, k, func(a kv, k int) int { return stdcmp.Compare(a.k, k) })
					if ok != found || found && old != model[i] {
						t.Fatalf("step %d: delete %d gave %v %v, model has it: %v", step, k, old, ok, found)
					}
					if found {
						model = slices.Delete(model, i, i+1)
					}
				default:
					clones = append(clones, frozen{tr.Clone(), slices.Clone(model)})
				}
				if step%997 == 0 {
					checkTree(t, fmt.Sprintf("step %d", step), tr, model)
				}
			}
			checkTree(t, "end", tr, model)
			for i, c := range clones {
				checkTree(t, fmt.Sprintf("clone %d", i), c.tree, c.items)
			}
			// Deleting everything leaves an empty tree that works.
			for _, e := range model {
				if _, ok := tr.Delete(e.k); !ok {
					t.Fatalf("delete %d: not found", e.k)
				}
			}
			checkTree(t, "emptied", tr, nil)
			tr.ReplaceOrInsert(kv{7, 7})
			checkTree(t, "refilled", tr, []kv{{7, 7}})
		})
	}
}

func checkTree[T comparable](t *testing.T, what string, tr *tree[int, T], model []T) {
	t.Helper()
	if tr.Len() != len(model) {
		t.Fatalf("%s: Len %d, model %d", what, tr.Len(), len(model))
	}
	var got []T
	tr.Ascend(func(e T) bool { got = append(got, e); return true })
	if !slices.Equal(got, model) {
		i := 0
		for i < min(len(got), len(model)) && got[i] == model[i] {
			i++
		}
		t.Fatalf("%s: Ascend gives %d items, model %d; first difference at %d", what, len(got), len(model), i)
	}
	for i, e := range model {
		k := tr.key(e)
		if g, ok := tr.Get(k); !ok || g != e {
			t.Fatalf("%s: Get(%d) = %v %v, want %v", what, k, g, ok, e)
		}
		if i%37 == 0 {
			var from []T
			tr.AscendGreaterOrEqual(k, func(e T) bool { from = append(from, e); return len(from) < 50 })
			if want := model[i:min(i+50, len(model))]; !slices.Equal(from, want) {
				t.Fatalf("%s: AscendGreaterOrEqual(%d) gives %v, want %v", what, k, from, want)
			}
			// From a key that is not there: the items after it.
			var after []T
			tr.AscendGreaterOrEqual(k+1, func(e T) bool { after = append(after, e); return len(after) < 3 })
			if want := model[i+1 : min(i+4, len(model))]; !slices.Equal(after, want) && !(i+1 < len(model) && tr.key(model[i+1]) == k+1) {
				t.Fatalf("%s: AscendGreaterOrEqual(%d) gives %v, want %v", what, k+1, after, want)
			}
		}
	}
}

// Keys that come in order fill the nodes: the tree holds little beyond
// its items (google/btree kept about twice the items' size).
func TestTreeInOrderKeysFillNodes(t *testing.T) {
	tr := newTree(stdcmp.Compare[int], func(e int) int { return e })
	for i := range 100000 {
		tr.ReplaceOrInsert(i)
		if i%50 == 0 {
			tr.Clone() // a publish after a batch
		}
	}
	slots, leaves := 0, 0
	var walk func(n *treeNode[int, int])
	walk = func(n *treeNode[int, int]) {
		if n.children == nil {
			leaves++
		}
		slots += cap(n.items)
		for _, c := range n.children {
			walk(c)
		}
	}
	walk(tr.root)
	// Full leaves, too: fewer nodes, each 80 bytes.
	if slots > 100000*11/10 || leaves > 100000/treeMaxItems*11/10 {
		t.Fatalf("%d leaf slots in %d leaves for 100,000 items", slots, leaves)
	}
}

// BenchmarkTreeBulkInsert puts 100,000 random keys into one tree in
// applies of 10,000 (a clone, as a publish, after each), as a service of
// 100,000 tasks fills its index trees.
func BenchmarkTreeBulkInsert(b *testing.B) {
	rng := rand.New(rand.NewPCG(3, 4))
	keys := make([]int, 100000)
	for i := range keys {
		keys[i] = rng.Int()
	}
	b.ReportAllocs()
	for b.Loop() {
		tr := newTree(stdcmp.Compare[int], func(e int) int { return e })
		for i, k := range keys {
			tr.ReplaceOrInsert(k)
			if i%10000 == 9999 {
				tr.Clone()
			}
		}
	}
}

// In a generation of many inserts (a big batch applying), a leaf that is
// copied or split gets its full room at once: the later inserts into it in
// the same generation change it in place instead of copying it again.
func TestTreeBulkApplyCopiesALeafOnce(t *testing.T) {
	tr := newTree(stdcmp.Compare[int], func(e int) int { return e })
	for i := range 1000 {
		tr.ReplaceOrInsert(i * 10) // full leaves (keys in order)
	}
	tr.Clone() // a publish: a new generation
	for i := range 2 * treeMaxItems {
		tr.ReplaceOrInsert(100000 + i) // past the bulk threshold, elsewhere
	}
	leafOf := func(k int) *treeNode[int, int] {
		n := tr.root
		for n.children != nil {
			n = n.children[tr.childPos(n.keys, k)]
		}
		return n
	}
	tr.ReplaceOrInsert(5001) // copies the full leaf of 5000 and splits it
	leaf := leafOf(5000)
	items := unsafe.SliceData(leaf.items)
	for k := 5002; k < 5010; k++ {
		tr.ReplaceOrInsert(k)
		if l := leafOf(5000); l != leaf || unsafe.SliceData(l.items) != items {
			t.Fatalf("insert %d copied the leaf again in the same generation (%d items, room %d)", k, len(l.items), cap(l.items))
		}
	}
	checkTree(t, "after the bulk", tr, treeModel(tr))
}

// treeModel lists a tree's items (for checkTree's lookups).
func treeModel(tr *tree[int, int]) []int {
	var out []int
	tr.Ascend(func(e int) bool { out = append(out, e); return true })
	return out
}

// Replacements (a batch of status reports) are not inserts: however many
// a generation takes, the leaves they copy stay exactly sized, and a tree
// of random keys keeps little room beyond its items.
func TestTreeReplacementsKeepLeavesSized(t *testing.T) {
	tr := newTree(stdcmp.Compare[int], func(e int) int { return e })
	rng := rand.New(rand.NewPCG(5, 6))
	keys := make([]int, 20000)
	for i := range keys {
		keys[i] = rng.Int()
		tr.ReplaceOrInsert(keys[i])
		if i%10 == 9 {
			tr.Clone() // small transactions: no bulk room
		}
	}
	leafSlots := func() (slots int) {
		var walk func(n *treeNode[int, int])
		walk = func(n *treeNode[int, int]) {
			if n.children == nil {
				slots += cap(n.items)
			}
			for _, c := range n.children {
				walk(c)
			}
		}
		walk(tr.root)
		return slots
	}
	before := leafSlots()
	for round := range 4 {
		tr.Clone()
		for _, k := range keys[round*5000 : (round+1)*5000] {
			tr.ReplaceOrInsert(k) // every item replaced, 5,000 a generation
		}
	}
	if after := leafSlots(); after > before+len(keys)/20 {
		t.Fatalf("leaf slots %d -> %d after replacing every item: replacements gave copies room", before, after)
	}
}
