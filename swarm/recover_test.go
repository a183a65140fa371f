package swarm_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/shoalproject/shoal/internal/syncbuf"
	"github.com/shoalproject/shoal/internal/waitfor"
	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// ForceNewCluster opens an autolocked manager's data only with its unlock
// key, refuses a running node and a dir without a node, and leaves the
// services as they were; the node starts again as the only voter.
func TestForceNewClusterNeedsTheUnlockKey(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	n := &swarm.Node{Dir: dir, ListenAddr: "127.0.0.1:0", AutoLock: true}
	if err := n.Init(ctx); err != nil {
		t.Fatal(err)
	}
	<-n.Ready()
	key, err := n.Manager().UnlockKey()
	if err != nil {
		t.Fatal(err)
	}
	svc, err := n.Client().CreateService(ctx, api.ServiceSpec{Annotations: api.Annotations{Name: "kept"}, Mode: api.Replicated(0),
		TaskTemplate: api.TaskSpec{Image: "example/web:1"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.ForceNewCluster(ctx); err == nil {
		t.Fatal("ForceNewCluster on a running node")
	}
	n.Close()

	if _, err := (&swarm.Node{Dir: t.TempDir()}).ForceNewCluster(ctx); err == nil {
		t.Fatal("ForceNewCluster on an empty dir")
	}
	if _, err := (&swarm.Node{Dir: dir}).ForceNewCluster(ctx); !errors.Is(err, swarm.ErrLocked) {
		t.Fatalf("without the unlock key: %v, want ErrLocked", err)
	}
	if _, err := (&swarm.Node{Dir: dir, UnlockWith: "SWMKEY-1-" + "0123456789abcdef0123456789abcdef0123456789a"}).ForceNewCluster(ctx); err == nil {
		t.Fatal("ForceNewCluster with a wrong unlock key")
	}
	r, err := (&swarm.Node{Dir: dir, UnlockWith: key}).ForceNewCluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.NodeID == "" || len(r.Before) != 1 || r.Before[0].ID != r.NodeID {
		t.Fatalf("recovery %+v", r)
	}
	n = &swarm.Node{Dir: dir, UnlockWith: key}
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	<-n.Ready()
	got, err := n.Client().Service(ctx, svc.ID)
	if err != nil || got.Spec.Name != "kept" {
		t.Fatalf("service after recovery: %+v %v", got, err)
	}
	if _, err := n.Client().ScaleService(ctx, "kept", 0); err != nil {
		t.Fatalf("a write after recovery: %v", err)
	}
}

// Two managers; the cluster is rebuilt from one (ForceNewCluster), and
// the other comes back with its old data. It is recorded as forced out
// and refused when it asks to rejoin, with the way out in the error (wipe
// it, join it with a token); the recovered cluster stays one voter.
func TestForceNewClusterRefusesTheManagersLeftOut(t *testing.T) {
	ctx := context.Background()
	m0, c := initNode(t)
	m1 := tnode(t)
	if err := m1.Join(ctx, c.JoinTokens.Manager, m0.Addr()); err != nil {
		t.Fatal(err)
	}
	nodeReady(t, m1)
	waitfor.True(t, "2 voters", func() bool { return len(voters(t, m0.Manager().Store())) == 2 })
	id0, id1 := m0.ID(), m1.ID()
	// A second Node on the running manager's dir is refused by the data
	// dir's lock, not only by the Node's own state.
	if _, err := (&swarm.Node{Dir: m0.Dir}).ForceNewCluster(ctx); !errors.Is(err, raftstore.ErrDirLocked) {
		t.Fatalf("ForceNewCluster on a running manager's dir: %v, want raftstore.ErrDirLocked", err)
	}
	// The operator's precondition is only that the managers are stopped
	// (ForceNewCluster refuses a running one, above): no crash is
	// claimed, and Close is immediate (no leave, no leadership handover,
	// the Raft configuration on disk still lists both), which is what
	// the recovery and the left-out manager's return are about. A
	// recovery itself killed midway is raftstore/recover_crash_test.go's.
	m1.Close()
	m0.Close()

	r, err := (&swarm.Node{Dir: m0.Dir}).ForceNewCluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Before) != 2 {
		t.Fatalf("recovery %+v: want the two managers before", r)
	}
	back0 := &swarm.Node{Dir: m0.Dir, Executor: m0.Executor, Logger: testLogger(t)}
	t.Cleanup(func() { back0.Close() })
	if err := back0.Start(ctx); err != nil {
		t.Fatal(err)
	}
	nodeReady(t, back0)
	c, err = back0.Client().Cluster(ctx)
	if err != nil || len(c.ForcedOut) != 1 || c.ForcedOut[0].ID != id1 {
		t.Fatalf("cluster after recovery: forced out %+v (%v), want %s", c.ForcedOut, err, id1)
	}

	var log syncbuf.Buffer
	back1 := &swarm.Node{Dir: m1.Dir, Executor: m1.Executor, Logger: slog.New(slog.NewTextHandler(&log, nil))}
	t.Cleanup(func() { back1.Close() })
	if err := back1.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, "the left-out manager told to wipe its data and join again", func() bool {
		return strings.Contains(log.String(), "refuses to take this manager back") && strings.Contains(log.String(), "wipe its data dir")
	})
	if v := voters(t, back0.Manager().Store()); len(v) != 1 || !v[id0] {
		t.Fatalf("voters %v, want %s alone", v, id0)
	}
	srvs, err := back0.Manager().Store().Servers(ctx)
	if err != nil || len(srvs) != 1 {
		t.Fatalf("Raft configuration %+v (%v): the left-out manager is back in", srvs, err)
	}

	// A recovery killed after it noted the members left out but before it
	// recorded them leaves manager/forced-out.json: the manager's next
	// leadership records them and removes the file. (The file is written
	// by hand here, as that crash leaves it.)
	back1.Close()
	back0.Close()
	pending := filepath.Join(m0.Dir, "manager", "forced-out.json")
	if err := os.WriteFile(pending, []byte(`["ghost-manager"]`), 0o600); err != nil {
		t.Fatal(err)
	}
	again := &swarm.Node{Dir: m0.Dir, Executor: m0.Executor, Logger: testLogger(t)}
	t.Cleanup(func() { again.Close() })
	if err := again.Start(ctx); err != nil {
		t.Fatal(err)
	}
	nodeReady(t, again)
	waitfor.True(t, "the noted member recorded as forced out", func() bool {
		c, err := again.Client().Cluster(ctx)
		return err == nil && slices.ContainsFunc(c.ForcedOut, func(r api.RemovedNode) bool { return r.ID == "ghost-manager" })
	})
	waitfor.True(t, "the note removed once recorded", func() bool {
		_, err := os.Stat(pending)
		return errors.Is(err, os.ErrNotExist)
	})
}
