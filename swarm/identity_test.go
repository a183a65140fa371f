package swarm

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm/api"
)

// A switch of autolock that a crash interrupts leaves a manager that
// starts, with autolock off and its key on disk: the operator never saw
// the new unlock key, so the manager must not lock itself out.
func TestInterruptedAutolockSwitch(t *testing.T) {
	ctx := context.Background()
	for _, stage := range []string{"after rewrapping the keys", "after recording autolock"} {
		t.Run(stage, func(t *testing.T) {
			dir := t.TempDir()
			m := &Manager{Dir: dir}
			if err := m.Start(ctx); err != nil {
				t.Fatal(err)
			}
			waitReady(t, m)
			svc, err := m.CreateService(ctx, api.ServiceSpec{Annotations: api.Annotations{Name: "kept"}, Mode: api.Replicated(1),
				TaskTemplate: api.TaskSpec{Image: "x"}})
			if err != nil {
				t.Fatal(err)
			}
			id := m.ID
			m.Close()
			// What SetAutoLock(true) leaves when the process dies midway.
			old, err := readKEK(filepath.Join(dir, kekFile))
			if err != nil {
				t.Fatal(err)
			}
			next := newKEK()
			if err := writeKEK(filepath.Join(dir, kekNextFile), next); err != nil {
				t.Fatal(err)
			}
			kr, err := raftstore.OpenKeyRing(filepath.Join(dir, "keys.json"), old)
			if err != nil {
				t.Fatal(err)
			}
			if err := kr.Rewrap(next); err != nil {
				t.Fatal(err)
			}
			if stage == "after recording autolock" {
				if err := writeIdentity(dir, identity{ID: id, AutoLock: true}); err != nil {
					t.Fatal(err)
				}
			}
			m = &Manager{Dir: dir}
			if err := m.Start(ctx); err != nil {
				t.Fatalf("restart after an interrupted switch: %v", err)
			}
			defer m.Close()
			if m.Locked() {
				t.Fatal("locked with a key nobody was given")
			}
			waitReady(t, m)
			if _, err := m.Service(svc.ID); err != nil {
				t.Fatal(err)
			}
			if k, err := readKEK(filepath.Join(dir, kekFile)); err != nil || string(k) != string(next) {
				t.Fatalf("the key file does not hold the key in use: %v", err)
			}
			if _, err := os.Stat(filepath.Join(dir, kekNextFile)); !os.IsNotExist(err) {
				t.Fatalf("the interrupted switch's file is left: %v", err)
			}
			if id2, _, _ := readIdentity(dir); id2.AutoLock {
				t.Fatal("autolock recorded on, with no unlock key given out")
			}
		})
	}
}

func waitReady(t *testing.T, m *Manager) {
	t.Helper()
	select {
	case <-m.Ready():
	case <-time.After(20 * time.Second):
		t.Fatal("manager not ready")
	}
}
