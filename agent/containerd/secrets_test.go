package containerd_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
	task.Spec.Configs = []api.ConfigReference{{ConfigName: "app.conf", File: api.FileTarget{Name: "/etc/app.conf"}}}
	stop := runUntilRunning(t, e, task)
	want := fmt.Sprintf("sha256 %x", sha256.Sum256(secret))
	waitLog(t, e, "sec", "sha256")
	if got := logs(t, e, "sec", 0); !strings.Contains(got, want) {
		t.Fatalf("container read %q, want %q", got, want)
	}
	code, out, err := e.Exec(ctx, "sec", []string{"/app", "check", "/etc/app.conf"})
	if err != nil || code != 0 {
		t.Fatalf("config not at its target: %d %s %v", code, out, err)
	}
	// Where the files live is a tmpfs.
	var fs unix.Statfs_t
	if err := unix.Statfs(filepath.Join(e.StateDir, "secrets", "sec"), &fs); err != nil || fs.Type != unix.TMPFS_MAGIC {
		t.Fatalf("secrets dir is not a tmpfs: type %x %v", fs.Type, err)
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
	if _, err := os.Stat(filepath.Join(e.StateDir, "secrets", "sec")); !os.IsNotExist(err) {
		t.Fatalf("secrets dir left after Remove: %v", err)
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
