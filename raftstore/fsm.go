package raftstore

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	memdb "github.com/hashicorp/go-memdb"
	"github.com/hashicorp/raft"
)

// fsm is the replicated state machine: an indexed in-memory database that
// every member applies the committed log to.
type fsm struct {
	schema *Schema
	logger *slog.Logger
	events *eventRing

	mu      sync.RWMutex // guards db, applied and appliedCh
	db      *memdb.MemDB
	applied uint64
	// appliedCh is closed and replaced after each apply, waking waiters.
	appliedCh chan struct{}
}

var (
	_ raft.BatchingFSM = (*fsm)(nil)
	_ raft.FSMSnapshot = (*fsmSnapshot)(nil)
)

func newFSM(schema *Schema, ring *eventRing, logger *slog.Logger) (*fsm, error) {
	db, err := newMemDB(schema)
	if err != nil {
		return nil, err
	}
	return &fsm{schema: schema, logger: logger, events: ring, db: db, appliedCh: make(chan struct{})}, nil
}

// view opens a read-only snapshot together with the index it reflects.
func (f *fsm) view() ReadTx {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return ReadTx{schema: f.schema, txn: f.db.Txn(false), index: f.applied}
}

func (f *fsm) appliedIndex() (uint64, <-chan struct{}) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.applied, f.appliedCh
}

func (f *fsm) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

// ApplyBatch applies many committed entries in one database transaction, so a
// burst of small writes costs one commit, not one each.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	results := make([]any, len(logs))
	f.mu.RLock()
	db := f.db
	f.mu.RUnlock()
	txn := db.Txn(true)
	var events []Event
	for i, l := range logs {
		if l.Type != raft.LogCommand {
			continue
		}
		results[i], events = f.applyEntry(txn, l, events)
	}
	txn.Commit()
	f.mu.Lock()
	f.applied = logs[len(logs)-1].Index
	close(f.appliedCh)
	f.appliedCh = make(chan struct{})
	f.mu.Unlock()
	f.events.append(events)
	return results
}

// applyEntry applies one entry. A transaction entry applies all its ops or,
// on the first conflict, none; a batch entry applies each op that does not
// conflict. Malformed entries are refused whole (never a panic).
func (f *fsm) applyEntry(txn *memdb.Txn, l *raft.Log, events []Event) (any, []Event) {
	kind, ops, err := decodeEntry(l.Data)
	if err != nil {
		f.logger.Error("raftstore: refusing malformed log entry", "index", l.Index, "err", err)
		return err, events
	}
	objs := make([]Object, len(ops))
	olds := make([]*record, len(ops))
	for i := range ops {
		o := &ops[i]
		if _, err := f.schema.table(o.table); err != nil {
			return err, events
		}
		if o.kind != opDelete {
			obj, err := f.schema.Codec.Unmarshal(o.table, o.data)
			if err != nil {
				return err, events
			}
			if obj.ObjectID() != o.id {
				return fmt.Errorf("raftstore: log entry %d: object ID %q does not match op ID %q", l.Index, obj.ObjectID(), o.id), events
			}
			obj.SetObjectVersion(l.Index)
			objs[i] = obj
		}
	}
	var res BatchResult
	for i := range ops {
		o := &ops[i]
		cur, err := getRecord(txn, o.table, o.id)
		if err != nil {
			return err, events
		}
		if conflict := checkOp(o, cur); conflict != nil {
			if kind == entryTx {
				return conflict, events
			}
			res.Conflicts = append(res.Conflicts, conflict)
			ops[i].kind = 0 // skipped
			continue
		}
		olds[i] = cur
		if kind == entryBatch {
			if err := f.write(txn, o, objs[i]); err != nil {
				return err, events
			}
		}
	}
	for i := range ops {
		o := &ops[i]
		if o.kind == 0 {
			continue
		}
		if kind == entryTx {
			if err := f.write(txn, o, objs[i]); err != nil {
				return err, events
			}
		}
		ev := Event{Index: l.Index, Table: o.table, ID: o.id, Object: objs[i]}
		if olds[i] != nil {
			ev.Old = olds[i].obj
		}
		switch o.kind {
		case opCreate:
			ev.Kind = Created
		case opUpdate:
			ev.Kind = Updated
		case opDelete:
			ev.Kind = Deleted
		}
		events = append(events, ev)
		res.Applied++
	}
	if kind == entryBatch {
		return res, events
	}
	return nil, events
}

func checkOp(o *op, cur *record) *ConflictError {
	var actual uint64
	if cur != nil {
		actual = cur.obj.ObjectVersion()
	}
	switch {
	case o.kind == opCreate && cur == nil:
		return nil
	case o.kind != opCreate && cur != nil && actual == o.expect:
		return nil
	}
	return &ConflictError{Table: o.table, ID: o.id, Expected: o.expect, Actual: actual}
}

func (f *fsm) write(txn *memdb.Txn, o *op, obj Object) error {
	if o.kind == opDelete {
		_, err := txn.DeleteAll(o.table, IndexID, o.id)
		return err
	}
	return txn.Insert(o.table, &record{table: o.table, id: o.id, obj: obj})
}

// Snapshot format: magic, uvarint index, then records (byte 1, string table,
// uvarint version, bytes data) and a terminating byte 0.
const snapshotMagic = "SHOALSS1"

// maxRecordBytes bounds one object in a snapshot, so a corrupt length cannot
// make a restore allocate without limit.
const maxRecordBytes = 256 << 20

func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return &fsmSnapshot{schema: f.schema, txn: f.db.Txn(false), index: f.applied}, nil
}

type fsmSnapshot struct {
	schema *Schema
	txn    *memdb.Txn
	index  uint64
}

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	w := bufio.NewWriterSize(sink, 256<<10)
	err := s.write(w)
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *fsmSnapshot) write(w *bufio.Writer) error {
	buf := append([]byte(snapshotMagic), 0)[:len(snapshotMagic)]
	buf = binary.AppendUvarint(buf, s.index)
	if _, err := w.Write(buf); err != nil {
		return err
	}
	for _, table := range s.schema.tableNames() {
		it, err := s.txn.Get(table, IndexID)
		if err != nil {
			return err
		}
		for raw := it.Next(); raw != nil; raw = it.Next() {
			r := raw.(*record)
			data, err := s.schema.Codec.Marshal(table, r.obj)
			if err != nil {
				return err
			}
			buf = append(buf[:0], 1)
			buf = appendString(buf, table)
			buf = binary.AppendUvarint(buf, r.obj.ObjectVersion())
			buf = binary.AppendUvarint(buf, uint64(len(data)))
			if _, err := w.Write(buf); err != nil {
				return err
			}
			if _, err := w.Write(data); err != nil {
				return err
			}
		}
	}
	return w.WriteByte(0)
}

func (s *fsmSnapshot) Release() {}

// Restore replaces the whole state with a snapshot's. Watchers are told to
// resync, since the changes between their position and the snapshot are gone.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	db, index, err := readSnapshot(f.schema, bufio.NewReaderSize(rc, 256<<10))
	if err != nil {
		return fmt.Errorf("raftstore: restore snapshot: %w", err)
	}
	f.mu.Lock()
	f.db = db
	f.applied = index
	close(f.appliedCh)
	f.appliedCh = make(chan struct{})
	f.mu.Unlock()
	f.events.reset(index)
	return nil
}

func readSnapshot(schema *Schema, r *bufio.Reader) (*memdb.MemDB, uint64, error) {
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != snapshotMagic {
		return nil, 0, errors.New("not a shoal snapshot (bad header)")
	}
	index, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, 0, fmt.Errorf("snapshot header: %w", err)
	}
	db, err := newMemDB(schema)
	if err != nil {
		return nil, 0, err
	}
	txn := db.Txn(true)
	defer txn.Abort()
	var data []byte
	for n := 0; ; n++ {
		tag, err := r.ReadByte()
		if err != nil {
			return nil, 0, fmt.Errorf("snapshot truncated after %d records: %w", n, err)
		}
		if tag == 0 {
			break
		}
		if tag != 1 {
			return nil, 0, fmt.Errorf("snapshot record %d: bad tag %d", n, tag)
		}
		table, err := readBytes(r, 1<<10, nil)
		if err != nil {
			return nil, 0, fmt.Errorf("snapshot record %d: %w", n, err)
		}
		version, err := binary.ReadUvarint(r)
		if err != nil {
			return nil, 0, fmt.Errorf("snapshot record %d: %w", n, err)
		}
		if data, err = readBytes(r, maxRecordBytes, data); err != nil {
			return nil, 0, fmt.Errorf("snapshot record %d: %w", n, err)
		}
		obj, err := schema.Codec.Unmarshal(string(table), data)
		if err != nil {
			return nil, 0, fmt.Errorf("snapshot record %d: %w", n, err)
		}
		obj.SetObjectVersion(version)
		if err := txn.Insert(string(table), &record{table: string(table), id: obj.ObjectID(), obj: obj}); err != nil {
			return nil, 0, fmt.Errorf("snapshot record %d: %w", n, err)
		}
	}
	txn.Commit()
	return db, index, nil
}

func readBytes(r *bufio.Reader, limit uint64, buf []byte) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, err
	}
	if n > limit {
		return nil, fmt.Errorf("length %d over the limit %d", n, limit)
	}
	if uint64(cap(buf)) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	_, err = io.ReadFull(r, buf)
	return buf, err
}
