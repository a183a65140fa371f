package containerd_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	ctrd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"golang.org/x/sys/unix"

	"github.com/shoalproject/shoal/swarm/api"
)

type secrets map[string][]byte

func (s secrets) SecretData(_ context.Context, ref api.SecretReference) ([]byte, error) {
	if d, ok := s[ref.SecretName]; ok {
		return d, nil
	}
	return nil, fmt.Errorf("no secret %s", ref.SecretName)
}

func (s secrets) ConfigData(_ context.Context, ref api.ConfigReference) ([]byte, error) {
	if d, ok := s[ref.ConfigName]; ok {
		return d, nil
	}
	return nil, fmt.Errorf("no config %s", ref.ConfigName)
}

func TestSecretsOnTmpfsNeverOnDisk(t *testing.T) {
	e, d := setupDaemon(t)
	ctx := context.Background()
	secret := []byte("SHOAL-SECRET-" + fmt.Sprint(time.Now().UnixNano()))
	e.Secrets = secrets{"db-password": secret, "app.conf": []byte("x=1\n")}
	task := appTask("sec", "sha256", "/run/secrets/db-password")
	task.Spec.Secrets = []api.SecretReference{{SecretName: "db-password", File: api.FileTarget{Mode: 0o400}}}
	task.Spec.Configs = []api.ConfigReference{{ConfigName: "app.conf", File: api.FileTarget{Name: "/etc/app.conf", UID: "1000", GID: "1001"}}}
	stop := runUntilRunning(t, e, task)
	// Remove unmounts the task's tmpfs, also when the test fails half way.
	t.Cleanup(func() { stop(); e.Remove(ctx, "sec") })
	want := fmt.Sprintf("sha256 %x", sha256.Sum256(secret))
	waitLog(t, e, "sec", "sha256")
	if got := logs(t, e, "sec", 0); !strings.Contains(got, want) {
		t.Fatalf("container read %q, want %q", got, want)
	}
	code, out, err := e.Exec(ctx, "sec", []string{"/app", "check", "/etc/app.conf"})
	if err != nil || code != 0 {
		t.Fatalf("config not at its target: %d %s %v", code, out, err)
	}

	// Inside the container: each file has the mode and owner asked for
	// (a config's default mode is 0444), sits on a tmpfs, and cannot be
	// written, not even by root (the task runs as root, which the file
	// mode alone would not stop).
	for target, wantStat := range map[string]string{
		"/run/secrets/db-password": "mode=400 uid=0 gid=0 fs=tmpfs",
		"/etc/app.conf":            "mode=444 uid=1000 gid=1001 fs=tmpfs",
	} {
		code, out, err := e.Exec(ctx, "sec", []string{"/app", "stat", target})
		if err != nil || code != 0 || strings.TrimSpace(string(out)) != wantStat {
			t.Errorf("stat %s in the container: %d %q %v, want %q", target, code, out, err, wantStat)
		}
		code, out, err = e.Exec(ctx, "sec", []string{"/app", "write", target, "overwritten"})
		if err != nil || code == 0 || !strings.Contains(string(out), "read-only file system") {
			t.Errorf("writing %s in the container: exit %d %q %v, want a read-only file system error", target, code, out, err)
		}
	}
	if got := logs(t, e, "sec", 0); !strings.Contains(got, want) {
		t.Fatalf("log after the write attempts %q", got)
	}

	// The OCI spec asks for read-only, nosuid, nodev, noexec bind mounts of
	// files in the task's tmpfs...
	c, err := ctrd.New(d.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	nctx := namespaces.WithNamespace(ctx, e.Namespace)
	ctr, err := c.LoadContainer(nctx, "sec")
	if err != nil {
		t.Fatal(err)
	}
	spec, err := ctr.Spec(nctx)
	if err != nil {
		t.Fatal(err)
	}
	secretDir := filepath.Join(e.StateDir, "secrets", "sec")
	for _, target := range []string{"/run/secrets/db-password", "/etc/app.conf"} {
		i := slices.IndexFunc(spec.Mounts, func(m specsMount) bool { return m.Destination == target })
		if i < 0 {
			t.Fatalf("no mount for %s in the spec: %+v", target, spec.Mounts)
		}
		m := spec.Mounts[i]
		if m.Type != "bind" || filepath.Dir(m.Source) != secretDir {
			t.Errorf("mount of %s: type %q from %s, want a bind mount from %s", target, m.Type, m.Source, secretDir)
		}
		for _, o := range []string{"ro", "nosuid", "nodev", "noexec"} {
			if !slices.Contains(m.Options, o) {
				t.Errorf("mount of %s: options %v lack %q", target, m.Options, o)
			}
		}
	}
	// ... and that is what the container's mount table holds.
	in, err := e.Inspect(ctx, "sec")
	if err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{"/run/secrets/db-password", "/etc/app.conf"} {
		m, ok := mountAt(t, in.PID, target)
		if !ok {
			t.Fatalf("nothing mounted at %s in the container", target)
		}
		if m.fsType != "tmpfs" {
			t.Errorf("%s in the container is on %s, want tmpfs", target, m.fsType)
		}
		for _, o := range []string{"ro", "nosuid", "nodev", "noexec"} {
			if !slices.Contains(m.opts, o) {
				t.Errorf("%s in the container: mount options %v lack %q", target, m.opts, o)
			}
		}
		// The tmpfs under it is bounded and never swapped out.
		if !hasSizeOption(m.super) || (noswapKernel(t) && !slices.Contains(m.super, "noswap")) {
			t.Errorf("%s in the container: tmpfs options %v, want a size and noswap", target, m.super)
		}
	}

	// On the node, the files live in a tmpfs of the task's own that only
	// root can enter.
	var fs unix.Statfs_t
	if err := unix.Statfs(secretDir, &fs); err != nil || fs.Type != unix.TMPFS_MAGIC {
		t.Fatalf("secrets dir is not a tmpfs: type %x %v", fs.Type, err)
	}
	if fi, err := os.Stat(secretDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("secrets tmpfs mode %v %v, want 0700", fi.Mode(), err)
	}
	if m, ok := mountAt(t, os.Getpid(), secretDir); !ok || m.fsType != "tmpfs" || !containsAll(m.opts, "nosuid", "nodev", "noexec") {
		t.Fatalf("secrets tmpfs on the node: %+v (found %v), want tmpfs with nosuid, nodev, noexec", m, ok)
	}
	// While the task runs, the scan finds the secret exactly once: in the
	// tmpfs (which shows the scan can see it).
	if hits := find(secret, e.StateDir, d.Dir); len(hits) != 1 || !strings.Contains(hits[0], filepath.Join("secrets", "sec")) {
		t.Fatalf("secret found in %v, want only the task's tmpfs", hits)
	}
	stop()
	if err := e.Remove(ctx, "sec"); err != nil {
		t.Fatal(err)
	}
	// Nothing on disk holds the secret: not the agent's state, not
	// containerd's root (snapshots, content), not the logs.
	if hits := find(secret, e.StateDir, d.Dir); len(hits) > 0 {
		t.Fatalf("secret found on disk in %v", hits)
	}
	if _, err := os.Stat(secretDir); !os.IsNotExist(err) {
		t.Fatalf("secrets dir left after Remove: %v", err)
	}
	if m, ok := mountAt(t, os.Getpid(), secretDir); ok {
		t.Fatalf("secrets tmpfs still mounted after Remove: %+v", m)
	}
}

// hasSizeOption reports whether a tmpfs's options set its size.
func hasSizeOption(super []string) bool {
	return slices.ContainsFunc(super, func(o string) bool { return strings.HasPrefix(o, "size=") })
}

// noswapKernel reports whether the kernel knows tmpfs's noswap (Linux 6.4).
func noswapKernel(t *testing.T) bool {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	var major, minor int
	fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &major, &minor)
	return major > 6 || major == 6 && minor >= 4
}

// mountsAt counts the mounts stacked at path in this process's namespace.
func mountsAt(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == path {
			n++
		}
	}
	return n
}

// A tmpfs that a killed agent left mounted for a task (with what it held
// then) is replaced when the task is prepared again, not stacked under a
// second mount: the node ends up with one mount there, holding the current
// data, and none once the task is removed.
func TestSecretTmpfsLeftByAKilledAgentIsReplaced(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	e.Secrets = secrets{"token": []byte("NEW-TOKEN")}
	secretDir := filepath.Join(e.StateDir, "secrets", "again")
	if err := os.MkdirAll(secretDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", secretDir, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for mountsAt(t, secretDir) > 0 {
			if unix.Unmount(secretDir, unix.MNT_DETACH) != nil {
				break
			}
		}
	})
	os.WriteFile(filepath.Join(secretDir, "0"), []byte("OLD-TOKEN"), 0o400)

	task := appTask("again", "read", "/run/secrets/token")
	task.Spec.Secrets = []api.SecretReference{{SecretName: "token"}}
	if err := e.Prepare(ctx, task); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Remove(ctx, "again") })
	if n := mountsAt(t, secretDir); n != 1 {
		t.Fatalf("%d mounts at %s after Prepare over a stale tmpfs, want 1", n, secretDir)
	}
	m, _ := mountAt(t, os.Getpid(), secretDir)
	if m.fsType != "tmpfs" || !containsAll(m.opts, "nosuid", "nodev", "noexec") || !hasSizeOption(m.super) || !slices.Contains(m.super, "mode=700") ||
		(noswapKernel(t) && !slices.Contains(m.super, "noswap")) {
		t.Fatalf("secrets tmpfs on the node: %+v, want tmpfs nosuid,nodev,noexec with size, mode=700 and noswap", m)
	}
	if b, err := os.ReadFile(filepath.Join(secretDir, "0")); err != nil || string(b) != "NEW-TOKEN" {
		t.Fatalf("secret file holds %q %v, want the current data", b, err)
	}
	// Prepare again (the runner retries) changes nothing.
	if err := e.Prepare(ctx, task); err != nil {
		t.Fatal(err)
	}
	if n := mountsAt(t, secretDir); n != 1 {
		t.Fatalf("%d mounts at %s after a second Prepare, want 1", n, secretDir)
	}
	if err := e.Remove(ctx, "again"); err != nil {
		t.Fatal(err)
	}
	if n := mountsAt(t, secretDir); n != 0 {
		t.Fatalf("%d mounts at %s after Remove, want none", n, secretDir)
	}
}

func TestSecretMissingRejectsTask(t *testing.T) {
	e := setup(t)
	e.Secrets = secrets{}
	task := appTask("nosec", "sleep")
	task.Spec.Secrets = []api.SecretReference{{SecretName: "absent"}}
	if err := e.Prepare(context.Background(), task); err == nil || !strings.Contains(err.Error(), "absent") {
		t.Fatalf("prepare with a missing secret: %v", err)
	}
	if _, err := os.Stat(filepath.Join(e.StateDir, "secrets", "nosec")); !os.IsNotExist(err) {
		t.Fatal("secrets dir left behind")
	}
}

func find(needle []byte, dirs ...string) []string {
	var hits []string
	for _, dir := range dirs {
		filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
			if err == nil && info.Mode().IsRegular() {
				if b, _ := os.ReadFile(p); bytes.Contains(b, needle) {
					hits = append(hits, p)
				}
			}
			return nil
		})
	}
	return hits
}
