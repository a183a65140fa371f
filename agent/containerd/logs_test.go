package containerd_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/swarm/api"
)

func TestLogsRotateFollowSinceAndTags(t *testing.T) {
	e := setup(t)
	e.LogMaxSize, e.LogMaxFiles = 16<<10, 3
	ctx := context.Background()
	stop := runUntilRunning(t, e, appTask("chatty", "lines", "3000"))
	defer func() { stop(); e.Remove(ctx, "chatty") }()
	waitLog(t, e, "chatty", "line 3000\n")
	// Rotation: at most 3 files, none much over the cap; the oldest lines are gone.
	files, _ := filepath.Glob(filepath.Join(e.StateDir, "logs", "chatty.log*"))
	if len(files) != 3 {
		t.Fatalf("log files %v, want 3", files)
	}
	for _, f := range files {
		if fi, _ := os.Stat(f); fi.Size() > 17<<10 {
			t.Fatalf("%s has %d bytes, cap 16 KiB", f, fi.Size())
		}
	}
	all := logs(t, e, "chatty", 0)
	if strings.Contains(all, "line 1\n") || !strings.HasSuffix(all, "line 3000\n") {
		t.Fatalf("rotated logs: first %q ... last %q", all[:20], all[len(all)-20:])
	}
	if got := logs(t, e, "chatty", 2); got != "line 2999\nline 3000\n" {
		t.Fatalf("tail 2: %q", got)
	}
	// Tags and timestamps.
	var first agent.LogLine
	e.Logs(ctx, "chatty", agent.LogOptions{Tail: 1}, func(l agent.LogLine) error { first = l; return nil })
	if first.TaskID != "chatty" || first.ServiceID != "svc" || first.Stream != "stdout" || time.Since(first.Time) > time.Minute {
		t.Fatalf("line %+v", first)
	}
	var buf bytes.Buffer
	e.Logs(ctx, "chatty", agent.LogOptions{Tail: 1}, agent.WriteLogs(&buf, true))
	if ts, _, ok := strings.Cut(buf.String(), " "); !ok || func() bool { _, err := time.Parse(time.RFC3339Nano, ts); return err != nil }() {
		t.Fatalf("timestamped line %q", buf.String())
	}
	// Since after the last line: nothing.
	n := 0
	e.Logs(ctx, "chatty", agent.LogOptions{Since: time.Now()}, func(agent.LogLine) error { n++; return nil })
	if n != 0 {
		t.Fatalf("%d lines since now", n)
	}
}

func TestLogsFollowUntilTaskEnds(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	stop := runUntilRunning(t, e, appTask("follow", "sleep"))
	var mu sync.Mutex
	var got []string
	done := make(chan error)
	go func() {
		done <- e.Logs(ctx, "follow", agent.LogOptions{Follow: true}, func(l agent.LogLine) error {
			mu.Lock()
			got = append(got, l.Line)
			mu.Unlock()
			return nil
		})
	}()
	waitLog(t, e, "follow", "sleeping")
	stop() // SIGTERM: the program prints "terminated" and exits
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("follow did not return after the task ended")
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(got) != "[sleeping terminated]" {
		t.Fatalf("followed %v", got)
	}
	e.Remove(ctx, "follow")
}

// A task's output pipes hold 1 MiB, so a task keeps running through an
// agent restart of a while (nothing reads its output then) instead of
// blocking after 64 KiB.
func TestOutputPipesAreLarge(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	stop := runUntilRunning(t, e, appTask("piped", "sleep"))
	defer func() { stop(); e.Remove(ctx, "piped") }()
	var fifos []string
	filepath.WalkDir(filepath.Join(e.StateDir, "fifo"), func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), "piped-std") {
			fifos = append(fifos, p)
		}
		return nil
	})
	if len(fifos) != 2 {
		t.Fatalf("output FIFOs of the task: %v", fifos)
	}
	for _, p := range fifos {
		f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		size, err := unix.FcntlInt(f.Fd(), unix.F_GETPIPE_SZ, 0)
		f.Close()
		if err != nil || size != 1<<20 {
			t.Fatalf("%s holds %d bytes (%v), want 1 MiB", p, size, err)
		}
	}
}

// A line longer than 16 KiB is cut into 16 KiB lines, so one runaway line
// cannot hold the agent's memory.
func TestLogsSplitLongLines(t *testing.T) {
	e := setup(t)
	if st := (&agent.Runner{Executor: e}).Run(context.Background(), appTask("long", "long", "40000")); st.State != api.TaskComplete {
		t.Fatalf("%+v", st)
	}
	defer e.Remove(context.Background(), "long")
	var lens []int
	e.Logs(context.Background(), "long", agent.LogOptions{}, func(l agent.LogLine) error { lens = append(lens, len(l.Line)); return nil })
	if fmt.Sprint(lens) != "[16384 16384 7232]" {
		t.Fatalf("line lengths in the log %v, want [16384 16384 7232]", lens)
	}
}
