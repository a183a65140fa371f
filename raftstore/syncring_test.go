package raftstore

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func newTestRing(t *testing.T) *syncRing {
	t.Helper()
	r, err := newSyncRing()
	if errors.Is(err, errNoRing) {
		t.Skipf("this kernel offers no io_uring (the log falls back to fdatasync): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.close)
	return r
}

// A goroutine waiting on the ring is parked in the poller ("IO wait"), not
// in a system call: its P is free for the goroutines that carry a write
// on. The operation here is a read of an empty pipe, which cannot complete
// until the test writes to it, so the wait is observed for certain.
func TestSyncRingWaitsParkedNotInASyscall(t *testing.T) {
	r := newTestRing(t)
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	buf := make([]byte, 16)
	type result struct {
		n   int32
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := r.do(ioringOpRead, p[0], 0, buf)
		done <- result{n, err}
	}()
	state := ""
	for deadline := time.Now().Add(20 * time.Second); ; {
		state = ringWaiterState()
		if strings.HasPrefix(state, "IO wait") {
			break
		}
		if time.Now().After(deadline) {
			unix.Write(p[1], []byte("x")) // free the goroutine before failing
			t.Fatalf("the goroutine waiting on the ring is in state %q, want it parked in IO wait (a P held in a syscall)", state)
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := unix.Write(p[1], []byte("hello")); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-done:
		if res.err != nil || res.n != 5 || string(buf[:5]) != "hello" {
			t.Fatalf("read through the ring: %d %v %q, want 5 bytes \"hello\"", res.n, res.err, buf[:res.n])
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the completion never woke the waiting goroutine")
	}
}

// ringWaiterState is the scheduler state of the goroutine inside
// syncRing.do, "" while there is none.
func ringWaiterState() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		if !strings.Contains(g, "(*syncRing).do(") {
			continue
		}
		head, _, _ := strings.Cut(g, "\n")
		if i := strings.Index(head, "["); i >= 0 {
			return strings.TrimSuffix(head[i+1:], "]:")
		}
	}
	return ""
}

// The ring syncs a file (its result is fdatasync's) and reports the
// kernel's error for a descriptor that cannot be synced.
func TestSyncRingSyncsAndReportsErrors(t *testing.T) {
	r := newTestRing(t)
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write([]byte("data")); err != nil {
		t.Fatal(err)
	}
	if err := r.fdatasync(f); err != nil {
		t.Fatalf("fdatasync through the ring: %v", err)
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	pr := os.NewFile(uintptr(p[0]), "pipe")
	defer pr.Close()
	defer unix.Close(p[1])
	want := unix.Fdatasync(p[0])
	if want == nil {
		t.Skip("this kernel syncs a pipe without complaint; no error to compare")
	}
	if err := r.fdatasync(pr); !errors.Is(err, want) {
		t.Fatalf("fdatasync of a pipe through the ring: %v, want %v as fdatasync(2) says", err, want)
	}
}

// The log uses the ring where the kernel has one, and its appends survive a
// reopen (the syncs went through it).
func TestWALSyncsThroughTheRing(t *testing.T) {
	newTestRing(t) // skips without io_uring
	dir := t.TempDir()
	w, err := OpenWAL(dir, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if w.ring == nil {
		t.Fatal("the log did not set up its sync ring on a kernel that has io_uring")
	}
	storeRange(t, w, 1, 50, 1)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if w.ring != nil {
		t.Fatal("Close left the ring open")
	}
	w, err = OpenWAL(dir, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	checkRange(t, w, 1, 50, 1)
}
