package raftstore

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
)

// record is what the state holds for one object: its encoded bytes, its
// index keys, and the decoded object once somebody has read it. Applying a
// change never decodes, so every member's apply path stays cheap.
//
// The ID and the keys (encoded as in log entries) share one string, ident;
// index entries hold substrings of it. A new version of an object whose
// keys did not change takes over the previous version's ident, so the index
// entries it leaves in place pin nothing the record does not hold itself;
// one whose keys changed rewrites its entries. The struct is 64 bytes (an
// allocation size class; the separate ID and keys strings made it 80).
type record struct {
	// ident is uvarint len(ID), the ID, then appendKeys's encoding of the
	// index keys.
	ident   string
	data    []byte
	version uint64
	// dict, when set, is the dictionary data is compressed with.
	dict *dict
	obj  atomic.Pointer[Object]
}

// newRecord makes a record, with its ident in one allocation.
func newRecord(id string, keys []byte, version uint64, data []byte, d *dict) *record {
	var b strings.Builder
	b.Grow(binary.MaxVarintLen64 + len(id) + len(keys))
	var n [binary.MaxVarintLen64]byte
	b.Write(binary.AppendUvarint(n[:0], uint64(len(id))))
	b.WriteString(id)
	b.Write(keys)
	return &record{ident: b.String(), version: version, data: data, dict: d}
}

// id is the object's ID.
func (r *record) id() string {
	n, p := uvarintAt(r.ident, 0)
	if p < 0 || uint64(len(r.ident)-p) < n {
		return ""
	}
	return r.ident[p : p+int(n)]
}

// keys is the encoded index keys.
func (r *record) keys() string {
	n, p := uvarintAt(r.ident, 0)
	if p < 0 || uint64(len(r.ident)-p) < n {
		return ""
	}
	return r.ident[p+int(n):]
}

// indexKeys appends the keys of the table's i-th secondary index to buf.
func (r *record) indexKeys(i int, buf []string) []string {
	return keyList(r.keys(), i, buf)
}

// keyList appends index i's keys from an encoded key set to buf; the
// strings share enc's memory. A malformed set yields what could be read.
func keyList(enc string, i int, buf []string) []string {
	n, p := uvarintAt(enc, 0)
	for j := uint64(0); j < n && p >= 0; j++ {
		var m uint64
		m, p = uvarintAt(enc, p)
		for range m {
			var l uint64
			if l, p = uvarintAt(enc, p); p < 0 || uint64(len(enc)-p) < l {
				return buf
			}
			if j == uint64(i) {
				buf = append(buf, enc[p:p+int(l)])
			}
			p += int(l)
		}
		if j == uint64(i) {
			break
		}
	}
	return buf
}

// uvarintAt reads a uvarint at p; the new position is -1 on a bad one.
func uvarintAt(s string, p int) (uint64, int) {
	if p < 0 {
		return 0, -1
	}
	var v uint64
	for shift := uint(0); p < len(s) && shift < 64; shift += 7 {
		c := s[p]
		p++
		v |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return v, p
		}
	}
	return 0, -1
}

// object decodes the record once; concurrent readers share the result.
func (r *record) object(c Codec, table string) (Object, error) {
	if p := r.obj.Load(); p != nil {
		return *p, nil
	}
	data := r.data
	if r.dict != nil {
		var err error
		if data, err = r.dict.decompress(data); err != nil {
			return nil, fmt.Errorf("%w (%s/%s)", err, table, r.id())
		}
	}
	o, err := c.Unmarshal(table, data)
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

func recordID(r *record) string { return r.id() }

func cmpIdx(a, b idxEntry) int {
	if c := strings.Compare(a.key, b.key); c != 0 {
		return c
	}
	return strings.Compare(a.id, b.id)
}

func sameIdx(e idxEntry) idxEntry { return e }

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
	byID  *tree[string, *record]
	idx   map[string]*tree[idxEntry, idxEntry]
}

func newState(s *Schema) *state {
	st := &state{schema: s, tables: make(map[string]*tableState, len(s.Tables))}
	for i := range s.Tables {
		t := &s.Tables[i]
		ts := &tableState{table: t, byID: newTree(strings.Compare, recordID), idx: map[string]*tree[idxEntry, idxEntry]{}}
		for name := range t.Indexes {
			ts.idx[name] = newTree(cmpIdx, sameIdx)
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
		nt := &tableState{table: ts.table, byID: ts.byID.Clone(), idx: make(map[string]*tree[idxEntry, idxEntry], len(ts.idx))}
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
	r, _ := ts.byID.Get(id)
	return r
}

// put inserts or replaces a record, keeping the indexes in step.
func (st *state) put(table string, r *record) {
	ts := st.tables[table]
	old, _ := ts.byID.ReplaceOrInsert(r)
	if old != nil && r.ident == old.ident {
		// Equal strings; r is not visible to readers before the next publish.
		r.ident = old.ident
		return
	}
	id := r.id()
	var wasBuf, nowBuf [4]string
	for i, name := range ts.table.indexNames {
		var was []string
		if old != nil {
			was = old.indexKeys(i, wasBuf[:0])
		}
		now := r.indexKeys(i, nowBuf[:0])
		tr := ts.idx[name]
		for _, k := range was {
			if !slices.Contains(now, k) {
				tr.Delete(idxEntry{key: k, id: id})
			}
		}
		// Entries that stay are replaced too, so that they hold r's
		// strings, not the old version's.
		for _, k := range now {
			tr.ReplaceOrInsert(idxEntry{key: k, id: id})
		}
	}
}

func (st *state) delete(table, id string) {
	ts := st.tables[table]
	if old, ok := ts.byID.Delete(id); ok {
		ts.unindex(old)
	}
}

func (ts *tableState) unindex(r *record) {
	var buf [4]string
	for i, name := range ts.table.indexNames {
		tr := ts.idx[name]
		for _, k := range r.indexKeys(i, buf[:0]) {
			tr.Delete(idxEntry{key: k, id: r.id()})
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
		ts.byID.AscendGreaterOrEqual(value, func(r *record) bool {
			if prefix {
				return strings.HasPrefix(r.id(), value) && fn(r)
			}
			return r.id() == value && fn(r) && false
		})
		return
	}
	ts.idx[index].AscendGreaterOrEqual(idxEntry{key: value}, func(e idxEntry) bool {
		if prefix && !strings.HasPrefix(e.key, value) || !prefix && e.key != value {
			return false
		}
		r, ok := ts.byID.Get(e.id)
		return !ok || fn(r)
	})
}
