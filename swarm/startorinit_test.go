package swarm_test

import (
	"context"
	"errors"
	"net"
	"testing"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// StartOrInit inits a new cluster in an empty dir and starts from the dir
// after that (the same node, its services kept); Shutdown stops the node
// once, and a second Shutdown or Close says it is closed.
func TestNodeStartOrInit(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	addr := "127.0.0.1:0" // then the port the first life took
	up := func() *swarm.Node {
		t.Helper()
		n := &swarm.Node{Dir: dir, ListenAddr: addr, Executor: &agent.FakeExecutor{}}
		if err := n.StartOrInit(ctx); err != nil {
			t.Fatalf("StartOrInit: %v", err)
		}
		<-n.Ready()
		return n
	}
	first := up()
	id, addr := first.ID(), first.Addr()
	if _, err := first.Client().CreateService(ctx, service("web", api.Replicated(1))); err != nil {
		t.Fatal(err)
	}
	if err := first.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := first.Shutdown(ctx); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("a second Shutdown: %v, want net.ErrClosed", err)
	}
	if err := first.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Close after Shutdown: %v, want net.ErrClosed", err)
	}

	again := up()
	defer again.Close()
	if again.ID() != id {
		t.Fatalf("started again as %s, was %s: the dir's node was not started", again.ID(), id)
	}
	if _, err := again.Client().Service(ctx, "web"); err != nil {
		t.Fatalf("the service after the restart: %v", err)
	}
}
