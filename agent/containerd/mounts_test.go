package containerd_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/shoalproject/shoal/swarm/api"
)

// Mounts a task asks for are what its container gets: read-only ones cannot
// be written, writable ones reach the node, a tmpfs has its size and the
// nosuid and nodev flags.
func TestMountsReadOnlyWritableAndTmpfs(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "existing"), []byte("old"), 0o644)
	task := appTask("mounts", "sleep")
	task.Spec.Mounts = []api.Mount{
		{Type: api.MountBind, Source: src, Target: "/ro-bind", ReadOnly: true},
		{Type: api.MountBind, Source: src, Target: "/rw-bind"},
		{Type: api.MountVolume, Source: "vol", Target: "/ro-vol", ReadOnly: true},
		{Type: api.MountVolume, Source: "vol", Target: "/rw-vol"},
		{Type: api.MountTmpfs, Target: "/scratch", TmpfsSizeBytes: 2 << 20},
	}
	stop := runUntilRunning(t, e, task)
	defer func() { stop(); e.Remove(ctx, "mounts") }()
	write := func(path string) (int, string) {
		t.Helper()
		code, out, err := e.Exec(ctx, "mounts", []string{"/app", "write", path, "new"})
		if err != nil {
			t.Fatal(err)
		}
		return code, string(out)
	}
	for _, p := range []string{"/ro-bind/existing", "/ro-bind/created", "/ro-vol/created"} {
		if code, out := write(p); code == 0 || !strings.Contains(out, "read-only file system") {
			t.Errorf("write %s on a read-only mount: exit %d %q", p, code, out)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(src, "existing")); string(b) != "old" {
		t.Fatalf("a read-only bind mount's file changed on the node: %q", b)
	}
	for _, p := range []string{"/rw-bind/created", "/rw-vol/created", "/scratch/created"} {
		if code, out := write(p); code != 0 {
			t.Errorf("write %s on a writable mount: exit %d %q", p, code, out)
		}
	}
	if b, err := os.ReadFile(filepath.Join(src, "created")); err != nil || string(b) != "new" {
		t.Fatalf("a writable bind mount's file is not on the node: %q %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(e.StateDir, "volumes", "vol", "_data", "created")); err != nil || string(b) != "new" {
		t.Fatalf("a writable volume's file is not on the node: %q %v", b, err)
	}
	in, err := e.Inspect(ctx, "mounts")
	if err != nil {
		t.Fatal(err)
	}
	m, ok := mountAt(t, in.PID, "/scratch")
	if !ok || m.fsType != "tmpfs" || !containsAll(m.opts, "rw", "nosuid", "nodev") || !slices.Contains(m.super, "size=2048k") {
		t.Fatalf("tmpfs mount in the container: %+v (found %v), want a 2 MiB tmpfs, nosuid, nodev", m, ok)
	}
	if code, out, err := e.Exec(ctx, "mounts", []string{"/app", "stat", "/scratch"}); err != nil || code != 0 || !strings.HasPrefix(string(out), "mode=1777 ") {
		t.Fatalf("tmpfs mode in the container: %d %q %v, want 1777", code, out, err)
	}
}

// The init binary is bind-mounted read-only: a task cannot replace the
// node's tini. (Checked in the mount table, not by writing: a wrong mount
// would let the write reach the node's binary.)
func TestInitBinaryMountedReadOnly(t *testing.T) {
	e := setup(t)
	if _, err := os.Stat("/usr/bin/tini-static"); err != nil {
		t.Skip("init test needs tini-static: apt-get install tini (scripts/test.sh does)")
	}
	yes := true
	task := appTask("initro", "sleep")
	task.Spec.Init = &yes
	stop := runUntilRunning(t, e, task)
	defer func() { stop(); e.Remove(context.Background(), "initro") }()
	in, _ := e.Inspect(context.Background(), "initro")
	m, ok := mountAt(t, in.PID, "/sbin/shoal-init")
	if !ok || !slices.Contains(m.opts, "ro") {
		t.Fatalf("init binary mount in the container: %+v (found %v), want read-only", m, ok)
	}
}
