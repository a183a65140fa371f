package raftstore

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
	"golang.org/x/sys/unix"
)

// WAL is a Raft log store and stable store made of append-only segment
// files, with one fdatasync per StoreLogs call (bbolt, the log store before
// it, syncs twice per transaction: data pages, then the meta page). With a
// Sealer every entry is sealed before it reaches the file, bound to its
// index.
//
// Files in its directory:
//
//	<base index, 20 digits>.seg   entries from base on, in 8-byte aligned records
//	stable                        raft's term and vote, and the log's first index
//
// A segment is preallocated (64 MiB by default, more for a larger entry), so
// appends do not change the file size and a sync writes no size metadata.
// Each segment starts with a header (magic, format, flags, base index, a
// random salt, the allocated size, CRC-32C); each record with its payload
// length, a CRC-32C (over the salt, the header fields and the payload), the
// entry's index and the sync epoch it was written in.
//
// The epoch is the number of syncs started before the record was written
// (sync starts and writes are serialized). A record found on disk with an
// epoch two above another record's proves that the other one had been synced
// (sync epoch+1 had completed before sync epoch+2 began). Open uses that to
// tell a torn tail (records of the last unsynced writes, cut by a crash:
// truncated and zeroed, since no one was told they were stored) from damage
// in the middle of synced data (a *CorruptError naming the file).
//
// A WAL is safe for concurrent use.
type WAL struct {
	dir         string
	sealer      Sealer
	logger      *slog.Logger
	segmentSize int64

	// leading, when set, reports whether this member leads now; see
	// StoreLogs. Only Store sets it, with the transport and FSM guards that
	// make an unsynced leader append safe.
	leading atomic.Pointer[func() bool]
	// syncHook runs before each fdatasync of segments (tests).
	syncHook atomic.Pointer[func()]

	smu sync.Mutex // held for a whole sync: syncs run one at a time (the epoch rule needs it)
	wmu sync.Mutex // serializes appends, truncations and the start of each sync

	mu    sync.RWMutex // guards the index below for readers; writers also hold wmu
	segs  []*segment
	first uint64
	last  uint64
	// recent holds the latest entries as raft gave them, by index modulo
	// its size, up to recentBytes of data: replication to followers reads
	// what was just appended, and reading it back from the file (a pread
	// and, sealed, an AES-GCM open per entry) cost a fifth of the CPU at
	// 256 writers. recentLo is the lowest index that may be cached.
	recent      [recentEntries]*raft.Log
	recentBytes int
	recentLo    uint64
	// recentMax bounds recentBytes (recentMaxBytes unless set before use:
	// Store.WALCacheBytes).
	recentMax int

	// Guarded by wmu.
	buf, plain []byte
	epoch      uint64
	dirty      []*segment
	written    uint64

	cmu     sync.Mutex
	cond    *sync.Cond
	durable atomic.Uint64 // changed under cmu; read without it by the transport guard
	failed  error
	closed  bool

	kick chan struct{}
	done chan struct{}
	wg   sync.WaitGroup

	stable *stableFile
	// repaired says what Open truncated, empty when nothing.
	repaired string
}

type segment struct {
	base     uint64
	path     string
	f        *os.File
	salt     uint64
	capacity int64
	offs     []uint32 // file offset of entry base+i
	end      int64    // where the next record goes
}

var (
	_ raft.LogStore    = (*WAL)(nil)
	_ raft.StableStore = (*WAL)(nil)

	castagnoli = crc32.MakeTable(crc32.Castagnoli)
	// ErrLogFailed is returned once a write or sync of the log failed: what
	// is on disk is unknown, so the member stops accepting and applying
	// entries; restart it to recover from the log and the leader.
	ErrLogFailed = errors.New("raftstore: writing the Raft log failed; restart this member")
)

const (
	walMagic        = "SHOALWL1"
	walFormat       = 1
	walFlagSealed   = 1
	segHeaderLen    = 48
	recHeaderLen    = 24
	segSuffix       = ".seg"
	stableFileName  = "stable"
	keyFirstIndex   = "wal.first"
	maxRecordLen    = 1 << 30
	scanWindow      = 1 << 20
	defaultSegBytes = 64 << 20
	// recentEntries and recentMaxBytes bound the in-memory copies: at most
	// 1024 entries and 16 MiB (64 of Batch's 256 KiB entries, as raft's
	// own log cache held).
	recentEntries  = 1024
	recentMaxBytes = 16 << 20
)

// OpenWAL opens (or creates) the log in dir. It reads every entry once, so
// damage is reported now, naming the file, instead of in the middle of
// replication; a torn tail left by a crash is truncated (and logged).
// logger may be nil.
func OpenWAL(dir string, sealer Sealer, logger *slog.Logger) (*WAL, error) {
	return openWAL(dir, sealer, logger, defaultSegBytes)
}

func openWAL(dir string, sealer Sealer, logger *slog.Logger, segmentSize int64) (_ *WAL, err error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("raftstore: log dir: %w", err)
	}
	w := &WAL{dir: dir, sealer: sealer, logger: logger, segmentSize: segmentSize, recentMax: recentMaxBytes, kick: make(chan struct{}, 1), done: make(chan struct{})}
	w.cond = sync.NewCond(&w.cmu)
	if w.stable, err = openStableFile(filepath.Join(dir, stableFileName)); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			w.closeFiles()
		}
	}()
	if err := w.load(); err != nil {
		return nil, err
	}
	if err := syncDir(dir); err != nil {
		return nil, err
	}
	w.wg.Add(1)
	go w.syncer()
	return w, nil
}

// load reads the segments and rebuilds the index.
func (w *WAL) load() error {
	names, err := os.ReadDir(w.dir)
	if err != nil {
		return err
	}
	var bases []uint64
	for _, e := range names {
		name := e.Name()
		switch {
		case strings.HasSuffix(name, segSuffix+".tmp"):
			// A segment whose creation a crash cut short: never used.
			if err := os.Remove(filepath.Join(w.dir, name)); err != nil {
				return err
			}
		case strings.HasSuffix(name, segSuffix):
			base, err := strconv.ParseUint(strings.TrimSuffix(name, segSuffix), 10, 64)
			if err != nil || base == 0 {
				return &CorruptError{File: filepath.Join(w.dir, name), Err: errors.New("not a segment name (want the base index in 20 digits)")}
			}
			bases = append(bases, base)
		}
	}
	slices.Sort(bases)
	var metaFirst uint64
	if v, ok := w.stable.get(keyFirstIndex); ok && len(v) == 8 {
		metaFirst = binary.LittleEndian.Uint64(v)
	}
	var maxEpoch uint64
	for i, base := range bases {
		seg, err := w.openSegment(base)
		if err != nil {
			return err
		}
		w.segs = append(w.segs, seg)
		next := uint64(0)
		if i+1 < len(bases) {
			next = bases[i+1]
		}
		ep, err := w.scan(seg, next, metaFirst)
		if err != nil {
			return err
		}
		maxEpoch = max(maxEpoch, ep)
	}
	// Drop segments that a compaction had finished with before a crash
	// stopped it from removing them.
	for len(w.segs) > 1 && w.segs[1].base <= metaFirst {
		if err := w.removeSegment(w.segs[0]); err != nil {
			return err
		}
		w.segs = w.segs[1:]
	}
	if n := len(w.segs); n > 0 {
		tail := w.segs[n-1]
		w.last = tail.base + uint64(len(tail.offs)) - 1
		w.first = max(metaFirst, w.segs[0].base)
		if len(tail.offs) == 0 {
			w.last = tail.base - 1
		}
		if w.first > w.last {
			// Compacted up to its end: nothing is left to keep.
			for j := len(w.segs) - 1; j >= 0; j-- {
				if err := w.removeSegment(w.segs[j]); err != nil {
					return err
				}
			}
			w.segs, w.first, w.last = nil, 0, 0
		}
	}
	// What was written before a kill may still be only in the page cache;
	// sync it before anything new lands behind it.
	for _, seg := range w.segs {
		if err := unix.Fdatasync(int(seg.f.Fd())); err != nil {
			return fmt.Errorf("raftstore: sync %s: %w", seg.path, err)
		}
	}
	w.written = w.last
	w.durable.Store(w.last)
	w.epoch = maxEpoch + 2
	return nil
}

func (w *WAL) segPath(base uint64) string {
	return filepath.Join(w.dir, fmt.Sprintf("%020d%s", base, segSuffix))
}

func (w *WAL) openSegment(base uint64) (*segment, error) {
	path := w.segPath(base)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("raftstore: open %s: %w", path, err)
	}
	seg := &segment{base: base, path: path, f: f}
	hdr := make([]byte, segHeaderLen)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		f.Close()
		return nil, &CorruptError{File: path, Err: fmt.Errorf("segment header unreadable: %v", err)}
	}
	corrupt := func(format string, args ...any) (*segment, error) {
		f.Close()
		return nil, &CorruptError{File: path, Err: fmt.Errorf(format, args...)}
	}
	if string(hdr[:8]) != walMagic {
		return corrupt("not a log segment (bad magic)")
	}
	if crc32.Checksum(hdr[:40], castagnoli) != binary.LittleEndian.Uint32(hdr[40:]) {
		return corrupt("segment header checksum mismatch")
	}
	if v := binary.LittleEndian.Uint32(hdr[8:]); v != walFormat {
		return corrupt("segment format %d unknown (written by a newer version?)", v)
	}
	sealed := binary.LittleEndian.Uint32(hdr[12:])&walFlagSealed != 0
	switch {
	case sealed && w.sealer == nil:
		return corrupt("entries are encrypted and no key-encryption key was given")
	case !sealed && w.sealer != nil:
		return corrupt("entries are not encrypted but a key-encryption key was given (encryption cannot be turned on for an existing data dir)")
	}
	if b := binary.LittleEndian.Uint64(hdr[16:]); b != base {
		return corrupt("header says base index %d, the name %d", b, base)
	}
	seg.salt = binary.LittleEndian.Uint64(hdr[24:])
	seg.capacity = int64(binary.LittleEndian.Uint64(hdr[32:]))
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if fi.Size() < seg.capacity {
		return corrupt("file has %d bytes but was allocated %d (truncated)", fi.Size(), seg.capacity)
	}
	return seg, nil
}

// scan reads a segment's records into its index. next is the base of the
// following segment (0 for the last one), which this one must reach exactly.
// Entries below metaFirst were compacted away: their structure is checked,
// but they are not opened (their data key may have been pruned). It returns
// the highest epoch seen.
func (w *WAL) scan(seg *segment, next, metaFirst uint64) (uint64, error) {
	r := &windowReader{f: seg.f, size: seg.capacity}
	pos := int64(segHeaderLen)
	var maxEpoch uint64
	var l raft.Log
	for {
		index := seg.base + uint64(len(seg.offs))
		if next != 0 && index == next {
			break
		}
		rec, epoch, why := w.readRecord(r, seg, pos, index)
		if why != "" {
			if next != 0 {
				return 0, &CorruptError{File: seg.path, Err: fmt.Errorf("entry %d at offset %d: %s (the next segment starts at %d)", index, pos, why, next)}
			}
			return maxEpoch, w.repairTail(seg, r, pos, index)
		}
		if index >= metaFirst {
			payload := rec[recHeaderLen:]
			if err := w.decode(index, payload, &l); err != nil {
				return 0, &CorruptError{File: seg.path, Err: err}
			}
		}
		seg.offs = append(seg.offs, uint32(pos))
		maxEpoch = max(maxEpoch, epoch)
		pos += recordSize(len(rec) - recHeaderLen)
	}
	seg.end = pos
	return maxEpoch, nil
}

// readRecord checks the record at pos; why says what is wrong with it (""
// when it is valid; "end" when the header is all zeros).
func (w *WAL) readRecord(r *windowReader, seg *segment, pos int64, index uint64) (rec []byte, epoch uint64, why string) {
	if pos+recHeaderLen > seg.capacity {
		return nil, 0, "end"
	}
	hdr, err := r.at(pos, recHeaderLen)
	if err != nil {
		return nil, 0, err.Error()
	}
	n := int64(binary.LittleEndian.Uint32(hdr))
	if n == 0 {
		return nil, 0, "end"
	}
	if got := binary.LittleEndian.Uint64(hdr[8:]); got != index {
		return nil, 0, fmt.Sprintf("holds index %d", got)
	}
	if pos+recHeaderLen+n > seg.capacity {
		return nil, 0, "record runs past the end of the segment"
	}
	rec, err = r.at(pos, recHeaderLen+int(n))
	if err != nil {
		return nil, 0, err.Error()
	}
	if recordCRC(seg.salt, rec) != binary.LittleEndian.Uint32(rec[4:]) {
		return nil, 0, "checksum mismatch"
	}
	return rec, binary.LittleEndian.Uint64(rec[16:]), ""
}

// repairTail handles the first invalid record of the last segment. If a
// valid record further on has an epoch two above the first valid record
// after pos, the invalid one had been synced: damage, not a torn write.
// Otherwise everything from pos on belongs to writes that were never
// synced (so never acknowledged): it is zeroed and the log ends before it.
func (w *WAL) repairTail(seg *segment, r *windowReader, pos int64, index uint64) error {
	seg.end = pos
	lastNonZero := pos
	var found int
	var firstEpoch uint64
	for p := pos; p+8 <= seg.capacity; {
		chunk, err := r.at(p, int(min(scanWindow, (seg.capacity-p)&^7)))
		if err != nil {
			return &CorruptError{File: seg.path, Err: err}
		}
		j := 0
		for j+8 <= len(chunk) && binary.LittleEndian.Uint64(chunk[j:]) == 0 {
			j += 8
		}
		if j == len(chunk) {
			p += int64(len(chunk))
			continue
		}
		p += int64(j)
		lastNonZero = p + 8
		if rec, ok := r.candidate(seg, p, index); ok {
			ep := binary.LittleEndian.Uint64(rec[16:])
			if found == 0 {
				firstEpoch = ep
			}
			found++
			if ep >= firstEpoch+2 {
				return &CorruptError{File: seg.path, Err: fmt.Errorf("entry %d at offset %d is damaged, and entries written after it had been synced are present", index, pos)}
			}
		}
		p += 8
	}
	if lastNonZero == pos {
		return nil // a clean end
	}
	zero := make([]byte, min(lastNonZero-pos, scanWindow))
	for off := pos; off < lastNonZero; off += int64(len(zero)) {
		if _, err := seg.f.WriteAt(zero[:min(int64(len(zero)), lastNonZero-off)], off); err != nil {
			return fmt.Errorf("raftstore: repair %s: %w", seg.path, err)
		}
	}
	if err := unix.Fdatasync(int(seg.f.Fd())); err != nil {
		return fmt.Errorf("raftstore: repair %s: %w", seg.path, err)
	}
	w.repaired = fmt.Sprintf("%s: torn tail cut at entry %d (offset %d; %d bytes zeroed; %d whole unsynced records beyond it dropped)",
		seg.path, index, pos, lastNonZero-pos, found)
	w.logger.Warn("raftstore: the log had a torn tail (a crash during a write); it ends before it now", "file", seg.path, "entry", index, "offset", pos, "bytes", lastNonZero-pos)
	return nil
}

// candidate reports whether a valid record of this segment, for index or a
// later one, starts at p.
func (r *windowReader) candidate(seg *segment, p int64, index uint64) ([]byte, bool) {
	if p+recHeaderLen > seg.capacity {
		return nil, false
	}
	hdr, err := r.at(p, recHeaderLen)
	if err != nil {
		return nil, false
	}
	n := int64(binary.LittleEndian.Uint32(hdr))
	idx := binary.LittleEndian.Uint64(hdr[8:])
	if n == 0 || p+recHeaderLen+n > seg.capacity || idx < index || idx-index > 1<<32 {
		return nil, false
	}
	rec, err := r.at(p, recHeaderLen+int(n))
	if err != nil || recordCRC(seg.salt, rec) != binary.LittleEndian.Uint32(rec[4:]) {
		return nil, false
	}
	return rec, true
}

func recordSize(payload int) int64 { return (int64(recHeaderLen+payload) + 7) &^ 7 }

// recordCRC covers the salt, the record header after the CRC field, the
// length and the payload.
func recordCRC(salt uint64, rec []byte) uint32 {
	var s [8]byte
	binary.LittleEndian.PutUint64(s[:], salt)
	c := crc32.Update(0, castagnoli, s[:])
	c = crc32.Update(c, castagnoli, rec[8:])
	return crc32.Update(c, castagnoli, rec[:4])
}

// windowReader reads a file through a sliding buffer, so a scan costs one
// read per MiB, not two per record.
type windowReader struct {
	f    *os.File
	size int64
	buf  []byte
	off  int64
}

// at returns n bytes at off, valid until the next call.
func (r *windowReader) at(off int64, n int) ([]byte, error) {
	if off >= r.off && off+int64(n) <= r.off+int64(len(r.buf)) {
		return r.buf[off-r.off : off-r.off+int64(n)], nil
	}
	want := min(max(int64(n), scanWindow), r.size-off)
	if want < int64(n) {
		return nil, io.ErrUnexpectedEOF
	}
	if int64(cap(r.buf)) < want {
		r.buf = make([]byte, want)
	}
	r.buf = r.buf[:want]
	if _, err := r.f.ReadAt(r.buf, off); err != nil {
		r.buf = r.buf[:0]
		return nil, err
	}
	r.off = off
	return r.buf[:n], nil
}

func (w *WAL) decode(index uint64, payload []byte, l *raft.Log) error {
	plain := payload
	if w.sealer != nil {
		var err error
		if plain, err = w.sealer.Open(nil, payload, binary.BigEndian.AppendUint64(nil, index)); err != nil {
			return fmt.Errorf("log entry %d: %w", index, err)
		}
	} else {
		plain = slices.Clone(payload)
	}
	return parseRaftLog(index, plain, l)
}

// FirstIndex returns the first index in the log, 0 for none.
func (w *WAL) FirstIndex() (uint64, error) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.first, nil
}

// LastIndex returns the last index in the log, 0 for none.
func (w *WAL) LastIndex() (uint64, error) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.last, nil
}

// GetLog reads one entry.
func (w *WAL) GetLog(index uint64, l *raft.Log) error {
	w.mu.RLock()
	if c := w.recent[index%recentEntries]; c != nil && c.Index == index && index >= w.first && index <= w.last {
		*l = *c
		w.mu.RUnlock()
		return nil
	}
	w.mu.RUnlock()
	rec, seg, err := w.readEntry(index)
	if err != nil {
		return err
	}
	if err := w.decode(index, rec[recHeaderLen:], l); err != nil {
		return &CorruptError{File: seg, Err: err}
	}
	return nil
}

// readEntry returns the checked record of index and its file's name.
func (w *WAL) readEntry(index uint64) ([]byte, string, error) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.last == 0 || index < w.first || index > w.last {
		return nil, "", raft.ErrLogNotFound
	}
	i := sort.Search(len(w.segs), func(i int) bool { return w.segs[i].base > index }) - 1
	seg := w.segs[i]
	k := index - seg.base
	off, end := int64(seg.offs[k]), seg.end
	if k+1 < uint64(len(seg.offs)) {
		end = int64(seg.offs[k+1])
	}
	buf := make([]byte, end-off)
	if _, err := seg.f.ReadAt(buf, off); err != nil {
		return nil, seg.path, fmt.Errorf("raftstore: read %s: %w", seg.path, err)
	}
	n := int64(binary.LittleEndian.Uint32(buf))
	if recHeaderLen+n > int64(len(buf)) || binary.LittleEndian.Uint64(buf[8:]) != index ||
		recordCRC(seg.salt, buf[:recHeaderLen+n]) != binary.LittleEndian.Uint32(buf[4:]) {
		return nil, seg.path, &CorruptError{File: seg.path, Err: fmt.Errorf("entry %d at offset %d: checksum mismatch", index, off)}
	}
	return buf[:recHeaderLen+n], seg.path, nil
}

// StoreLog writes one entry.
func (w *WAL) StoreLog(l *raft.Log) error { return w.StoreLogs([]*raft.Log{l}) }

// StoreLogs appends entries, which must follow the last one. It returns once
// they are synced, with one exception: on the leader, command entries return
// as soon as they are written, and a background sync makes them durable
// while raft sends them to the followers (Raft thesis §10.2.1: the leader's
// write may run in parallel with replication). Store makes that safe: its FSM
// applies and acknowledges an entry only once the leader's copy is durable,
// and the commit index sent to followers never passes it, so nothing learns
// of an entry that a power loss on the leader could still take back.
// Configuration, no-op and barrier entries are always synced first, so raft's
// own use of the commit index (membership changes, a new term's first
// commit) sees only durable leader entries.
func (w *WAL) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	async := w.isLeading()
	for _, l := range logs {
		if l.Type != raft.LogCommand {
			async = false
		}
	}
	if err := w.write(logs); err != nil {
		return err
	}
	if async {
		select {
		case w.kick <- struct{}{}:
		default:
		}
		return nil
	}
	return w.sync()
}

// IsMonotonic tells raft that the log takes no gaps
// (raft.MonotonicLogStore): after installing a leader's snapshot past the
// end of the log, raft empties the log instead of appending after a gap.
// Without it a follower whose log ended before the snapshot refused every
// entry after it, and the leader sent the snapshot again and again.
func (w *WAL) IsMonotonic() bool { return true }

var _ raft.MonotonicLogStore = (*WAL)(nil)

func (w *WAL) isLeading() bool {
	fn := w.leading.Load()
	return fn != nil && (*fn)()
}

func (w *WAL) write(logs []*raft.Log) error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	if err := w.err(); err != nil {
		return err
	}
	if w.last != 0 && logs[0].Index != w.last+1 {
		return fmt.Errorf("raftstore: log append at index %d, but the log ends at %d", logs[0].Index, w.last)
	}
	if w.last == 0 {
		// Appending to an empty log: a first index kept from an earlier
		// compaction must not hide the new entries after a restart.
		if v, ok := w.stable.get(keyFirstIndex); ok && (len(v) != 8 || binary.LittleEndian.Uint64(v) != 0) {
			if err := w.stable.set(keyFirstIndex, binary.LittleEndian.AppendUint64(nil, 0)); err != nil {
				return w.fail(err)
			}
		}
	}
	var seg *segment
	if n := len(w.segs); n > 0 {
		seg = w.segs[n-1]
	}
	buf := w.buf[:0]
	var offs []uint32
	var pending []*raft.Log
	flush := func() error {
		if len(buf) == 0 {
			return nil
		}
		if _, err := seg.f.WriteAt(buf, seg.end); err != nil {
			return w.fail(fmt.Errorf("raftstore: write %s: %w", seg.path, err))
		}
		if len(w.dirty) == 0 || w.dirty[len(w.dirty)-1] != seg {
			w.dirty = append(w.dirty, seg)
		}
		w.mu.Lock()
		seg.offs = append(seg.offs, offs...)
		seg.end += int64(len(buf))
		for _, l := range pending {
			w.cacheLocked(l)
		}
		w.last = seg.base + uint64(len(seg.offs)) - 1
		if w.first == 0 {
			w.first = seg.base
		}
		w.mu.Unlock()
		buf, offs, pending = buf[:0], offs[:0], pending[:0]
		return nil
	}
	for i, l := range logs {
		if i > 0 && l.Index != logs[i-1].Index+1 {
			return fmt.Errorf("raftstore: log append: index %d follows %d", l.Index, logs[i-1].Index)
		}
		start := len(buf)
		var err error
		if buf, err = w.appendRecord(buf, l, seg); err != nil {
			return err
		}
		if seg == nil || seg.end+int64(len(buf)) > seg.capacity {
			// This record opens a new segment: write what precedes it,
			// make the segment, and move the record there (the CRC
			// covers the segment's salt).
			rec := slices.Clone(buf[start:])
			buf = buf[:start]
			if err := flush(); err != nil {
				return err
			}
			if seg, err = w.newSegment(l.Index, int64(len(rec))); err != nil {
				return w.fail(err)
			}
			buf, start = append(buf[:0], rec...), 0
			n := binary.LittleEndian.Uint32(buf)
			binary.LittleEndian.PutUint32(buf[4:], recordCRC(seg.salt, buf[:recHeaderLen+n]))
		}
		offs = append(offs, uint32(seg.end+int64(start)))
		pending = append(pending, l)
	}
	if err := flush(); err != nil {
		return err
	}
	w.written = w.last
	w.buf = buf[:0]
	return nil
}

// cacheLocked keeps l in the recent entries, dropping the oldest ones to
// stay within the bounds. Called with mu held for writing.
func (w *WAL) cacheLocked(l *raft.Log) {
	size := len(l.Data) + len(l.Extensions)
	if size > w.recentMax/4 {
		return
	}
	slot := &w.recent[l.Index%recentEntries]
	if *slot != nil {
		w.recentBytes -= len((*slot).Data) + len((*slot).Extensions)
	}
	*slot = l
	w.recentBytes += size
	if l.Index >= recentEntries {
		w.recentLo = max(w.recentLo, l.Index-(recentEntries-1)) // older slots were reused
	}
	for w.recentBytes > w.recentMax && w.recentLo < l.Index {
		if c := &w.recent[w.recentLo%recentEntries]; *c != nil && (*c).Index == w.recentLo {
			w.recentBytes -= len((*c).Data) + len((*c).Extensions)
			*c = nil
		}
		w.recentLo++
	}
}

// appendRecord appends l as a record of seg (whose salt the CRC covers; nil
// before a first segment exists, when the record is written again anyway).
func (w *WAL) appendRecord(b []byte, l *raft.Log, seg *segment) ([]byte, error) {
	start := len(b)
	b = append(b, make([]byte, recHeaderLen)...)
	w.plain = appendRaftLog(w.plain[:0], l)
	if w.sealer != nil {
		var err error
		if b, err = w.sealer.Seal(b, w.plain, binary.BigEndian.AppendUint64(nil, l.Index)); err != nil {
			return nil, fmt.Errorf("raftstore: seal log entry %d: %w", l.Index, err)
		}
	} else {
		b = append(b, w.plain...)
	}
	n := len(b) - start - recHeaderLen
	if n > maxRecordLen {
		return nil, fmt.Errorf("%w: log entry %d is %d bytes", ErrTooLarge, l.Index, n)
	}
	for len(b)%8 != 0 {
		b = append(b, 0)
	}
	rec := b[start:]
	binary.LittleEndian.PutUint32(rec, uint32(n))
	binary.LittleEndian.PutUint64(rec[8:], l.Index)
	binary.LittleEndian.PutUint64(rec[16:], w.epoch)
	var salt uint64
	if seg != nil {
		salt = seg.salt
	}
	binary.LittleEndian.PutUint32(rec[4:], recordCRC(salt, rec[:recHeaderLen+n]))
	return b, nil
}

// newSegment creates, preallocates and syncs a segment (named only once
// complete, so a crash never leaves a half-made one under a real name), and
// makes it the tail. Called with wmu held.
func (w *WAL) newSegment(base uint64, need int64) (*segment, error) {
	capacity := max(w.segmentSize, segHeaderLen+need)
	capacity = (capacity + 4095) &^ 4095
	path := w.segPath(base)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("raftstore: create %s: %w", tmp, err)
	}
	fail := func(err error) (*segment, error) {
		f.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("raftstore: create %s: %w", path, err)
	}
	if err := unix.Fallocate(int(f.Fd()), 0, 0, capacity); err != nil {
		// Not every file system preallocates; a sized file works too.
		if err := f.Truncate(capacity); err != nil {
			return fail(err)
		}
	}
	var salt [8]byte
	if _, err := rand.Read(salt[:]); err != nil {
		return fail(err)
	}
	hdr := make([]byte, segHeaderLen)
	copy(hdr, walMagic)
	binary.LittleEndian.PutUint32(hdr[8:], walFormat)
	if w.sealer != nil {
		binary.LittleEndian.PutUint32(hdr[12:], walFlagSealed)
	}
	binary.LittleEndian.PutUint64(hdr[16:], base)
	copy(hdr[24:], salt[:])
	binary.LittleEndian.PutUint64(hdr[32:], uint64(capacity))
	binary.LittleEndian.PutUint32(hdr[40:], crc32.Checksum(hdr[:40], castagnoli))
	if _, err := f.WriteAt(hdr, 0); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	if err := syncDir(w.dir); err != nil {
		f.Close()
		return nil, err
	}
	seg := &segment{base: base, path: path, f: f, salt: binary.LittleEndian.Uint64(salt[:]), capacity: capacity, end: segHeaderLen}
	w.mu.Lock()
	w.segs = append(w.segs, seg)
	w.mu.Unlock()
	return seg, nil
}

// sync makes everything written so far durable.
func (w *WAL) sync() error {
	w.smu.Lock()
	defer w.smu.Unlock()
	w.wmu.Lock()
	if err := w.err(); err != nil {
		w.wmu.Unlock()
		return err
	}
	target, files := w.written, slices.Clone(w.dirty)
	w.dirty = w.dirty[:0]
	if len(files) > 0 {
		w.epoch++
	}
	w.wmu.Unlock()
	if hook := w.syncHook.Load(); hook != nil && len(files) > 0 {
		(*hook)()
	}
	for _, seg := range files {
		if err := unix.Fdatasync(int(seg.f.Fd())); err != nil {
			return w.fail(fmt.Errorf("raftstore: sync %s: %w", seg.path, err))
		}
	}
	w.cmu.Lock()
	if target > w.durable.Load() {
		w.durable.Store(target)
	}
	w.cond.Broadcast()
	w.cmu.Unlock()
	return nil
}

// syncer makes the leader's unsynced appends durable, one sync per wake-up
// however many appends came meanwhile.
func (w *WAL) syncer() {
	defer w.wg.Done()
	for {
		select {
		case <-w.done:
			return
		case <-w.kick:
			// The kick comes from raft's leader loop, which next wakes
			// the replicators that send the entry to the followers. A
			// goroutine entering fdatasync keeps its P until the scheduler
			// notices the blocking call (up to ~20 µs, and on 2 CPUs the
			// senders wait for it), so let those sends run first: the
			// followers' copies are
			// what the commit waits for, the leader's own sync finishes
			// long before their answers come back.
			runtime.Gosched()
			if err := w.sync(); err != nil {
				w.logger.Error("raftstore: syncing the log failed; this member stops applying entries", "err", err)
			}
		}
	}
}

// durableIndex is the last index known to be on stable storage.
func (w *WAL) durableIndex() uint64 { return w.durable.Load() }

// waitDurable blocks until every entry up to index is on stable storage.
func (w *WAL) waitDurable(index uint64) error {
	if w.durable.Load() >= index {
		return nil
	}
	w.cmu.Lock()
	defer w.cmu.Unlock()
	for w.durable.Load() < index {
		if w.failed != nil {
			return w.failed
		}
		if w.closed {
			return fmt.Errorf("raftstore: log: %w", os.ErrClosed)
		}
		w.cond.Wait()
	}
	return nil
}

// fail records a write or sync failure: from now on the log refuses writes
// and waitDurable fails, since what reached the disk is unknown.
func (w *WAL) fail(err error) error {
	w.cmu.Lock()
	if w.failed == nil {
		w.failed = fmt.Errorf("%w: %v", ErrLogFailed, err)
	}
	w.cond.Broadcast()
	w.cmu.Unlock()
	return err
}

func (w *WAL) err() error {
	w.cmu.Lock()
	defer w.cmu.Unlock()
	switch {
	case w.failed != nil:
		return w.failed
	case w.closed:
		return fmt.Errorf("raftstore: log: %w", os.ErrClosed)
	}
	return nil
}

// DeleteRange removes entries lo..hi inclusive: a prefix (compaction after a
// snapshot) or a suffix (entries a new leader overrides).
func (w *WAL) DeleteRange(lo, hi uint64) error {
	w.smu.Lock()
	defer w.smu.Unlock()
	w.wmu.Lock()
	defer w.wmu.Unlock()
	if err := w.err(); err != nil {
		return err
	}
	switch {
	case w.last == 0 || hi < w.first || lo > w.last || lo > hi:
		return nil
	case lo <= w.first && hi >= w.last:
		return w.removeAll()
	case lo <= w.first:
		return w.compact(hi + 1)
	case hi >= w.last:
		return w.truncate(lo)
	}
	return fmt.Errorf("raftstore: log: cannot delete %d..%d from the middle of %d..%d", lo, hi, w.first, w.last)
}

// compact makes first the first index: the new first index is stored before
// segments go, so a crash in between only leaves files that Open removes.
func (w *WAL) compact(first uint64) error {
	if err := w.stable.set(keyFirstIndex, binary.LittleEndian.AppendUint64(nil, first)); err != nil {
		return w.fail(err)
	}
	w.mu.Lock()
	w.first = first
	var gone []*segment
	for len(w.segs) > 1 && w.segs[1].base <= first {
		gone = append(gone, w.segs[0])
		w.segs = w.segs[1:]
	}
	w.mu.Unlock()
	for _, seg := range gone {
		if err := w.removeSegment(seg); err != nil {
			return w.fail(err)
		}
	}
	if len(gone) > 0 {
		return syncDir(w.dir)
	}
	return nil
}

// removeAll empties the log: every segment goes, newest first, so a crash
// midway leaves a prefix of the log, never a gap.
func (w *WAL) removeAll() error {
	w.mu.Lock()
	gone := w.segs
	w.segs, w.first, w.last = nil, 0, 0
	clear(w.recent[:])
	w.recentBytes = 0
	w.mu.Unlock()
	for j := len(gone) - 1; j >= 0; j-- {
		if err := w.removeSegment(gone[j]); err != nil {
			return w.fail(err)
		}
	}
	w.dirty = w.dirty[:0]
	w.written = 0
	w.cmu.Lock()
	w.durable.Store(0)
	w.cmu.Unlock()
	return syncDir(w.dir)
}

// truncate removes the entries from lo (> first) on. The cut is zeroed and synced
// before it returns, and later segments are removed newest first, so that
// a crash never brings removed entries back behind a gap.
func (w *WAL) truncate(lo uint64) error {
	w.mu.Lock()
	i := sort.Search(len(w.segs), func(i int) bool { return w.segs[i].base > lo }) - 1
	seg := w.segs[i]
	gone := slices.Clone(w.segs[i+1:])
	if seg.base == lo {
		// The whole segment goes: a later one may be made under its name.
		gone = append([]*segment{seg}, gone...)
		w.segs = w.segs[:i]
		seg = w.segs[i-1] // lo > first, so an earlier segment holds lo-1
	} else {
		w.segs = w.segs[:i+1]
	}
	w.mu.Unlock()
	for j := len(gone) - 1; j >= 0; j-- {
		if err := w.removeSegment(gone[j]); err != nil {
			return w.fail(err)
		}
	}
	if len(gone) > 0 {
		if err := syncDir(w.dir); err != nil {
			return w.fail(err)
		}
	}
	cut := seg.end
	if k := lo - seg.base; k < uint64(len(seg.offs)) {
		cut = int64(seg.offs[k])
	}
	zero := make([]byte, min(seg.end-cut, scanWindow))
	for off := cut; off < seg.end; off += int64(len(zero)) {
		if _, err := seg.f.WriteAt(zero[:min(int64(len(zero)), seg.end-off)], off); err != nil {
			return w.fail(fmt.Errorf("raftstore: truncate %s: %w", seg.path, err))
		}
	}
	if err := unix.Fdatasync(int(seg.f.Fd())); err != nil {
		return w.fail(fmt.Errorf("raftstore: truncate %s: %w", seg.path, err))
	}
	w.mu.Lock()
	seg.offs = seg.offs[:min(lo-seg.base, uint64(len(seg.offs)))]
	seg.end = cut
	w.last = lo - 1
	for i, c := range w.recent {
		if c != nil && c.Index >= lo {
			w.recentBytes -= len(c.Data) + len(c.Extensions)
			w.recent[i] = nil
		}
	}
	w.mu.Unlock()
	w.dirty = slices.DeleteFunc(w.dirty, func(s *segment) bool { return slices.Contains(gone, s) })
	w.written = w.last
	w.cmu.Lock()
	if w.durable.Load() > w.last {
		w.durable.Store(w.last)
	}
	w.cmu.Unlock()
	return nil
}

func (w *WAL) removeSegment(seg *segment) error {
	seg.f.Close()
	if err := os.Remove(seg.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// firstKeyID is the ID of the data key that sealed the first entry; see
// BoltLogStore.firstKeyID.
func (w *WAL) firstKeyID() (id uint32, ok bool, err error) {
	if w.sealer == nil {
		return 0, false, nil
	}
	first, _ := w.FirstIndex()
	if first == 0 {
		return 0, false, nil
	}
	rec, _, err := w.readEntry(first)
	if errors.Is(err, raft.ErrLogNotFound) {
		return 0, false, nil // compacted meanwhile
	}
	if err != nil {
		return 0, false, err
	}
	id, ok = sealedKeyID(rec[recHeaderLen:])
	return id, ok, nil
}

// Set stores a stable value (term, vote) durably.
func (w *WAL) Set(k, v []byte) error { return w.stable.set("raft."+string(k), v) }

// Get reads a stable value; raft expects "not found" for a missing key.
func (w *WAL) Get(k []byte) ([]byte, error) {
	v, ok := w.stable.get("raft." + string(k))
	if !ok {
		return nil, errors.New("not found")
	}
	return v, nil
}

// SetUint64 stores a stable number.
func (w *WAL) SetUint64(k []byte, v uint64) error {
	return w.Set(k, binary.BigEndian.AppendUint64(nil, v))
}

// GetUint64 reads a stable number; 0 when missing.
func (w *WAL) GetUint64(k []byte) (uint64, error) {
	v, err := w.Get(k)
	if err != nil || len(v) != 8 {
		return 0, nil
	}
	return binary.BigEndian.Uint64(v), nil
}

// Close syncs what is written and closes the files. A second Close returns
// an error wrapping os.ErrClosed.
func (w *WAL) Close() error {
	w.cmu.Lock()
	if w.closed {
		w.cmu.Unlock()
		return fmt.Errorf("raftstore: log: %w", os.ErrClosed)
	}
	w.cmu.Unlock()
	close(w.done)
	w.wg.Wait()
	err := w.sync()
	if errors.Is(err, ErrLogFailed) {
		err = nil // already reported
	}
	w.cmu.Lock()
	w.closed = true
	w.cond.Broadcast()
	w.cmu.Unlock()
	w.wmu.Lock()
	defer w.wmu.Unlock()
	return errors.Join(err, w.closeFiles())
}

func (w *WAL) closeFiles() error {
	var errs []error
	w.mu.Lock()
	for _, seg := range w.segs {
		errs = append(errs, seg.f.Close())
	}
	w.mu.Unlock()
	if w.stable != nil {
		errs = append(errs, w.stable.close())
	}
	return errors.Join(errs...)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("raftstore: sync dir %s: %w", dir, err)
	}
	return nil
}
