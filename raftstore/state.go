package raftstore

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"unsafe"
)

// record is what the state holds for one object: its encoded bytes, its
// index keys, and the decoded object once somebody has read it. Applying a
// change never decodes, so every member's apply path stays cheap.
//
// The ID and the keys (encoded as in log entries) share one string, ident;
// index entries point into it. A new version of an object whose keys did
// not change takes over the previous version's ident, so the index entries
// it leaves in place pin nothing the record does not hold itself; one whose
// keys changed rewrites its entries.
//
// ident and data are held as pointers with their lengths side by side, so
// the struct is 48 bytes (an allocation size class): as a string and a
// slice it was 64. A member holds one record per object: the 16 bytes
// were about 6% of what it holds per small object (BenchmarkMemoryPerObject).
type record struct {
	// identP points at ident: uvarint len(ID), the ID, then appendKeys's
	// encoding of the index keys.
	identP *byte
	// dataP points at data: the object as stored (compressed with dict
	// when that is set). Never written through: records are shared.
	dataP         *byte
	identN, dataN uint32
	version       uint64
	// dict, when set, is the dictionary data is compressed with.
	dict *dict
	obj  atomic.Pointer[Object]
}

// newRecord makes a record, with its ident in one allocation; it keeps
// data (not a copy). Its lengths fit 32 bits: decodeEntry refuses an
// entry over 4 GiB, and a snapshot's reader a record over maxRecordBytes.
func newRecord(id string, keys []byte, version uint64, data []byte, d *dict) *record {
	var n [binary.MaxVarintLen64]byte
	prefix := binary.AppendUvarint(n[:0], uint64(len(id)))
	var b strings.Builder
	b.Grow(len(prefix) + len(id) + len(keys))
	b.Write(prefix)
	b.WriteString(id)
	b.Write(keys)
	r := &record{version: version, dict: d}
	r.setIdent(b.String())
	r.dataP, r.dataN = unsafe.SliceData(data), uint32(len(data))
	return r
}

// ident is the ID and the index keys, encoded (see record).
func (r *record) ident() string { return unsafe.String(r.identP, r.identN) }

func (r *record) setIdent(s string) { r.identP, r.identN = unsafe.StringData(s), uint32(len(s)) }

// data is the object as stored; read only.
func (r *record) data() []byte { return unsafe.Slice(r.dataP, r.dataN) }

// id is the object's ID.
func (r *record) id() string {
	ident := r.ident()
	n, p := uvarintAt(ident, 0)
	if p < 0 || uint64(len(ident)-p) < n {
		return ""
	}
	return ident[p : p+int(n)]
}

// keys is the encoded index keys.
func (r *record) keys() string {
	ident := r.ident()
	n, p := uvarintAt(ident, 0)
	if p < 0 || uint64(len(ident)-p) < n {
		return ""
	}
	return ident[p+int(n):]
}

// keyList appends index i's keys from an encoded key set to buf; the
// strings share enc's memory. A malformed set yields what could be read.
func keyList(enc string, i int, buf []string) []string {
	eachKey(enc, i, func(_ int, k string) { buf = append(buf, k) })
	return buf
}

// eachKey calls fn with each of index i's keys in an encoded key set and
// the position of its uvarint length in enc. A malformed set yields what
// could be read.
func eachKey(enc string, i int, fn func(at int, key string)) {
	n, p := uvarintAt(enc, 0)
	for j := uint64(0); j < n && p >= 0; j++ {
		var m uint64
		m, p = uvarintAt(enc, p)
		for range m {
			at := p
			var l uint64
			if l, p = uvarintAt(enc, p); p < 0 || uint64(len(enc)-p) < l {
				return
			}
			if j == uint64(i) {
				fn(at, enc[p:p+int(l)])
			}
			p += int(l)
		}
		if j == uint64(i) {
			break
		}
	}
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
	data := r.data()
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
//
// Both the ID and the key are read from the record's ident (see record),
// which holds each behind its uvarint length: the entry is a pointer to the
// ident and the key's position in it, 16 bytes where two strings were 32.
// A secondary index holds one entry per key of every object: with two
// indexes the 32 bytes saved were a tenth of what a member holds per small
// object (BenchmarkMemoryPerObject). Entries are made only where a whole
// key is (indexEntries, probe).
type idxEntry struct {
	ident *byte
	at    uint32
}

// id is the ID of the entry's object.
func (e idxEntry) id() string { return lenPrefixedAt(e.ident, 0) }

// key is the entry's index key.
func (e idxEntry) key() string { return lenPrefixedAt(e.ident, e.at) }

// lenPrefixedAt returns the string whose uvarint length is at p+at.
func lenPrefixedAt(p *byte, at uint32) string {
	q := unsafe.Add(unsafe.Pointer(p), at)
	var n uint64
	for shift := 0; ; shift += 7 {
		c := *(*byte)(q)
		q = unsafe.Add(q, 1)
		n |= uint64(c&0x7f) << shift
		if c < 0x80 {
			break
		}
	}
	return unsafe.String((*byte)(q), n)
}

// indexEntries appends r's entries in the table's i-th secondary index.
func (r *record) indexEntries(i int, buf []idxEntry) []idxEntry {
	ident := r.ident()
	base := len(ident) - len(r.keys())
	eachKey(ident[base:], i, func(at int, _ string) {
		buf = append(buf, idxEntry{ident: r.identP, at: uint32(base + at)})
	})
	return buf
}

// probe is an entry for key with an empty ID, which sorts before every
// object's entry under key: where a lookup of key starts.
func probe(key string) idxEntry {
	s := appendString([]byte{0}, key)
	return idxEntry{ident: unsafe.SliceData(s), at: 1}
}

func recordID(r *record) string { return r.id() }

func cmpIdx(a, b idxEntry) int {
	if c := strings.Compare(a.key(), b.key()); c != 0 {
		return c
	}
	return strings.Compare(a.id(), b.id())
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
	ts.reindex(old, r)
}

// reindex moves the index entries of old (nil for a new object) to r.
func (ts *tableState) reindex(old, r *record) {
	if old != nil && r.ident() == old.ident() {
		// Equal strings; r is not visible to readers before the next publish.
		r.identP = old.identP
		return
	}
	var wasBuf, nowBuf [4]idxEntry
	for i, name := range ts.table.indexNames {
		var was []idxEntry
		if old != nil {
			was = old.indexEntries(i, wasBuf[:0])
		}
		now := r.indexEntries(i, nowBuf[:0])
		tr := ts.idx[name]
		for _, e := range was {
			if !slices.ContainsFunc(now, func(n idxEntry) bool { return n.key() == e.key() }) {
				tr.Delete(e)
			}
		}
		// Entries that stay are replaced too, so that they point at r's
		// ident, not the old version's.
		for _, e := range now {
			tr.ReplaceOrInsert(e)
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
	var buf [4]idxEntry
	for i, name := range ts.table.indexNames {
		tr := ts.idx[name]
		for _, e := range r.indexEntries(i, buf[:0]) {
			tr.Delete(e)
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
	ts.idx[index].AscendGreaterOrEqual(probe(value), func(e idxEntry) bool {
		if k := e.key(); prefix && !strings.HasPrefix(k, value) || !prefix && k != value {
			return false
		}
		r, ok := ts.byID.Get(e.id())
		return !ok || fn(r)
	})
}
