package raftstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"os"
	"slices"
	"sort"
	"sync"

	"golang.org/x/sys/unix"
)

// stableFile keeps a few small values (raft's term and vote, the WAL's
// first index) in two fixed slots of one file. Each write fills the slot
// the previous one did not use and syncs it once: a write torn by a crash
// leaves the other slot, the previous state, intact. raft only relies on a
// Set after it returned, so losing a torn Set is safe.
//
// Slot layout: magic, uint64 sequence, uint32 count, entries (uint16 key
// length, key, uint32 value length, value), then a CRC-32C of all that.
type stableFile struct {
	path string
	f    *os.File

	mu   sync.Mutex
	seq  uint64
	vals map[string][]byte
}

const (
	stableMagic    = "SHOALST1"
	stableSlotSize = 4096
)

var errStableTooLarge = errors.New("raftstore: stable values exceed one 4 KiB slot")

func openStableFile(path string) (*stableFile, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("raftstore: open %s: %w", path, err)
	}
	s := &stableFile{path: path, f: f, vals: map[string][]byte{}}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if fi.Size() == 0 {
		// An empty slot 0 first, so that a crash tearing the very first
		// set still leaves one valid slot (an empty store), not a file
		// that looks damaged.
		if err := s.write(0, s.vals); err != nil {
			f.Close()
			return nil, err
		}
		return s, nil
	}
	var best *stableSlot
	var errs []error
	for i := range 2 {
		buf := make([]byte, stableSlotSize)
		n, _ := f.ReadAt(buf, int64(i)*stableSlotSize)
		slot, err := parseStableSlot(buf[:n])
		if err != nil {
			errs = append(errs, fmt.Errorf("slot %d: %w", i, err))
			continue
		}
		if best == nil || slot.seq > best.seq {
			best = slot
		}
	}
	if best == nil {
		f.Close()
		return nil, &CorruptError{File: path, Err: errors.Join(errs...)}
	}
	s.seq, s.vals = best.seq, best.vals
	return s, nil
}

type stableSlot struct {
	seq  uint64
	vals map[string][]byte
}

func parseStableSlot(b []byte) (*stableSlot, error) {
	if len(b) < len(stableMagic)+12+4 || string(b[:len(stableMagic)]) != stableMagic {
		return nil, errors.New("no valid header (never written, or overwritten)")
	}
	p := b[len(stableMagic):]
	seq := binary.LittleEndian.Uint64(p)
	n := binary.LittleEndian.Uint32(p[8:])
	p = p[12:]
	vals := map[string][]byte{}
	for range n {
		if len(p) < 2 {
			return nil, errShortEntry
		}
		kl := int(binary.LittleEndian.Uint16(p))
		p = p[2:]
		if len(p) < kl+4 {
			return nil, errShortEntry
		}
		k := string(p[:kl])
		vl := int(binary.LittleEndian.Uint32(p[kl:]))
		p = p[kl+4:]
		if len(p) < vl {
			return nil, errShortEntry
		}
		vals[k] = slices.Clone(p[:vl])
		p = p[vl:]
	}
	body := len(b) - len(p)
	if len(p) < 4 || crc32.Checksum(b[:body], castagnoli) != binary.LittleEndian.Uint32(p) {
		return nil, errors.New("checksum mismatch (torn or damaged)")
	}
	return &stableSlot{seq: seq, vals: vals}, nil
}

func (s *stableFile) get(k string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.vals[k]
	return slices.Clone(v), ok
}

// set stores k=v durably before it returns.
func (s *stableFile) set(k string, v []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.vals[k]; ok && string(old) == string(v) {
		return nil
	}
	vals := maps.Clone(s.vals)
	vals[k] = slices.Clone(v)
	if err := s.write(s.seq+1, vals); err != nil {
		return err
	}
	s.seq, s.vals = s.seq+1, vals
	return nil
}

// write stores vals in the slot of seq and syncs it.
func (s *stableFile) write(seq uint64, vals map[string][]byte) error {
	buf := make([]byte, 0, stableSlotSize)
	buf = append(buf, stableMagic...)
	buf = binary.LittleEndian.AppendUint64(buf, seq)
	buf = binary.LittleEndian.AppendUint32(buf, uint32(len(vals)))
	keys := make([]string, 0, len(vals))
	for key := range vals {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	for _, key := range keys {
		buf = binary.LittleEndian.AppendUint16(buf, uint16(len(key)))
		buf = append(buf, key...)
		buf = binary.LittleEndian.AppendUint32(buf, uint32(len(vals[key])))
		buf = append(buf, vals[key]...)
	}
	buf = binary.LittleEndian.AppendUint32(buf, crc32.Checksum(buf, castagnoli))
	if len(buf) > stableSlotSize {
		return errStableTooLarge
	}
	if _, err := s.f.WriteAt(buf, int64(seq%2)*stableSlotSize); err != nil {
		return fmt.Errorf("raftstore: write %s: %w", s.path, err)
	}
	if err := unix.Fdatasync(int(s.f.Fd())); err != nil {
		return fmt.Errorf("raftstore: sync %s: %w", s.path, err)
	}
	return nil
}

func (s *stableFile) close() error { return s.f.Close() }
