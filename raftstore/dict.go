package raftstore

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"slices"
	"sync"
)

// dict is a compression dictionary of a table (Table.Compress): the encoding
// of one object of the table. Objects of a table share field names and
// many values, so an object written as copies from another one plus what
// differs shrinks several times (a 528-byte JSON task to about 70 bytes in
// about a microsecond). Dictionaries are immutable and named by a hash of
// their bytes, so every member derives the same one from the same bytes.
//
// The encoding (not S2's dictionary mode, whose 64 KiB table on the stack
// made every call grow the writer's stack, nor a general compressor: the
// history is only the dictionary):
//
//	uvarint  decoded length
//	ops      byte t; t&1 == 0: a literal of t>>1+1 bytes, which follow;
//	         t&1 == 1: a copy of t>>1+dictMinMatch bytes from the dictionary
//	         at a uvarint offset
type dict struct {
	id    uint64
	table string
	raw   []byte

	once  sync.Once
	index *[1 << dictHashBits]int32 // dictionary position by hash of dictMinMatch bytes (proposers only)
}

const (
	dictMinMatch = 5
	dictMaxMatch = 127 + dictMinMatch
	dictHashBits = 12
	// dictMaxBytes bounds a dictionary: offsets stay small, and the first
	// object of a table is what it is.
	dictMaxBytes = 64 << 10
)

// newDict makes a dictionary of raw (kept, not copied); nil when raw is too
// short or too long to be one.
func newDict(table string, raw []byte) *dict {
	if len(raw) < 2*dictMinMatch || len(raw) > dictMaxBytes {
		return nil
	}
	sum := sha256.Sum256(raw)
	// 0 means "not compressed" in entries and snapshots.
	return &dict{id: binary.LittleEndian.Uint64(sum[:]) | 1, table: table, raw: raw}
}

func dictHash(b []byte) uint32 {
	v := uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 | uint64(b[4])<<32
	return uint32(v * 0x9E3779B97F4A7C15 >> (64 - dictHashBits))
}

// compress returns data encoded against the dictionary, or nil when that
// would not be smaller.
func (d *dict) compress(data []byte) []byte {
	return d.compressInto(make([]byte, 0, len(data)/4+16), data)
}

// compressInto is compress writing into dst's room (from dst[:0]).
func (d *dict) compressInto(dst, data []byte) []byte {
	d.once.Do(func() {
		d.index = new([1 << dictHashBits]int32)
		for i := range d.index {
			d.index[i] = -1
		}
		for i := 0; i+dictMinMatch <= len(d.raw); i++ {
			d.index[dictHash(d.raw[i:])] = int32(i)
		}
	})
	out := binary.AppendUvarint(dst[:0], uint64(len(data)))
	lit, next := 0, -1 // next: the dictionary position after the last copy
	for i := 0; i+dictMinMatch <= len(data); {
		// Two candidates: where the last copy ended (objects alike: what
		// follows a match often matches too), and the last place in the
		// dictionary with the same next bytes. The longer match wins.
		cand, n := -1, 0
		for _, c := range [2]int{next, int(d.index[dictHash(data[i:])])} {
			if c < 0 || c+dictMinMatch > len(d.raw) {
				continue
			}
			m := 0
			for m < dictMaxMatch && i+m < len(data) && c+m < len(d.raw) && data[i+m] == d.raw[c+m] {
				m++
			}
			if m >= dictMinMatch && m > n {
				cand, n = c, m
			}
		}
		if cand < 0 {
			i++
			continue
		}
		out = appendLiterals(out, data[lit:i])
		out = append(out, byte(n-dictMinMatch)<<1|1)
		out = binary.AppendUvarint(out, uint64(cand))
		i += n
		lit, next = i, cand+n
		if len(out) >= len(data) {
			return nil
		}
	}
	out = appendLiterals(out, data[lit:])
	if len(out) >= len(data) {
		return nil
	}
	return out
}

func appendLiterals(out, lit []byte) []byte {
	for len(lit) > 0 {
		n := min(len(lit), 128)
		out = append(out, byte(n-1)<<1)
		out = append(out, lit[:n]...)
		lit = lit[n:]
	}
	return out
}

// decompress reverses compress. Damaged input is an error, never a panic
// or an unbounded allocation.
func (d *dict) decompress(data []byte) ([]byte, error) {
	n, k := binary.Uvarint(data)
	if k <= 0 || n > maxRecordBytes {
		return nil, errors.New("raftstore: compressed object is damaged (bad length)")
	}
	data = data[k:]
	out := make([]byte, 0, n)
	for len(data) > 0 {
		t := data[0]
		data = data[1:]
		if t&1 == 0 {
			l := int(t>>1) + 1
			if l > len(data) {
				return nil, errors.New("raftstore: compressed object is damaged (literal past the end)")
			}
			out = append(out, data[:l]...)
			data = data[l:]
		} else {
			l := uint64(t>>1) + dictMinMatch
			off, k := binary.Uvarint(data)
			if k <= 0 || off > uint64(len(d.raw)) || l > uint64(len(d.raw))-off {
				return nil, errors.New("raftstore: compressed object is damaged (copy outside the dictionary)")
			}
			data = data[k:]
			out = append(out, d.raw[off:off+l]...)
		}
		if uint64(len(out)) > n {
			return nil, errors.New("raftstore: compressed object is damaged (longer than it says)")
		}
	}
	if uint64(len(out)) != n {
		return nil, errors.New("raftstore: compressed object is damaged (shorter than it says)")
	}
	return out, nil
}

// dictSet holds the dictionaries a member has applied. It only grows (a
// table gets a new dictionary only when it had none), and it is shared by
// every version of the state: a record points at its dictionary directly.
type dictSet struct {
	mu    sync.RWMutex
	byID  map[uint64]*dict
	first map[string]*dict // per table, the first applied: what proposers use
	order []*dict          // as applied, for snapshots
}

func newDictSet() *dictSet {
	return &dictSet{byID: map[uint64]*dict{}, first: map[string]*dict{}}
}

// add registers a dictionary (idempotent) and returns it; nil when raw
// cannot be one.
func (s *dictSet) add(table string, raw []byte) *dict {
	d := newDict(table, raw)
	if d == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if have := s.byID[d.id]; have != nil {
		return have
	}
	d.raw = slices.Clone(raw) // raw may alias a log entry
	s.byID[d.id] = d
	s.order = append(s.order, d)
	if s.first[table] == nil {
		s.first[table] = d
	}
	return d
}

func (s *dictSet) get(id uint64) *dict {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.byID[id]
}

func (s *dictSet) forTable(table string) *dict {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.first[table]
}

// all returns the dictionaries in the order they were applied.
func (s *dictSet) all() []*dict {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return slices.Clone(s.order)
}
