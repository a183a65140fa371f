package containerd_test

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/agent/containerd"
)

// execDirSize sums the sizes of the files below dir.
func execDirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// mountsBelow lists this process's mount points at or below dir.
func mountsBelow(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && (f[1] == dir || strings.HasPrefix(f[1], dir+"/")) {
			out = append(out, f[1])
		}
	}
	return out
}

// An exec whose command prints without end must not fill the node's disk:
// the output the shim writes stays under ExecOutputLimit, the exec still
// ends (at its context's end) with the start of the output, and nothing of
// it is left afterwards. Output a killed agent left (files, tmpfs mounts)
// is gone once the next agent connects.
func TestExecOutputBoundedAndStaleOutputRemoved(t *testing.T) {
	first := setup(t)
	ctx := context.Background()

	// What a killed agent leaves: an old-style output file and a tmpfs
	// still mounted for an exec that never finished.
	state := t.TempDir()
	execDir := filepath.Join(state, "exec")
	stale := filepath.Join(execDir, "exec-7-deadbeef")
	if err := os.MkdirAll(stale, 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(execDir, "exec-3-deadbeef.out"), []byte("old output"), 0o600)
	if err := syscall.Mount("tmpfs", stale, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Unmount(stale, syscall.MNT_DETACH) })
	os.WriteFile(filepath.Join(stale, "out"), []byte("old output"), 0o600)

	e := &containerd.Executor{Address: first.Address, Namespace: first.Namespace, StateDir: state, ImageDir: first.ImageDir}
	if err := e.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	if ents, _ := os.ReadDir(execDir); len(ents) != 0 || len(mountsBelow(t, execDir)) != 0 {
		t.Fatalf("after Connect, %s holds %d entries and mounts %v; want the old output gone", execDir, len(ents), mountsBelow(t, execDir))
	}

	stop := runUntilRunning(t, e, appTask("flood", "sleep"))
	defer func() { stop(); e.Remove(ctx, "flood") }()

	// Watch what the shim writes while the command floods its output.
	var most int64
	watching := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			if n := execDirSize(execDir); n > most {
				most = n
			}
			select {
			case <-watching:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	xctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	code, out, err := e.Exec(xctx, "flood", []string{"/app", "lines", "100000000"})
	cancel()
	close(watching)
	<-watched
	if most > containerd.ExecOutputLimit {
		t.Fatalf("exec output reached %d bytes on the node; want at most ExecOutputLimit (%d)", most, containerd.ExecOutputLimit)
	}
	if most < containerd.ExecOutputLimit/2 {
		t.Fatalf("exec output reached only %d bytes: the command did not flood (the test proves nothing)", most)
	}
	if err == nil || !strings.Contains(err.Error(), "output over") {
		t.Fatalf("exec of an endless output: code %d err %v; want an error saying the output went over the limit", code, err)
	}
	if len(out) != agent.MaxExecOutput || !strings.HasPrefix(string(out), "line 1\nline 2\n") {
		t.Fatalf("exec output kept: %d bytes starting %.20q; want the first %d bytes", len(out), out, agent.MaxExecOutput)
	}
	if ents, _ := os.ReadDir(execDir); len(ents) != 0 || len(mountsBelow(t, execDir)) != 0 {
		t.Fatalf("after the exec, %s holds %d entries and mounts %v; want nothing", execDir, len(ents), mountsBelow(t, execDir))
	}
	// A short command still gives its exit code and output.
	code, out, err = e.Exec(ctx, "flood", []string{"/app", "exit", "3"})
	if err != nil || code != 3 || !strings.Contains(string(out), "exiting 3") {
		t.Fatalf("short exec: %d %q %v", code, out, err)
	}
}
