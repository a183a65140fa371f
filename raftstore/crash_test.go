package raftstore

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// The crash tests re-run the test binary as a child that writes until it is
// killed with SIGKILL (no graceful anything), then reopen its data dir.
const crashChildEnv = "SHOAL_RAFTSTORE_CRASH_CHILD"

func crashChild(t *testing.T, test, dir string, extraEnv ...string) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1")
	cmd.Env = append(append(os.Environ(), crashChildEnv+"="+dir), extraEnv...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, bufio.NewScanner(out)
}

func kill9(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	cmd.Wait()
}

// Writers run against a member on disk (encryption at rest on) and get
// SIGKILL mid-stream, three times over the same data dir. Each time the
// member starts again without an error and has every write it had
// acknowledged.
func TestKillDuringWritesKeepsAcknowledgedWrites(t *testing.T) {
	kek := make([]byte, KeySize)
	kek[5] = 1
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashWriter(dir, kek, os.Getenv("SHOAL_CRASH_ROUND"))
		return
	}
	if testing.Short() {
		t.Skip("kills child processes")
	}
	dir := t.TempDir()
	acked := map[string]bool{}
	for round := range 3 {
		cmd, lines := crashChild(t, "TestKillDuringWritesKeepsAcknowledgedWrites", dir, fmt.Sprintf("SHOAL_CRASH_ROUND=%d", round))
		n := 0
		for n < 400 && lines.Scan() {
			if id, ok := strings.CutPrefix(lines.Text(), "ack "); ok {
				acked[id] = true
				n++
			}
		}
		kill9(t, cmd)
		if n < 400 {
			t.Fatalf("round %d: the writer stopped after %d acknowledged writes", round, n)
		}

		s := &Store{ID: "c", Dir: dir, Schema: testSchema(), Transport: NewMemNetwork().Transport("c"), KeyEncryptionKey: kek}
		if err := s.Start(context.Background()); err != nil {
			t.Fatalf("round %d: restart after kill -9: %v", round, err)
		}
		if s.logs.repaired != "" {
			t.Logf("round %d: %s", round, s.logs.repaired)
		}
		eventually(t, "leader after restart", s.IsLeader)
		<-s.Ready()
		var missing []string
		s.View(func(tx *ReadTx) error {
			for id := range acked {
				if _, err := tx.Get("items", id); err != nil {
					missing = append(missing, id)
				}
			}
			return nil
		})
		t.Logf("round %d: %d acknowledged writes so far, %d objects after the restart", round, len(acked), countItems(s))
		s.Close()
		if len(missing) > 0 {
			t.Fatalf("round %d: %d acknowledged writes lost after kill -9, e.g. %v", round, len(missing), missing[:min(5, len(missing))])
		}
	}
}

// crashWriter writes from 8 goroutines until killed, printing each
// acknowledged ID; every 16th write carries 256 KiB, so a kill often lands
// in the middle of a large append.
func crashWriter(dir string, kek []byte, round string) {
	s := &Store{ID: "c", Dir: dir, Schema: testSchema(), Transport: NewMemNetwork().Transport("c"), KeyEncryptionKey: kek,
		Bootstrap: []Server{{ID: "c", Address: "c", Voter: true}}}
	ctx := context.Background()
	if err := s.Start(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		os.Exit(2)
	}
	for !s.IsLeader() {
		time.Sleep(5 * time.Millisecond)
	}
	var mu sync.Mutex
	// 256 KiB in index keys of 32 KiB (a key over 64 KiB is refused).
	var big []string
	for k := range 8 {
		big = append(big, strings.Repeat(string(rune('a'+k)), 32<<10))
	}
	for g := range 8 {
		go func() {
			for i := 0; ; i++ {
				it := &item{ID: fmt.Sprintf("r%s-g%d-%d", round, g, i)}
				if i%16 == 0 {
					it.Tags = big
				}
				if err := s.Update(ctx, func(tx *Tx) error { return tx.Create("items", it) }); err != nil {
					fmt.Fprintln(os.Stderr, "crash child write:", err)
					continue
				}
				mu.Lock()
				fmt.Printf("ack %s\n", it.ID)
				mu.Unlock()
			}
		}()
	}
	time.Sleep(2 * time.Minute) // the parent kills it long before
	os.Exit(3)
}

// A kill in the middle of one large append (a 96 MiB entry, caught while
// the kernel copies it into the file) leaves a torn record at the end of
// the log. The log opens without an error, ends at the last acknowledged
// entry, and takes appends again.
func TestKillDuringALargeAppendTruncatesTheTornTail(t *testing.T) {
	const acked = 200
	if dir := os.Getenv(crashChildEnv); dir != "" {
		w, err := OpenWAL(dir, nil, nil)
		if err != nil {
			fmt.Fprintln(os.Stderr, "crash child:", err)
			os.Exit(2)
		}
		for i := uint64(1); i <= acked; i++ {
			if err := w.StoreLogs([]*raft.Log{testLog(i, 1)}); err != nil {
				os.Exit(2)
			}
			fmt.Printf("ack %d\n", i)
		}
		fmt.Println("big")
		w.StoreLogs([]*raft.Log{{Index: acked + 1, Term: 1, Type: raft.LogCommand, Data: bytes.Repeat([]byte("z"), 96<<20)}})
		fmt.Println("big write finished")
		time.Sleep(time.Minute)
		os.Exit(3)
	}
	if testing.Short() {
		t.Skip("kills child processes")
	}
	dir := t.TempDir()
	cmd, lines := crashChild(t, "TestKillDuringALargeAppendTruncatesTheTornTail", dir)
	last := 0
	for lines.Scan() && lines.Text() != "big" {
		if s, ok := strings.CutPrefix(lines.Text(), "ack "); ok {
			last, _ = strconv.Atoi(s)
		}
	}
	if last != acked {
		t.Fatalf("child acknowledged %d entries, want %d", last, acked)
	}
	// The big entry goes to a segment of its own. Kill once the kernel has
	// copied 16 MiB of it: the rest of the record never reaches the file.
	seg := filepath.Join(dir, fmt.Sprintf("%020d%s", acked+1, segSuffix))
	deadline := time.Now().Add(30 * time.Second)
	word := make([]byte, 8)
	for {
		if f, err := os.Open(seg); err == nil {
			f.ReadAt(word, 16<<20)
			f.Close()
			if binary.LittleEndian.Uint64(word) != 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the large append never started")
		}
		time.Sleep(50 * time.Microsecond)
	}
	kill9(t, cmd)

	w, err := OpenWAL(dir, nil, nil)
	if err != nil {
		t.Fatalf("open after kill -9 during an append: %v", err)
	}
	if !strings.Contains(w.repaired, fmt.Sprintf("torn tail cut at entry %d", acked+1)) {
		w.Close()
		t.Fatalf("no torn tail repaired (the kill came after the write?): %q", w.repaired)
	}
	t.Log(w.repaired)
	checkRange(t, w, 1, acked, 1)
	storeRange(t, w, acked+1, acked+10, 2)
	w.Close()
	w, err = OpenWAL(dir, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if w.repaired != "" {
		t.Fatalf("repaired again: %s", w.repaired)
	}
	if l, _ := w.LastIndex(); l != acked+10 {
		t.Fatalf("last index %d, want %d", l, acked+10)
	}
}
