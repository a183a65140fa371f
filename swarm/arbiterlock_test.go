package swarm_test

import (
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm"
)

// An arbiter joined with AutoLock keeps its key off the disk once
// UnlockKey handed it out: restarted, it refuses to start without the
// key or with a wrong one, and votes again with the right one.
func TestArbiterAutoLock(t *testing.T) {
	ctx := context.Background()
	m := &swarm.Node{Dir: t.TempDir(), ListenAddr: "127.0.0.1:0"}
	if err := m.Init(ctx); err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	<-m.Ready()
	c, err := m.Client().Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	a := &swarm.Arbiter{Dir: dir, ListenAddr: "127.0.0.1:0", AutoLock: true}
	if err := a.Join(ctx, c.JoinTokens.Arbiter, m.Addr()); err != nil {
		t.Fatal(err)
	}
	<-a.Ready()
	key, err := a.UnlockKey()
	if err != nil || !strings.HasPrefix(key, "SWMKEY-1-") {
		t.Fatalf("unlock key %q, %v", key, err)
	}
	a.Close()
	for _, f := range []string{"arbiter.key", "arbiter.key.next"} {
		if _, err := os.Stat(filepath.Join(dir, f)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s is on the disk after the key was handed out (%v)", f, err)
		}
	}
	if err := (&swarm.Arbiter{Dir: dir}).Start(ctx); !errors.Is(err, swarm.ErrLocked) {
		t.Fatalf("start without the key: %v, want ErrLocked", err)
	}
	// A well-formed key that is not this arbiter's.
	wrong := "SWMKEY-1-" + base64.RawStdEncoding.EncodeToString(make([]byte, raftstore.KeySize))
	for _, k := range []string{"SWMKEY-1-nope", wrong} {
		if err := (&swarm.Arbiter{Dir: dir, UnlockWith: k}).Start(ctx); !errors.Is(err, swarm.ErrBadUnlockKey) {
			t.Fatalf("start with key %q: %v, want ErrBadUnlockKey", k, err)
		}
	}
	back := &swarm.Arbiter{Dir: dir, UnlockWith: key}
	if err := back.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	<-back.Ready()
	if back.ID() != a.ID() {
		t.Fatalf("restarted as %s, was %s", back.ID(), a.ID())
	}
}
