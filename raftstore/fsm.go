package raftstore

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"

	"github.com/hashicorp/raft"
)

// fsm is the replicated state machine: an indexed in-memory database that
// every member applies the committed log to.
type fsm struct {
	schema *Schema
	logger *slog.Logger
	events *eventRing
	dicts  *dictSet
	handed handover // objects of this member's proposals, until applied
	// durable, when set, waits until the log holds every entry up to an
	// index on stable storage. The leader's appends may still be syncing
	// when their entries commit (see WAL.StoreLogs); nothing is published or
	// acknowledged before they are durable.
	durable func(index uint64) error

	// live is written only by raft's FSM goroutine (Apply, Restore).
	live *state
	// failed is set (FSM goroutine only) once the log could not be made
	// durable: the state is no longer published.
	failed error

	mu sync.RWMutex // guards the published view and appliedCh
	// published is an immutable clone of live as of applied.
	published *state
	applied   uint64
	// appliedCh is closed and replaced after each apply, waking waiters.
	appliedCh chan struct{}
}

var (
	_ raft.BatchingFSM = (*fsm)(nil)
	_ raft.FSMSnapshot = (*fsmSnapshot)(nil)
)

func newFSM(schema *Schema, ring *eventRing, logger *slog.Logger) (*fsm, error) {
	live := newState(schema)
	return &fsm{schema: schema, logger: logger, events: ring, dicts: newDictSet(), live: live, published: live.clone(), appliedCh: make(chan struct{})}, nil
}

// view opens a read-only snapshot together with the index it reflects.
func (f *fsm) view() ReadTx {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return ReadTx{schema: f.schema, st: f.published, index: f.applied}
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
	if f.failed != nil {
		for i := range results {
			results[i] = f.failed
		}
		return results
	}
	var events []Event
	for i, l := range logs {
		if l.Type != raft.LogCommand {
			continue
		}
		results[i], events = f.applyEntry(f.live, l, events)
	}
	// Applying ran while the leader's sync may still have been running;
	// publishing and answering wait for it.
	if f.durable != nil {
		if err := f.durable(logs[len(logs)-1].Index); err != nil {
			f.failed = err
			f.logger.Error("raftstore: the log is not durable; this member stops applying entries", "err", err)
			for i := range results {
				results[i] = err
			}
			return results
		}
	}
	pub := f.live.clone()
	f.mu.Lock()
	f.published = pub
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
func (f *fsm) applyEntry(st *state, l *raft.Log, events []Event) (any, []Event) {
	kind, ops, err := decodeEntry(l.Data)
	if err != nil {
		f.logger.Error("raftstore: refusing malformed log entry", "index", l.Index, "err", err)
		return err, events
	}
	// The objects this member proposed the entry with, if handed over
	// (handover.go): one per op.
	handed := f.handed.take(l.Data)
	if len(handed) != len(ops) {
		handed = nil
	}
	// Dictionaries first: the ops after them may use them.
	n := 0
	for i := range ops {
		if ops[i].kind == opDict {
			f.dicts.add(ops[i].table, ops[i].data)
			continue
		}
		ops[n] = ops[i]
		if handed != nil {
			handed[n] = handed[i]
		}
		n++
	}
	ops = ops[:n]
	events = slices.Grow(events, len(ops))
	recs := make([]*record, len(ops))
	for i := range ops {
		o := &ops[i]
		if _, err := f.schema.table(o.table); err != nil {
			return err, events
		}
		if o.kind != opDelete {
			var d *dict
			if o.dictID != 0 {
				if d = f.dicts.get(o.dictID); d == nil {
					err := fmt.Errorf("raftstore: log entry %d: %s/%s is compressed with an unknown dictionary", l.Index, o.table, o.id)
					f.logger.Error("raftstore: refusing log entry", "index", l.Index, "err", err)
					return err, events
				}
			}
			// Copy: a record must not pin its whole log entry in memory.
			recs[i] = newRecord(o.id, o.keysRaw, l.Index, append([]byte(nil), o.data...), d)
		}
	}
	olds := make([]*record, len(ops))
	var res BatchResult
	if kind == entryTx {
		if conflict := uniqueConflict(st, ops); conflict != nil {
			return conflict, events
		}
	}
	for i := range ops {
		o := &ops[i]
		if kind == entryBatch && createsAlone(st, o) {
			// Checked and written in one go (create.go).
			if cur := st.create(o.table, recs[i]); cur != nil {
				res.Conflicts = append(res.Conflicts, checkOp(o, cur))
				ops[i].kind = 0 // skipped
			}
			continue
		}
		cur := st.get(o.table, o.id)
		conflict := checkOp(o, cur)
		if conflict == nil && kind == entryBatch {
			conflict = uniqueConflict(st, ops[i:i+1])
		}
		if conflict != nil {
			if kind == entryTx {
				return conflict, events
			}
			res.Conflicts = append(res.Conflicts, conflict)
			ops[i].kind = 0 // skipped
			continue
		}
		olds[i] = cur
		if kind == entryBatch {
			write(st, o, recs[i])
		}
	}
	for i := range ops {
		o := &ops[i]
		if o.kind == 0 {
			continue
		}
		if kind == entryTx {
			write(st, o, recs[i])
		}
		if handed != nil && handed[i] != nil && recs[i] != nil {
			recs[i].seed(handed[i])
		}
		ev := Event{Index: l.Index, Table: o.table, ID: o.id, rec: recs[i], oldRec: olds[i]}
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
		actual = cur.version
	}
	switch {
	case o.kind == opCreate && cur == nil:
		return nil
	case o.kind != opCreate && cur != nil && actual == o.expect:
		return nil
	}
	return &ConflictError{Table: o.table, ID: o.id, Expected: o.expect, Actual: actual}
}

// uniqueConflict finds a key of a unique index that the ops, applied
// together, would leave with two objects: one another op of the same
// entry claims, or one an object outside the ops holds and keeps.
func uniqueConflict(st *state, ops []op) *ConflictError {
	type ukey struct{ table, index, key string }
	var claims map[ukey]string   // key -> the op's object that takes it
	leaving := map[string]bool{} // table/id of objects the ops change or delete
	for i := range ops {
		o := &ops[i]
		t := st.tables[o.table].table
		if !slices.Contains(t.unique, true) {
			continue
		}
		leaving[o.table+"/"+o.id] = true
		if o.kind == opDelete {
			continue
		}
		for j, name := range t.indexNames {
			if !t.unique[j] {
				continue
			}
			for _, k := range keyList(string(o.keysRaw), j, nil) {
				uk := ukey{o.table, name, k}
				if claims == nil {
					claims = map[ukey]string{}
				}
				if other, ok := claims[uk]; ok && other != o.id {
					return &ConflictError{Table: o.table, ID: o.id, Index: name, Key: k, HeldBy: other}
				}
				claims[uk] = o.id
			}
		}
	}
	for uk, id := range claims {
		var holder string
		st.tables[uk.table].idx[uk.index].AscendGreaterOrEqual(probe(uk.key), func(e idxEntry) bool {
			if e.key() != uk.key {
				return false
			}
			// An object the ops change keeps the key only if it claims it
			// again (then it is the claimer).
			if eid := e.id(); eid != id && !leaving[uk.table+"/"+eid] {
				holder = eid
				return false
			}
			return true
		})
		if holder != "" {
			r := st.get(uk.table, holder)
			return &ConflictError{Table: uk.table, ID: id, Actual: r.version, Index: uk.index, Key: uk.key, HeldBy: holder}
		}
	}
	return nil
}

func write(st *state, o *op, r *record) {
	if o.kind == opDelete {
		st.delete(o.table, o.id)
		return
	}
	st.put(o.table, r)
}

// Snapshot format: magic, uvarint index, then the compression dictionaries
// (byte 2, string table, bytes dictionary), then records (byte 1, string
// table, string id, uvarint version, compression as in log entries, bytes
// data, index keys as in log entries) and a terminating byte 0. Records are
// written as stored: no re-encoding. Snapshots of format 2 (SHOALSS2, before
// compression: no dictionaries, no compression byte) are still read.
const (
	snapshotMagic   = "SHOALSS3"
	snapshotMagicV2 = "SHOALSS2"
)

// maxRecordBytes bounds one object in a snapshot, so a corrupt length cannot
// make a restore allocate without limit.
const maxRecordBytes = 256 << 20

func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return &fsmSnapshot{schema: f.schema, st: f.published, index: f.applied, dicts: f.dicts.all()}, nil
}

type fsmSnapshot struct {
	schema *Schema
	st     *state
	index  uint64
	dicts  []*dict
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
	for _, d := range s.dicts {
		buf = append(buf, 2)
		buf = appendString(buf, d.table)
		buf = binary.AppendUvarint(buf, uint64(len(d.raw)))
		buf = append(buf, d.raw...)
	}
	if _, err := w.Write(buf); err != nil {
		return err
	}
	for _, table := range s.schema.tableNames() {
		var err error
		s.st.scan(table, IndexID, "", false, func(r *record) bool {
			err = s.writeRecord(w, &buf, table, r)
			return err == nil
		})
		if err != nil {
			return err
		}
	}
	return w.WriteByte(0)
}

func (s *fsmSnapshot) writeRecord(w *bufio.Writer, bufp *[]byte, table string, r *record) error {
	buf := append((*bufp)[:0], 1)
	buf = appendString(buf, table)
	buf = appendString(buf, r.id())
	buf = binary.AppendUvarint(buf, r.version)
	if r.dict != nil {
		buf = append(buf, 1)
		buf = binary.LittleEndian.AppendUint64(buf, r.dict.id)
	} else {
		buf = append(buf, 0)
	}
	data := r.data()
	buf = binary.AppendUvarint(buf, uint64(len(data)))
	buf = append(buf, data...)
	if keys := r.keys(); keys == "" {
		buf = append(buf, 0)
	} else {
		buf = append(buf, keys...)
	}
	*bufp = buf
	_, err := w.Write(buf)
	return err
}

func (s *fsmSnapshot) Release() {}

// Restore replaces the whole state with a snapshot's. Watchers are told to
// resync, since the changes between their position and the snapshot are gone.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	st, index, err := readSnapshot(f.schema, f.dicts, bufio.NewReaderSize(rc, 256<<10))
	if err != nil {
		return fmt.Errorf("raftstore: restore snapshot: %w", err)
	}
	f.live = st
	pub := st.clone()
	f.mu.Lock()
	f.published = pub
	f.applied = index
	close(f.appliedCh)
	f.appliedCh = make(chan struct{})
	f.mu.Unlock()
	f.events.reset(index)
	return nil
}

func readSnapshot(schema *Schema, dicts *dictSet, r *bufio.Reader) (*state, uint64, error) {
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != snapshotMagic && string(magic) != snapshotMagicV2 {
		return nil, 0, errors.New("not a shoal snapshot (bad header)")
	}
	compression := string(magic) == snapshotMagic
	index, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, 0, fmt.Errorf("snapshot header: %w", err)
	}
	st := newState(schema)
	for n := 0; ; n++ {
		tag, err := r.ReadByte()
		if err != nil {
			return nil, 0, fmt.Errorf("snapshot truncated after %d records: %w", n, err)
		}
		if tag == 0 {
			break
		}
		if tag == 2 && compression {
			table, err := readBytes(r, 1<<10)
			if err != nil {
				return nil, 0, fmt.Errorf("snapshot dictionary %d: %w", n, err)
			}
			raw, err := readBytes(r, maxRecordBytes)
			if err != nil {
				return nil, 0, fmt.Errorf("snapshot dictionary %d: %w", n, err)
			}
			dicts.add(string(table), raw)
			continue
		}
		if tag != 1 {
			return nil, 0, fmt.Errorf("snapshot record %d: bad tag %d", n, tag)
		}
		rec, table, err := readRecord(r, dicts, compression)
		if err != nil {
			return nil, 0, fmt.Errorf("snapshot record %d: %w", n, err)
		}
		if _, err := schema.table(table); err != nil {
			return nil, 0, fmt.Errorf("snapshot record %d: %w", n, err)
		}
		st.put(table, rec)
	}
	return st, index, nil
}

// Bounds on one record, the same where it is written (Tx, Batch) and
// where a snapshot is read back: a record the log takes must restore.
const (
	maxIDBytes      = 1 << 16
	maxKeyBytes     = 1 << 16
	maxKeysPerIndex = 1 << 20
	maxIndexes      = 1 << 10
)

// checkRecordBounds refuses an ID or index keys that a snapshot could not
// hold.
func checkRecordBounds(table, id string, keys [][]string) error {
	if len(id) > maxIDBytes {
		return fmt.Errorf("%w: %s: an ID of %d bytes, at most %d", ErrTooLarge, table, len(id), maxIDBytes)
	}
	for _, ks := range keys {
		if len(ks) > maxKeysPerIndex {
			return fmt.Errorf("%w: %s/%.64s: %d keys in one index, at most %d", ErrTooLarge, table, id, len(ks), maxKeysPerIndex)
		}
		for _, k := range ks {
			if len(k) > maxKeyBytes {
				return fmt.Errorf("%w: %s/%.64s: an index key of %d bytes, at most %d", ErrTooLarge, table, id, len(k), maxKeyBytes)
			}
		}
	}
	return nil
}

func readRecord(r *bufio.Reader, dicts *dictSet, compression bool) (*record, string, error) {
	table, err := readBytes(r, 1<<10)
	if err != nil {
		return nil, "", err
	}
	id, err := readBytes(r, maxIDBytes)
	if err != nil {
		return nil, "", err
	}
	version, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, "", err
	}
	var d *dict
	if compression {
		c, err := r.ReadByte()
		if err != nil {
			return nil, "", err
		}
		switch c {
		case 0:
		case 1:
			var ref [8]byte
			if _, err := io.ReadFull(r, ref[:]); err != nil {
				return nil, "", err
			}
			if d = dicts.get(binary.LittleEndian.Uint64(ref[:])); d == nil {
				return nil, "", fmt.Errorf("%s/%s is compressed with a dictionary the snapshot does not hold", table, id)
			}
		default:
			return nil, "", fmt.Errorf("unknown compression %d", c)
		}
	}
	data, err := readBytes(r, maxRecordBytes)
	if err != nil {
		return nil, "", err
	}
	nidx, err := binary.ReadUvarint(r)
	if err != nil || nidx > maxIndexes {
		return nil, "", fmt.Errorf("bad index count %d: %v", nidx, err)
	}
	keys := binary.AppendUvarint(nil, nidx)
	for range nidx {
		nk, err := binary.ReadUvarint(r)
		if err != nil || nk > maxKeysPerIndex {
			return nil, "", fmt.Errorf("bad key count %d: %v", nk, err)
		}
		keys = binary.AppendUvarint(keys, nk)
		for range nk {
			k, err := readBytes(r, maxKeyBytes)
			if err != nil {
				return nil, "", err
			}
			keys = binary.AppendUvarint(keys, uint64(len(k)))
			keys = append(keys, k...)
		}
	}
	return newRecord(string(id), keys, version, data, d), string(table), nil
}

func readBytes(r *bufio.Reader, limit uint64) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, err
	}
	if n > limit {
		return nil, fmt.Errorf("length %d over the limit %d", n, limit)
	}
	buf := make([]byte, n)
	_, err = io.ReadFull(r, buf)
	return buf, err
}
