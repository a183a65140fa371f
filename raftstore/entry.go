package raftstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// The log entry format is a small hand-rolled binary encoding: the entries are
// on the hot path of every write and of every replica's apply.
//
//	byte    format (entryFormat)
//	byte    kind (entryTx or entryBatch)
//	uint32  number of ops (big endian; fixed width so a batch can fill it in last)
//	ops:    byte op, string table, string id, uvarint expected version,
//	        byte compression (0 none, 1 dictionary: then uint64 dictionary ID),
//	        bytes data, uvarint index count, per index: uvarint key count, strings
//
// The proposer computes the index keys, so members index an object without
// decoding it; they decode on first read. An opDict op carries a table's
// compression dictionary (in data); it comes before the first op that uses
// it, in the same entry or an earlier one. Format 1 (before compression)
// had no compression byte; it is still read.
const (
	entryFormat   = 2
	entryFormatV1 = 1
)

type entryKind byte

const (
	entryTx    entryKind = 1 // all ops or none
	entryBatch entryKind = 2 // each op on its own; conflicts are skipped and reported
)

type opKind byte

const (
	opCreate opKind = 1
	opUpdate opKind = 2
	opDelete opKind = 3
	opDict   opKind = 4 // a compression dictionary for table
)

type op struct {
	kind   opKind
	table  string
	id     string
	expect uint64     // version the change is based on; 0 for create
	dictID uint64     // data is compressed with this dictionary; 0: not compressed
	data   []byte     // encoded object (create, update)
	keys   [][]string // secondary index keys, in the table's index order (proposer side)
	// keysRaw is keys as encoded in the entry (member side, from decodeEntry).
	keysRaw []byte
	obj     Object // the caller's object, proposer side only
}

var errShortEntry = errors.New("raftstore: log entry truncated")

func appendOp(b []byte, o *op) []byte {
	b = append(b, byte(o.kind))
	b = appendString(b, o.table)
	b = appendString(b, o.id)
	b = binary.AppendUvarint(b, o.expect)
	if o.dictID != 0 {
		b = append(b, 1)
		b = binary.LittleEndian.AppendUint64(b, o.dictID)
	} else {
		b = append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(o.data)))
	b = append(b, o.data...)
	return appendKeys(b, o.keys)
}

func appendKeys(b []byte, keys [][]string) []byte {
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, ks := range keys {
		b = binary.AppendUvarint(b, uint64(len(ks)))
		for _, k := range ks {
			b = appendString(b, k)
		}
	}
	return b
}

// keysRaw checks an encoded key set and returns its bytes.
func (d *decoder) keysRaw() []byte {
	start := d.buf
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.buf)) {
		d.err = errShortEntry
		return nil
	}
	for range n {
		m := d.uvarint()
		if d.err != nil || m > uint64(len(d.buf)) {
			d.err = errShortEntry
			return nil
		}
		for range m {
			d.bytes()
		}
	}
	if d.err != nil {
		return nil
	}
	return start[:len(start)-len(d.buf)]
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

const entryHeaderLen = 6

// newEntry returns an entry buffer with room for the header; setCount
// completes it.
func newEntry(kind entryKind, capacity int) []byte {
	b := make([]byte, entryHeaderLen, max(capacity, 64))
	b[0], b[1] = entryFormat, byte(kind)
	return b
}

// appendEntryHeader starts an entry in buf (as newEntry, in a buffer of
// the caller's).
func appendEntryHeader(buf []byte, kind entryKind) []byte {
	var h [entryHeaderLen]byte
	h[0], h[1] = entryFormat, byte(kind)
	return append(buf, h[:]...)
}

func setCount(entry []byte, n int) { binary.BigEndian.PutUint32(entry[2:], uint32(n)) }

// decodeEntry parses an entry; op data slices alias buf.
func decodeEntry(buf []byte) (entryKind, []op, error) {
	if len(buf) < 2 {
		return 0, nil, errShortEntry
	}
	if uint64(len(buf)) > math.MaxUint32 {
		// Records keep 32-bit lengths (newRecord).
		return 0, nil, fmt.Errorf("raftstore: a log entry of %d bytes, over 4 GiB", len(buf))
	}
	if buf[0] != entryFormat && buf[0] != entryFormatV1 {
		return 0, nil, fmt.Errorf("raftstore: unknown log entry format %d (written by a newer version?)", buf[0])
	}
	compression := buf[0] != entryFormatV1
	kind := entryKind(buf[1])
	if kind != entryTx && kind != entryBatch {
		return 0, nil, fmt.Errorf("raftstore: unknown log entry kind %d", kind)
	}
	if len(buf) < entryHeaderLen {
		return 0, nil, errShortEntry
	}
	n := uint64(binary.BigEndian.Uint32(buf[2:]))
	d := decoder{buf: buf[entryHeaderLen:]}
	if n > uint64(len(buf)) {
		return 0, nil, errShortEntry
	}
	ops := make([]op, n)
	for i := range ops {
		o := &ops[i]
		o.kind = opKind(d.byte())
		o.table = d.string()
		o.id = d.string()
		o.expect = d.uvarint()
		if compression {
			o.dictID = d.dict()
		}
		o.data = d.bytes()
		o.keysRaw = d.keysRaw()
		if d.err != nil {
			return 0, nil, d.err
		}
		if o.kind < opCreate || o.kind > opDict {
			return 0, nil, fmt.Errorf("raftstore: unknown op %d in log entry", o.kind)
		}
	}
	return kind, ops, nil
}

type decoder struct {
	buf []byte
	err error
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.buf) < 1 {
		d.err = errShortEntry
		return 0
	}
	c := d.buf[0]
	d.buf = d.buf[1:]
	return c
}

// dict reads a compression byte and, for 1, the dictionary ID.
func (d *decoder) dict() uint64 {
	switch d.byte() {
	case 0:
		return 0
	case 1:
		if d.err != nil || len(d.buf) < 8 {
			d.err = errShortEntry
			return 0
		}
		id := binary.LittleEndian.Uint64(d.buf)
		d.buf = d.buf[8:]
		if id == 0 {
			d.err = errors.New("raftstore: compressed data names dictionary 0")
		}
		return id
	}
	if d.err == nil {
		d.err = errors.New("raftstore: unknown compression")
	}
	return 0
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.buf)
	if n <= 0 {
		d.err = errShortEntry
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.buf)) {
		d.err = errShortEntry
		return nil
	}
	b := d.buf[:n:n]
	d.buf = d.buf[n:]
	return b
}

func (d *decoder) string() string { return string(d.bytes()) }
