package raftstore

import (
	"slices"
	"strings"
	"sync/atomic"

	"github.com/google/btree"
)

// record is what the state holds for one object: its encoded bytes, its
// index keys, and the decoded object once somebody has read it. Applying a
// change never decodes, so every member's apply path stays cheap.
type record struct {
	id      string
	version uint64
	data    []byte
	keys    [][]string
	obj     atomic.Pointer[Object]
}

// object decodes the record once; concurrent readers share the result.
func (r *record) object(c Codec, table string) (Object, error) {
	if p := r.obj.Load(); p != nil {
		return *p, nil
	}
	o, err := c.Unmarshal(table, r.data)
	if err != nil {
		return nil, err
	}
	o.SetObjectVersion(r.version)
	r.obj.CompareAndSwap(nil, &o)
	return *r.obj.Load(), nil
}

// idxEntry is one key of a secondary index. It names the record by ID, not
// by pointer, so an update that keeps its keys leaves the index untouched.
type idxEntry struct {
	key string
	id  string
}

func lessRecord(a, b *record) bool { return a.id < b.id }

func lessIdx(a, b idxEntry) bool {
	if a.key != b.key {
		return a.key < b.key
	}
	return a.id < b.id
}

// btreeDegree balances copy-on-write cost (nodes copied per write after a
// clone) against depth.
const btreeDegree = 16

// state is the in-memory database: per table a B-tree by ID and one per
// secondary index. Cloning is O(number of trees): the trees share nodes and
// copy them on write, so the FSM can publish an immutable snapshot after
// every applied batch and readers never take a lock.
type state struct {
	schema *Schema
	tables map[string]*tableState
}

type tableState struct {
	table *Table
	byID  *btree.BTreeG[*record]
	idx   map[string]*btree.BTreeG[idxEntry]
}

func newState(s *Schema) *state {
	st := &state{schema: s, tables: make(map[string]*tableState, len(s.Tables))}
	for i := range s.Tables {
		t := &s.Tables[i]
		ts := &tableState{table: t, byID: btree.NewG(btreeDegree, lessRecord), idx: map[string]*btree.BTreeG[idxEntry]{}}
		for name := range t.Indexes {
			ts.idx[name] = btree.NewG(btreeDegree, lessIdx)
		}
		st.tables[t.Name] = ts
	}
	return st
}

// clone returns a snapshot that later writes to st do not change. Only the
// writer may call it.
func (st *state) clone() *state {
	c := &state{schema: st.schema, tables: make(map[string]*tableState, len(st.tables))}
	for name, ts := range st.tables {
		nt := &tableState{table: ts.table, byID: ts.byID.Clone(), idx: make(map[string]*btree.BTreeG[idxEntry], len(ts.idx))}
		for in, tr := range ts.idx {
			nt.idx[in] = tr.Clone()
		}
		c.tables[name] = nt
	}
	return c
}

func (st *state) get(table, id string) *record {
	ts := st.tables[table]
	if ts == nil {
		return nil
	}
	r, _ := ts.byID.Get(&record{id: id})
	return r
}

// put inserts or replaces a record, keeping the indexes in step.
func (st *state) put(table string, r *record) {
	ts := st.tables[table]
	old, _ := ts.byID.ReplaceOrInsert(r)
	for i, name := range ts.table.indexNames {
		var was, now []string
		if old != nil && i < len(old.keys) {
			was = old.keys[i]
		}
		if i < len(r.keys) {
			now = r.keys[i]
		}
		if slices.Equal(was, now) {
			continue
		}
		tr := ts.idx[name]
		for _, k := range was {
			if !slices.Contains(now, k) {
				tr.Delete(idxEntry{key: k, id: r.id})
			}
		}
		for _, k := range now {
			tr.ReplaceOrInsert(idxEntry{key: k, id: r.id})
		}
	}
}

func (st *state) delete(table, id string) {
	ts := st.tables[table]
	if old, ok := ts.byID.Delete(&record{id: id}); ok {
		ts.unindex(old)
	}
}

func (ts *tableState) unindex(r *record) {
	for i, name := range ts.table.indexNames {
		if i >= len(r.keys) {
			break
		}
		tr := ts.idx[name]
		for _, k := range r.keys[i] {
			tr.Delete(idxEntry{key: k, id: r.id})
		}
	}
}

// scan calls fn for the records of a table matching an index lookup, in
// key then ID order; index IndexID with an empty value and no prefix lists
// the whole table.
func (st *state) scan(table, index, value string, prefix bool, fn func(*record) bool) {
	ts := st.tables[table]
	if index == IndexID {
		if value == "" {
			ts.byID.Ascend(fn)
			return
		}
		ts.byID.AscendGreaterOrEqual(&record{id: value}, func(r *record) bool {
			if prefix {
				return strings.HasPrefix(r.id, value) && fn(r)
			}
			return r.id == value && fn(r) && false
		})
		return
	}
	ts.idx[index].AscendGreaterOrEqual(idxEntry{key: value}, func(e idxEntry) bool {
		if prefix && !strings.HasPrefix(e.key, value) || !prefix && e.key != value {
			return false
		}
		r, ok := ts.byID.Get(&record{id: e.id})
		return !ok || fn(r)
	})
}
