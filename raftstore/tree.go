package raftstore

import (
	"sort"
	"sync/atomic"
)

// tree is an ordered set of items of type T under keys of type K, kept in
// a copy-on-write B+tree: items sit in the leaves, an inner node holds for
// each child but the first a key no greater than any of that child's
// keys. Clone is O(1); afterwards both trees copy a node before changing
// it, so a clone is an immutable snapshot for readers.
//
// It replaces google/btree for the store's tables because of memory: that
// tree gives every node room for its maximum (32 items) and a copy of a
// node the same room, and splits a full node in two halves, so keys that
// come in order (IDs, or IDs within one index key) left nodes half full for
// good: 60-70 bytes of tree per 32-byte index entry. Here a node's slices
// are as long as its items (a copy made for a change gets room for one
// more), a split gives each half exactly its items, and a leaf that
// overflows by an append at its end keeps all but the new item. Only a
// generation of many inserts (a batch of thousands of tasks applying)
// gives the nodes it copies or splits their full room, as the leaves it
// touches once it is likely to touch again (see bulkInserts).
//
// Deletion is lazy: a leaf that empties goes, but nodes are not merged, so
// a tree that shrinks keeps some short nodes (which hold no room beyond
// their items). Keys in inner nodes may name deleted items; they still
// bound their children correctly.
//
// The zero value is not usable; make one with newTree.
type tree[K, T any] struct {
	root *treeNode[K, T]
	n    int
	gen  uint64 // nodes with this generation belong to this tree alone
	// inserts counts the inserts (not replacements) of this generation:
	// once there are many (a big batch applying), nodes copied or split
	// get their full room, so later inserts into them in the same
	// generation copy nothing.
	inserts int
	cmp     func(a, b K) int
	key     func(T) K
}

type treeNode[K, T any] struct {
	gen      uint64
	items    []T               // a leaf's items, in order
	keys     []K               // an inner node's: keys[i] bounds children[i+1] from below
	children []*treeNode[K, T] // nil for a leaf
}

// treeMaxItems bounds a leaf's items and an inner node's children: a
// change copies at most this many entries of each node on its path.
const treeMaxItems = 32

var treeGen atomic.Uint64

func newTree[K, T any](cmp func(a, b K) int, key func(T) K) *tree[K, T] {
	return &tree[K, T]{gen: treeGen.Add(1), cmp: cmp, key: key}
}

// Len is the number of items.
func (t *tree[K, T]) Len() int { return t.n }

// Clone returns a copy that later changes to either tree do not affect.
func (t *tree[K, T]) Clone() *tree[K, T] {
	c := *t
	t.gen, c.gen = treeGen.Add(1), treeGen.Add(1)
	t.inserts, c.inserts = 0, 0
	return &c
}

// leafPos is the position of k among a leaf's items and whether it is there.
func (t *tree[K, T]) leafPos(items []T, k K) (int, bool) {
	i := sort.Search(len(items), func(i int) bool { return t.cmp(t.key(items[i]), k) >= 0 })
	return i, i < len(items) && t.cmp(t.key(items[i]), k) == 0
}

// childPos is the child of an inner node whose range holds k.
func (t *tree[K, T]) childPos(keys []K, k K) int {
	return sort.Search(len(keys), func(i int) bool { return t.cmp(keys[i], k) > 0 })
}

// Get returns the item under k.
func (t *tree[K, T]) Get(k K) (T, bool) {
	n := t.root
	if n == nil {
		var zero T
		return zero, false
	}
	for n.children != nil {
		n = n.children[t.childPos(n.keys, k)]
	}
	i, ok := t.leafPos(n.items, k)
	if !ok {
		var zero T
		return zero, false
	}
	return n.items[i], true
}

// bulkInserts is how many inserts a generation takes before the nodes it
// copies get their full room. Below it (a transaction of a few objects)
// a copy is as long as its items plus one, which keeps a tree written one
// object at a time small; above it (thousands of tasks in one apply), a
// leaf that takes one insert is likely to take more, and growing it by
// an eighth at a time copied it again and again.
const bulkInserts = treeMaxItems

// room is how many more entries than its n a node copied or split now
// gets room for, when at least extra are needed.
func (t *tree[K, T]) room(n, extra int) int {
	if t.inserts >= bulkInserts {
		return max(extra, treeMaxItems+1-n)
	}
	return extra
}

// mutable returns n if this tree owns it, else a copy of it that it owns,
// with room for extra more entries (all it can hold during a bulk apply).
func (t *tree[K, T]) mutable(n *treeNode[K, T], extra int) *treeNode[K, T] {
	if n.gen == t.gen {
		return n
	}
	if n.children == nil {
		extra = t.room(len(n.items), extra)
	} else {
		extra = t.room(len(n.children), extra)
	}
	c := &treeNode[K, T]{gen: t.gen}
	if n.children == nil {
		c.items = append(make([]T, 0, len(n.items)+extra), n.items...)
	} else {
		c.keys = append(make([]K, 0, len(n.keys)+extra), n.keys...)
		c.children = append(make([]*treeNode[K, T], 0, len(n.children)+extra), n.children...)
	}
	return c
}

// ReplaceOrInsert puts item in the tree and returns the item it replaced.
func (t *tree[K, T]) ReplaceOrInsert(item T) (T, bool) {
	if t.root == nil {
		t.root = &treeNode[K, T]{gen: t.gen, items: []T{item}}
		t.n = 1
		var zero T
		return zero, false
	}
	t.root = t.mutable(t.root, 1)
	old, replaced, right, sep := t.insert(t.root, item)
	if right != nil {
		t.root = &treeNode[K, T]{gen: t.gen, keys: []K{sep}, children: []*treeNode[K, T]{t.root, right}}
	}
	if !replaced {
		t.n++
		// Replacements (status reports) need no room: only inserts
		// make a generation a bulk one.
		t.inserts++
	}
	return old, replaced
}

// insert puts item under n, which this tree owns. When n overflows, it
// splits and returns its new right sibling with that sibling's lower bound.
func (t *tree[K, T]) insert(n *treeNode[K, T], item T) (old T, replaced bool, right *treeNode[K, T], sep K) {
	k := t.key(item)
	if n.children == nil {
		i, found := t.leafPos(n.items, k)
		if found {
			old, n.items[i] = n.items[i], item
			return old, true, nil, sep
		}
		n.items = insertAt(n.items, i, item)
		if len(n.items) > treeMaxItems {
			// Split in the middle, or, when the item went to the end
			// (keys coming in order), leave this leaf full.
			m := len(n.items) / 2
			if i == len(n.items)-1 {
				m = i
			}
			var r []T
			n.items, r = splitAt(n.items, m, t.room(m, 0), t.room(len(n.items)-m, 0))
			right = &treeNode[K, T]{gen: t.gen, items: r}
			sep = t.key(r[0])
		}
		return old, false, right, sep
	}
	i := t.childPos(n.keys, k)
	c := t.mutable(n.children[i], 1)
	n.children[i] = c
	old, replaced, r, s := t.insert(c, item)
	if r == nil {
		return old, replaced, nil, sep
	}
	n.keys = insertAt(n.keys, i, s)
	n.children = insertAt(n.children, i+1, r)
	if len(n.children) > treeMaxItems {
		m := len(n.children) / 2
		if i+1 == len(n.children)-1 {
			m = i + 1
		}
		sep = n.keys[m-1]
		var rk []K
		var rc []*treeNode[K, T]
		left, rest := t.room(m, 0), t.room(len(n.children)-m, 0)
		n.children, rc = splitAt(n.children, m, left, rest)
		n.keys, rk = splitAt(n.keys, m-1, left, rest)
		rk = rk[1:] // sep moves up
		right = &treeNode[K, T]{gen: t.gen, keys: rk, children: rc}
	}
	return old, replaced, right, sep
}

// Delete removes the item under k and returns it.
func (t *tree[K, T]) Delete(k K) (T, bool) {
	old, ok := t.Get(k)
	if !ok {
		return old, false // nothing to copy for a miss
	}
	t.root = t.mutable(t.root, 0)
	t.remove(t.root, k)
	t.n--
	for t.root.children != nil && len(t.root.children) == 1 {
		t.root = t.root.children[0]
	}
	if t.root.children == nil && len(t.root.items) == 0 || t.root.children != nil && len(t.root.children) == 0 {
		t.root = nil
	}
	return old, true
}

// remove takes k (which is in the tree) out of n, which this tree owns.
func (t *tree[K, T]) remove(n *treeNode[K, T], k K) {
	if n.children == nil {
		i, _ := t.leafPos(n.items, k)
		n.items = deleteAt(n.items, i)
		return
	}
	i := t.childPos(n.keys, k)
	c := t.mutable(n.children[i], 0)
	n.children[i] = c
	t.remove(c, k)
	if c.children == nil && len(c.items) > 0 || c.children != nil && len(c.children) > 0 {
		return
	}
	// The child emptied: it goes, with the key that bounds it (or, for the
	// first child, the one that bounded the second, which becomes first).
	n.children = deleteAt(n.children, i)
	if len(n.keys) > 0 {
		n.keys = deleteAt(n.keys, max(i-1, 0))
	}
}

// Ascend calls fn for every item in order until fn returns false.
func (t *tree[K, T]) Ascend(fn func(T) bool) {
	if t.root != nil {
		t.ascend(t.root, nil, fn)
	}
}

// AscendGreaterOrEqual calls fn for the items from k on, in order, until
// fn returns false.
func (t *tree[K, T]) AscendGreaterOrEqual(k K, fn func(T) bool) {
	if t.root != nil {
		t.ascend(t.root, &k, fn)
	}
}

func (t *tree[K, T]) ascend(n *treeNode[K, T], from *K, fn func(T) bool) bool {
	if n.children == nil {
		i := 0
		if from != nil {
			i, _ = t.leafPos(n.items, *from)
		}
		for ; i < len(n.items); i++ {
			if !fn(n.items[i]) {
				return false
			}
		}
		return true
	}
	i := 0
	if from != nil {
		i = t.childPos(n.keys, *from)
	}
	if !t.ascend(n.children[i], from, fn) {
		return false
	}
	for _, c := range n.children[i+1:] {
		if !t.ascend(c, nil, fn) {
			return false
		}
	}
	return true
}

// insertAt inserts v at i, growing s by an eighth when it is full (append
// would double it, and the room would stay in the tree).
func insertAt[E any](s []E, i int, v E) []E {
	if len(s) == cap(s) {
		ns := make([]E, len(s)+1, len(s)+1+len(s)/8)
		copy(ns, s[:i])
		ns[i] = v
		copy(ns[i+1:], s[i:])
		return ns
	}
	s = s[:len(s)+1]
	copy(s[i+1:], s[i:])
	s[i] = v
	return s
}

// deleteAt removes the entry at i, giving back the room when over half of
// it is unused.
func deleteAt[E any](s []E, i int) []E {
	if n := len(s) - 1; cap(s) > 2*n+4 {
		ns := make([]E, n)
		copy(ns, s[:i])
		copy(ns[i:], s[i+1:])
		return ns
	}
	copy(s[i:], s[i+1:])
	var zero E
	s[len(s)-1] = zero // release what it referenced
	return s[:len(s)-1]
}

// splitAt returns s[:m] and s[m:], each in its own slice with room for
// extraLeft and extraRight more entries.
func splitAt[E any](s []E, m, extraLeft, extraRight int) ([]E, []E) {
	return append(make([]E, 0, m+extraLeft), s[:m]...), append(make([]E, 0, len(s)-m+extraRight), s[m:]...)
}
