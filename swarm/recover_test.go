package swarm_test

import (
	"context"
	"errors"
	"testing"

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
