package swarm_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// marker is a name that must never appear in a manager's files: the Raft
// log and snapshots are sealed at rest.
const marker = "plaintext-marker-7f3a"

func assertSealed(t *testing.T, dir string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(marker)) {
			t.Fatalf("%s holds the service's name in plaintext", p)
		}
		return nil
	})
}

func startManager(t *testing.T, m *swarm.Manager) *swarm.Manager {
	t.Helper()
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func ready(t *testing.T, m *swarm.Manager) {
	t.Helper()
	waitForWithin(t, 20e9, "manager ready", func() bool {
		select {
		case <-m.Ready():
			return true
		default:
			return false
		}
	})
}

// Encryption at rest is on by default; autolock keeps its key off the disk
// and a restarted manager waits, locked, for it.
func TestEncryptionAtRestAndAutolock(t *testing.T) {
	ctx := context.Background()
	// Default: sealed, with the key beside the data.
	plain := t.TempDir()
	m := startManager(t, &swarm.Manager{Dir: plain})
	ready(t, m)
	if _, err := m.CreateService(ctx, service(marker, api.Replicated(1))); err != nil {
		t.Fatal(err)
	}
	if err := m.Store().Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := m.UnlockKey(); err == nil {
		t.Fatal("an unlock key without autolock")
	}
	m.Close()
	assertSealed(t, plain)
	if _, err := os.Stat(filepath.Join(plain, "manager.key")); err != nil {
		t.Fatalf("without autolock the key is kept beside the data: %v", err)
	}

	// Autolock.
	dir := t.TempDir()
	m = startManager(t, &swarm.Manager{Dir: dir, AutoLock: true})
	ready(t, m)
	key, err := m.UnlockKey()
	if err != nil || !strings.HasPrefix(key, "SWMKEY-1-") {
		t.Fatalf("unlock key %q, %v", key, err)
	}
	svc, err := m.CreateService(ctx, service(marker, api.Replicated(1)))
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	assertSealed(t, dir)
	if _, err := os.Stat(filepath.Join(dir, "manager.key")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("autolock left the key on disk: %v", err)
	}
	// Restarted: locked until unlocked.
	m = startManager(t, &swarm.Manager{Dir: dir})
	if !m.Locked() {
		t.Fatal("restarted manager with autolock is not locked")
	}
	if _, err := m.Services(); !errors.Is(err, swarm.ErrLocked) {
		t.Fatalf("reads while locked: %v", err)
	}
	select {
	case <-m.Ready():
		t.Fatal("a locked manager is ready")
	default:
	}
	for _, bad := range []string{"not a key", "SWMKEY-1-abc", "SWMKEY-1-" + strings.Repeat("A", 43)} {
		if err := m.Unlock(ctx, bad); !errors.Is(err, swarm.ErrBadUnlockKey) {
			t.Fatalf("unlock with %q: %v", bad, err)
		}
	}
	if err := m.Unlock(ctx, key); err != nil {
		t.Fatal(err)
	}
	ready(t, m)
	if got, err := m.Service(svc.ID); err != nil || got.Spec.Name != marker {
		t.Fatalf("service after unlock: %v %v", got, err)
	}
	// The key can be given at start too; rotating it retires the old one.
	m.Close()
	m = startManager(t, &swarm.Manager{Dir: dir, UnlockWith: key})
	ready(t, m)
	key2, err := m.SetAutoLock(ctx, true)
	if err != nil || key2 == key {
		t.Fatalf("rotated key %q (old %q): %v", key2, key, err)
	}
	m.Close()
	if err := (&swarm.Manager{Dir: dir, UnlockWith: key}).Start(ctx); !errors.Is(err, swarm.ErrBadUnlockKey) {
		t.Fatalf("start with the key retired by rotation: %v", err)
	}
	m = startManager(t, &swarm.Manager{Dir: dir})
	if err := m.Unlock(ctx, key); !errors.Is(err, swarm.ErrBadUnlockKey) {
		t.Fatalf("unlock with the retired key: %v", err)
	}
	if err := m.Unlock(ctx, key2); err != nil {
		t.Fatal(err)
	}
	// Off again: the key goes back beside the data, no unlock needed.
	if _, err := m.SetAutoLock(ctx, false); err != nil {
		t.Fatal(err)
	}
	m.Close()
	m = startManager(t, &swarm.Manager{Dir: dir})
	if m.Locked() {
		t.Fatal("locked after autolock was turned off")
	}
	ready(t, m)
	if _, err := m.Service(svc.ID); err != nil {
		t.Fatal(err)
	}
	// Autolock without a data dir is refused.
	if err := (&swarm.Manager{AutoLock: true}).Start(ctx); err == nil {
		t.Fatal("autolock in memory accepted")
	}
}

// A new manager with autolock that stops before anyone took its unlock key
// does not lock itself out: it comes back with autolock off.
func TestAutolockKeyNeverHandedOut(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	m := startManager(t, &swarm.Manager{Dir: dir, AutoLock: true})
	ready(t, m)
	m.Close() // UnlockKey was never called
	m = startManager(t, &swarm.Manager{Dir: dir})
	if m.Locked() {
		t.Fatal("locked with a key nobody was given")
	}
	ready(t, m)
	if _, err := m.UnlockKey(); err == nil {
		t.Fatal("autolock still on")
	}
	// Turned on again and the key taken: now a restart is locked.
	key, err := m.SetAutoLock(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	m = startManager(t, &swarm.Manager{Dir: dir})
	if !m.Locked() {
		t.Fatal("not locked once the key was handed out")
	}
	if err := m.Unlock(ctx, key); err != nil {
		t.Fatal(err)
	}
}

// A first Start that fails leaves the data dir as it found it: a second
// Start begins again instead of finding half a manager.
func TestFailedFirstStartLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	bad := &swarm.Manager{Dir: dir, ID: "m1",
		// Two members with one ID: raft refuses to bootstrap.
		Bootstrap: []raftstore.Server{{ID: "m1", Address: "a", Voter: true}, {ID: "m1", Address: "b", Voter: true}}}
	if err := bad.Start(context.Background()); err == nil {
		bad.Close()
		t.Fatal("a bootstrap with a duplicate member started")
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Fatalf("a failed first start left %v", names)
	}
	m := startManager(t, &swarm.Manager{Dir: dir})
	ready(t, m)
}
