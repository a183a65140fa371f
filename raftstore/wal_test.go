package raftstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func testLog(i, term uint64) *raft.Log {
	return &raft.Log{Index: i, Term: term, Type: raft.LogCommand, Data: []byte(fmt.Sprintf("entry %d term %d", i, term)),
		AppendedAt: time.Unix(0, int64(i)*1000)}
}

func storeRange(t *testing.T, w *WAL, from, to, term uint64) {
	t.Helper()
	var logs []*raft.Log
	for i := from; i <= to; i++ {
		logs = append(logs, testLog(i, term))
	}
	if err := w.StoreLogs(logs); err != nil {
		t.Fatalf("store %d..%d: %v", from, to, err)
	}
}

// checkRange reads first..last back and compares each entry.
func checkRange(t *testing.T, w *WAL, first, last, term uint64) {
	t.Helper()
	if f, _ := w.FirstIndex(); f != first {
		t.Fatalf("first index %d, want %d", f, first)
	}
	if l, _ := w.LastIndex(); l != last {
		t.Fatalf("last index %d, want %d", l, last)
	}
	for i := first; i <= last && last != 0; i++ {
		var got raft.Log
		if err := w.GetLog(i, &got); err != nil {
			t.Fatalf("get %d: %v", i, err)
		}
		want := testLog(i, term)
		if got.Index != i || got.Term != term || got.Type != want.Type || !bytes.Equal(got.Data, want.Data) || !got.AppendedAt.Equal(want.AppendedAt) {
			t.Fatalf("entry %d: got %+v, want %+v", i, got, want)
		}
	}
	var l raft.Log
	if err := w.GetLog(last+1, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("get past the end: %v", err)
	}
	if first > 1 {
		if err := w.GetLog(first-1, &l); !errors.Is(err, raft.ErrLogNotFound) {
			t.Fatalf("get before the start: %v", err)
		}
	}
}

func testSealer(t *testing.T, dir string) Sealer {
	kek := make([]byte, KeySize)
	kek[3] = 9
	kr, err := OpenKeyRing(filepath.Join(dir, "keys.json"), kek)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

func TestWALRoundTripAcrossReopenAndSegments(t *testing.T) {
	for _, sealed := range []bool{false, true} {
		t.Run(fmt.Sprintf("sealed=%v", sealed), func(t *testing.T) {
			dir := t.TempDir()
			var sealer Sealer
			if sealed {
				sealer = testSealer(t, dir)
			}
			// 4 KiB segments: a few dozen entries each, so appends roll
			// over to new segments often, some in the middle of a call.
			w, err := openWAL(filepath.Join(dir, "wal"), sealer, nil, 4096)
			if err != nil {
				t.Fatal(err)
			}
			checkRange(t, w, 0, 0, 1)
			storeRange(t, w, 1, 1, 1)
			storeRange(t, w, 2, 300, 1)
			for i := uint64(301); i <= 400; i++ {
				storeRange(t, w, i, i, 1)
			}
			// An entry larger than a segment gets a segment of its own size.
			big := &raft.Log{Index: 401, Term: 1, Type: raft.LogCommand, Data: bytes.Repeat([]byte("x"), 10000)}
			if err := w.StoreLogs([]*raft.Log{big}); err != nil {
				t.Fatal(err)
			}
			if err := w.SetUint64([]byte("CurrentTerm"), 7); err != nil {
				t.Fatal(err)
			}
			if err := w.Set([]byte("LastVoteCand"), []byte("m2")); err != nil {
				t.Fatal(err)
			}
			if err := w.StoreLogs([]*raft.Log{testLog(400, 1)}); err == nil {
				t.Fatal("an append that does not follow the last entry was accepted")
			}
			w.Close()
			if err := w.Close(); !errors.Is(err, os.ErrClosed) {
				t.Fatalf("second close: %v", err)
			}
			segs, _ := filepath.Glob(filepath.Join(dir, "wal", "*.seg"))
			if len(segs) < 5 {
				t.Fatalf("%d segments for 401 entries of 4 KiB segments", len(segs))
			}

			w, err = openWAL(filepath.Join(dir, "wal"), sealer, nil, 4096)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			if w.repaired != "" {
				t.Fatalf("a clean log was repaired: %s", w.repaired)
			}
			var got raft.Log
			if err := w.GetLog(401, &got); err != nil || !bytes.Equal(got.Data, big.Data) {
				t.Fatalf("big entry after reopen: %v", err)
			}
			if err := w.DeleteRange(401, 401); err != nil {
				t.Fatal(err)
			}
			checkRange(t, w, 1, 400, 1)
			if v, _ := w.GetUint64([]byte("CurrentTerm")); v != 7 {
				t.Fatalf("CurrentTerm %d after reopen", v)
			}
			if v, err := w.Get([]byte("LastVoteCand")); err != nil || string(v) != "m2" {
				t.Fatalf("LastVoteCand %q, %v", v, err)
			}
			if _, err := w.Get([]byte("missing")); err == nil || err.Error() != "not found" {
				t.Fatalf("missing stable key: %v", err)
			}
		})
	}
}

func TestWALDeleteRange(t *testing.T) {
	dir := t.TempDir()
	open := func() *WAL {
		w, err := openWAL(dir, nil, nil, 4096)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	w := open()
	storeRange(t, w, 1, 500, 1)
	segsBefore, _ := filepath.Glob(filepath.Join(dir, "*.seg"))

	// Compaction: a prefix goes, whole segments are removed, and the
	// first index holds across a restart even inside a segment.
	if err := w.DeleteRange(1, 250); err != nil {
		t.Fatal(err)
	}
	checkRange(t, w, 251, 500, 1)
	segsAfter, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segsAfter) >= len(segsBefore) {
		t.Fatalf("compaction removed no segment (%d before, %d after)", len(segsBefore), len(segsAfter))
	}
	w.Close()
	w = open()
	checkRange(t, w, 251, 500, 1)

	// A new leader overrides entries 400..500: they go, new ones take
	// their indexes, and a restart shows the new ones only.
	if err := w.DeleteRange(400, 500); err != nil {
		t.Fatal(err)
	}
	checkRange(t, w, 251, 399, 1)
	storeRange(t, w, 400, 450, 2)
	w.Close()
	w = open()
	if w.repaired != "" {
		t.Fatalf("truncation left something to repair: %s", w.repaired)
	}
	if l, _ := w.LastIndex(); l != 450 {
		t.Fatalf("last index %d after the override, want 450", l)
	}
	var l raft.Log
	for i := uint64(251); i <= 399; i++ {
		if err := w.GetLog(i, &l); err != nil || l.Term != 1 {
			t.Fatalf("entry %d kept from before: term %d, %v", i, l.Term, err)
		}
	}
	for i := uint64(400); i <= 450; i++ {
		if err := w.GetLog(i, &l); err != nil || l.Term != 2 {
			t.Fatalf("entry %d after override: term %d, %v", i, l.Term, err)
		}
	}

	if err := w.DeleteRange(300, 310); err == nil {
		t.Fatal("deleting from the middle of the log was accepted")
	}

	// Everything goes (a follower that installed a snapshot); the log
	// starts again at a later index and keeps it across a restart.
	if err := w.DeleteRange(251, 450); err != nil {
		t.Fatal(err)
	}
	checkRange(t, w, 0, 0, 1)
	storeRange(t, w, 1000, 1010, 3)
	w.Close()
	w = open()
	defer w.Close()
	checkRange(t, w, 1000, 1010, 3)
}

// lastRecord returns the path and offset of the newest record in dir.
func lastRecord(t *testing.T, dir string) (string, int64, int64) {
	t.Helper()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	p := segs[len(segs)-1]
	b, _ := os.ReadFile(p)
	var last, size int64 = -1, 0
	for off := int64(segHeaderLen); off+recHeaderLen <= int64(len(b)); {
		n := int64(binary.LittleEndian.Uint32(b[off:]))
		if n == 0 {
			break
		}
		last, size = off, recordSize(int(n))
		off += size
	}
	if last < 0 {
		t.Fatal("no record")
	}
	return p, last, size
}

// A crash in the middle of a write leaves the last record incomplete: the
// log must open, end before it, and take appends again.
func TestWALTornTailIsTruncated(t *testing.T) {
	dir := t.TempDir()
	w, err := openWAL(dir, nil, nil, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	storeRange(t, w, 1, 50, 1)
	storeRange(t, w, 51, 60, 1)
	w.Close()
	p, off, size := lastRecord(t, dir)
	f, _ := os.OpenFile(p, os.O_RDWR, 0)
	f.WriteAt(make([]byte, size/2), off+size/2) // the second half never reached the file
	f.Close()

	w, err = openWAL(dir, nil, nil, 1<<20)
	if err != nil {
		t.Fatalf("open after a torn write: %v", err)
	}
	if !strings.Contains(w.repaired, "torn tail cut at entry 60") {
		t.Fatalf("repair report: %q", w.repaired)
	}
	checkRange(t, w, 1, 59, 1)
	storeRange(t, w, 60, 70, 1)
	w.Close()
	w, err = openWAL(dir, nil, nil, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if w.repaired != "" {
		t.Fatalf("second open repaired again: %s", w.repaired)
	}
	checkRange(t, w, 1, 70, 1)
}

// A record damaged in a segment that is not the last one is never taken for
// a torn tail: entries after it exist in the next segment.
func TestWALDamageBeforeTheTailIsAnError(t *testing.T) {
	dir := t.TempDir()
	w, err := openWAL(dir, nil, nil, 4096)
	if err != nil {
		t.Fatal(err)
	}
	storeRange(t, w, 1, 200, 1)
	w.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	f, _ := os.OpenFile(segs[1], os.O_RDWR, 0)
	f.WriteAt([]byte{0xFF, 0xFF}, segHeaderLen+recHeaderLen+2)
	f.Close()
	_, err = openWAL(dir, nil, nil, 4096)
	var ce *CorruptError
	if !errors.As(err, &ce) || ce.File != segs[1] {
		t.Fatalf("damaged middle segment: %v", err)
	}
	t.Log(err)
}

func TestWALStableStoreSurvivesATornSlot(t *testing.T) {
	dir := t.TempDir()
	w, err := OpenWAL(dir, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.SetUint64([]byte("CurrentTerm"), 4)
	w.SetUint64([]byte("CurrentTerm"), 5)
	w.Close()
	// The newest write (term 5) is torn: the previous state comes back.
	p := filepath.Join(dir, stableFileName)
	st, _ := openStableFile(p)
	slot := int64(st.seq%2) * stableSlotSize
	st.close()
	f, _ := os.OpenFile(p, os.O_RDWR, 0)
	f.WriteAt(bytes.Repeat([]byte{0}, 20), slot+len64(stableMagic)+8)
	f.Close()
	w, err = OpenWAL(dir, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if v, _ := w.GetUint64([]byte("CurrentTerm")); v != 4 {
		t.Fatalf("term %d after a torn stable write, want the previous 4", v)
	}
}

func len64(s string) int64 { return int64(len(s)) }

// On the leader, command entries return before their sync; the durable
// index moves only once the sync is done, and never backwards.
func TestWALLeaderAppendsSyncInTheBackground(t *testing.T) {
	dir := t.TempDir()
	w, err := OpenWAL(dir, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	release := make(chan struct{})
	hook := func() { <-release }
	w.syncHook.Store(&hook)
	leading := func() bool { return true }
	w.leading.Store(&leading)
	done := make(chan error, 1)
	go func() { done <- w.StoreLogs([]*raft.Log{testLog(1, 1), testLog(2, 1)}) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a leader append waited for its sync")
	}
	if d := w.durableIndex(); d != 0 {
		t.Fatalf("durable index %d before the sync ran", d)
	}
	waited := make(chan error, 1)
	go func() { waited <- w.waitDurable(2) }()
	select {
	case <-waited:
		t.Fatal("waitDurable returned before the sync")
	case <-time.After(100 * time.Millisecond):
	}
	// A configuration entry is synced before StoreLogs returns, even on
	// the leader.
	cfg := &raft.Log{Index: 3, Term: 1, Type: raft.LogConfiguration, Data: []byte("cfg")}
	go func() { done <- w.StoreLogs([]*raft.Log{cfg}) }()
	select {
	case <-done:
		t.Fatal("a configuration entry returned before its sync")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if d := w.durableIndex(); d != 3 {
		t.Fatalf("durable index %d, want 3", d)
	}
}

// The recent entries stay within their byte bound, and what they serve is
// what was stored.
func TestWALRecentEntriesAreBounded(t *testing.T) {
	w, err := OpenWAL(t.TempDir(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	big := bytes.Repeat([]byte("b"), 1<<20)
	for i := uint64(1); i <= 40; i++ {
		if err := w.StoreLogs([]*raft.Log{{Index: i, Term: 1, Type: raft.LogCommand, Data: big}}); err != nil {
			t.Fatal(err)
		}
		if w.recentBytes > recentMaxBytes {
			t.Fatalf("%d bytes cached after %d entries of 1 MiB", w.recentBytes, i)
		}
	}
	storeRange(t, w, 41, 3000, 1)
	sum := 0
	for _, c := range w.recent {
		if c != nil {
			sum += len(c.Data)
		}
	}
	if sum != w.recentBytes {
		t.Fatalf("accounting says %d cached bytes, the slots hold %d", w.recentBytes, sum)
	}
	var l raft.Log
	for _, i := range []uint64{1, 40, 41, 2000, 3000} {
		if err := w.GetLog(i, &l); err != nil || l.Index != i || (i <= 40 && !bytes.Equal(l.Data, big)) || (i > 40 && !bytes.Equal(l.Data, testLog(i, 1).Data)) {
			t.Fatalf("entry %d: %v", i, err)
		}
	}
}
