package raftstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// BoltLogStore is a Raft log and stable store in one bbolt file. Each
// StoreLogs call is one bbolt transaction, so a batch of entries costs one
// fsync. With a Sealer, every entry is sealed before it reaches the file.
//
// It replaces raft-boltdb: raft-boltdb/v2 v2.3.1 does not build against raft
// v1.8.0, and sealing entries needs a hook in the store anyway.
type BoltLogStore struct {
	db     *bolt.DB
	path   string
	sealer Sealer
}

var (
	_ raft.LogStore    = (*BoltLogStore)(nil)
	_ raft.StableStore = (*BoltLogStore)(nil)

	bucketLogs   = []byte("logs")
	bucketStable = []byte("stable")
)

// OpenBoltLogStore opens (or creates) the store at path. It reads every
// entry once, so a damaged file is reported now, naming the file, instead of
// in the middle of replication.
func OpenBoltLogStore(path string, sealer Sealer) (s *BoltLogStore, err error) {
	if err := preflightBolt(path); err != nil {
		return nil, &CorruptError{File: path, Err: err}
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second, FreelistType: bolt.FreelistMapType, NoFreelistSync: true,
		// A large initial mapping (address space, not memory) spares the
		// remaps that copy every live value as the file grows.
		InitialMmapSize: 1 << 30})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("raftstore: %s is in use by another process", path)
		}
		return nil, &CorruptError{File: path, Err: err}
	}
	s = &BoltLogStore{db: db, path: path, sealer: sealer}
	defer func() {
		// bbolt may panic on pages it cannot make sense of.
		if r := recover(); r != nil {
			err = &CorruptError{File: path, Err: fmt.Errorf("%v", r)}
		}
		if err != nil {
			db.Close()
		}
	}()
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketLogs, bucketStable} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return nil, &CorruptError{File: path, Err: err}
	}
	if err := s.verify(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *BoltLogStore) verify() error {
	return s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketLogs).Cursor()
		var l raft.Log
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if err := s.decode(k, v, &l); err != nil {
				return err
			}
		}
		return nil
	})
}

// Close closes the file.
func (s *BoltLogStore) Close() error { return s.db.Close() }

// FirstIndex returns the first index written, 0 for none.
func (s *BoltLogStore) FirstIndex() (uint64, error) {
	var idx uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(bucketLogs).Cursor().First(); k != nil {
			idx = binary.BigEndian.Uint64(k)
		}
		return nil
	})
	return idx, err
}

// LastIndex returns the last index written, 0 for none.
func (s *BoltLogStore) LastIndex() (uint64, error) {
	var idx uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(bucketLogs).Cursor().Last(); k != nil {
			idx = binary.BigEndian.Uint64(k)
		}
		return nil
	})
	return idx, err
}

// GetLog reads one entry.
func (s *BoltLogStore) GetLog(index uint64, l *raft.Log) error {
	return s.db.View(func(tx *bolt.Tx) error {
		k := binary.BigEndian.AppendUint64(nil, index)
		v := tx.Bucket(bucketLogs).Get(k)
		if v == nil {
			return raft.ErrLogNotFound
		}
		return s.decode(k, v, l)
	})
}

// StoreLog writes one entry.
func (s *BoltLogStore) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

// StoreLogs writes entries in one transaction (one fsync).
func (s *BoltLogStore) StoreLogs(logs []*raft.Log) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLogs)
		for _, l := range logs {
			k := binary.BigEndian.AppendUint64(nil, l.Index)
			v, err := s.encode(k, l)
			if err != nil {
				return err
			}
			if err := b.Put(k, v); err != nil {
				return err
			}
		}
		return nil
	})
}

// DeleteRange removes entries min..max inclusive.
func (s *BoltLogStore) DeleteRange(lo, hi uint64) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketLogs).Cursor()
		for k, _ := c.Seek(binary.BigEndian.AppendUint64(nil, lo)); k != nil; k, _ = c.Next() {
			if binary.BigEndian.Uint64(k) > hi {
				break
			}
			if err := c.Delete(); err != nil {
				return err
			}
		}
		return nil
	})
}

// Set stores a stable value (term, vote).
func (s *BoltLogStore) Set(k, v []byte) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketStable).Put(k, v) })
}

// Get reads a stable value; raft expects "not found" for a missing key.
func (s *BoltLogStore) Get(k []byte) ([]byte, error) {
	var out []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketStable).Get(k)
		if v == nil {
			return errors.New("not found")
		}
		out = append([]byte(nil), v...)
		return nil
	})
	return out, err
}

// SetUint64 stores a stable number.
func (s *BoltLogStore) SetUint64(k []byte, v uint64) error {
	return s.Set(k, binary.BigEndian.AppendUint64(nil, v))
}

// GetUint64 reads a stable number; 0 when missing.
func (s *BoltLogStore) GetUint64(k []byte) (uint64, error) {
	v, err := s.Get(k)
	if err != nil || len(v) != 8 {
		return 0, nil
	}
	return binary.BigEndian.Uint64(v), nil
}

// firstKeyID is the ID of the data key that sealed the first entry: entries
// are sealed with the current key as they arrive and keys only move
// forward, so no entry uses an older one. ok is false for an empty or
// unsealed log.
func (s *BoltLogStore) firstKeyID() (id uint32, ok bool, err error) {
	if s.sealer == nil {
		return 0, false, nil
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		if _, v := tx.Bucket(bucketLogs).Cursor().First(); v != nil {
			id, ok = sealedKeyID(v)
		}
		return nil
	})
	return id, ok, err
}

// Entry encoding: byte format, uvarint term, byte type, varint appendedAt
// (unix ns), bytes data, bytes extensions; sealed as a whole when a Sealer
// is set, with the index as additional data.
const logFormat = 1

func (s *BoltLogStore) encode(k []byte, l *raft.Log) ([]byte, error) {
	b := appendRaftLog(make([]byte, 0, len(l.Data)+len(l.Extensions)+32), l)
	if s.sealer == nil {
		return b, nil
	}
	return s.sealer.Seal(make([]byte, 0, len(b)+sealHeaderLen+32), b, k)
}

func (s *BoltLogStore) decode(k, v []byte, l *raft.Log) error {
	index := binary.BigEndian.Uint64(k)
	if s.sealer != nil {
		plain, err := s.sealer.Open(nil, v, k)
		if err != nil {
			return &CorruptError{File: s.path, Err: fmt.Errorf("log entry %d: %w", index, err)}
		}
		v = plain
	} else {
		v = append([]byte(nil), v...) // bbolt memory is only valid inside the transaction
	}
	if err := parseRaftLog(index, v, l); err != nil {
		return &CorruptError{File: s.path, Err: err}
	}
	return nil
}

// appendRaftLog appends the encoding of a raft entry (all but its index,
// which is the key or the record header) to b.
func appendRaftLog(b []byte, l *raft.Log) []byte {
	b = append(b, logFormat)
	b = binary.AppendUvarint(b, l.Term)
	b = append(b, byte(l.Type))
	b = binary.AppendVarint(b, l.AppendedAt.UnixNano())
	b = binary.AppendUvarint(b, uint64(len(l.Data)))
	b = append(b, l.Data...)
	b = binary.AppendUvarint(b, uint64(len(l.Extensions)))
	return append(b, l.Extensions...)
}

// parseRaftLog decodes what appendRaftLog wrote; l's slices alias v.
func parseRaftLog(index uint64, v []byte, l *raft.Log) error {
	if len(v) == 0 || v[0] != logFormat {
		return fmt.Errorf("log entry %d: unknown format (encrypted data opened without a key?)", index)
	}
	d := decoder{buf: v[1:]}
	l.Index = index
	l.Term = d.uvarint()
	l.Type = raft.LogType(d.byte())
	if d.err == nil {
		ns, n := binary.Varint(d.buf)
		if n <= 0 {
			d.err = errShortEntry
		} else {
			d.buf = d.buf[n:]
			l.AppendedAt = time.Unix(0, ns)
		}
	}
	l.Data = d.bytes()
	l.Extensions = d.bytes()
	if d.err != nil {
		return fmt.Errorf("log entry %d: %w", index, d.err)
	}
	return nil
}

// preflightBolt checks that a bbolt file is as long as its meta pages say.
// bbolt maps the file into memory; reading a page past the end of a
// truncated file is a SIGBUS, which no recover can catch.
func preflightBolt(path string) error {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil || fi.Size() == 0 {
		return err
	}
	need, err := boltRequiredSize(path)
	if err != nil {
		return err
	}
	if fi.Size() < need {
		return fmt.Errorf("file has %d bytes but its metadata needs %d (truncated)", fi.Size(), need)
	}
	return nil
}

// boltRequiredSize reads a bbolt file's meta pages and returns the size its
// pages span (high-water page id times page size).
func boltRequiredSize(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	const (
		boltMagic   = 0xED0CDAED
		metaOffset  = 16 // page header
		magicOff    = metaOffset
		pageSizeOff = metaOffset + 8
		pgidOff     = metaOffset + 40
	)
	buf := make([]byte, 4096)
	var need int64
	pageSize := int64(0)
	for i := range 2 {
		off := int64(i) * pageSize
		if i == 1 && pageSize == 0 {
			off = 4096
		}
		if n, err := f.ReadAt(buf, off); n < pgidOff+8 {
			return 0, fmt.Errorf("meta page %d unreadable (file of %d bytes): %v", i, fi.Size(), err)
		}
		if binary.LittleEndian.Uint32(buf[magicOff:]) != boltMagic {
			continue
		}
		ps := int64(binary.LittleEndian.Uint32(buf[pageSizeOff:]))
		if i == 0 {
			pageSize = ps
		}
		need = max(need, int64(binary.LittleEndian.Uint64(buf[pgidOff:]))*ps)
	}
	if need == 0 {
		return 0, errors.New("not a bbolt database (no valid meta page)")
	}
	return need, nil
}
