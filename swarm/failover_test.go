package swarm_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// scripted answers Register with a fixed error and counts calls.
type scripted struct {
	swarm.Dispatcher
	err   error
	calls int
}

func (s *scripted) Register(context.Context, string, api.NodeDescription) (swarm.Session, error) {
	s.calls++
	return swarm.Session{}, s.err
}

func (s *scripted) UpdateStatus(context.Context, string, []agent.StatusUpdate) error {
	s.calls++
	return s.err
}

// Failover tries the next manager only when another one may succeed.
func TestFailoverOnlyForRetryableErrors(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		err       error
		tryOthers bool
	}{
		{fmt.Errorf("%w (injected)", swarm.ErrNotManagerLeader), true},
		{fmt.Errorf("dial: %w", net.ErrClosed), true},
		{&net.OpError{Op: "dial", Err: errors.New("connection refused")}, true},
		{fmt.Errorf("%w: node ID", api.ErrInvalidSpec), false},
		{fmt.Errorf("%w: node x", swarm.ErrNotFound), false},
	} {
		first, second := &scripted{err: c.err}, &scripted{}
		f := &swarm.Failover{Managers: []swarm.Dispatcher{first, second}}
		_, err := f.Register(ctx, "n1", api.NodeDescription{})
		if c.tryOthers && (err != nil || second.calls != 1) {
			t.Errorf("%v: second manager called %d times, result %v; want a failover", c.err, second.calls, err)
		}
		if !c.tryOthers && (!errors.Is(err, c.err) || second.calls != 0) {
			t.Errorf("%v: second manager called %d times, result %v; want the error at once", c.err, second.calls, err)
		}
	}
	// A later call starts with the manager that took the last one.
	first, second := &scripted{err: swarm.ErrNotManagerLeader}, &scripted{}
	f := &swarm.Failover{Managers: []swarm.Dispatcher{first, second}}
	f.Register(ctx, "n1", api.NodeDescription{})
	f.UpdateStatus(ctx, "n1", nil)
	if first.calls != 1 || second.calls != 2 {
		t.Fatalf("calls: first %d, second %d; want 1 and 2", first.calls, second.calls)
	}
}

// Worker lifecycle: errors before Start, an idempotent Start, a second
// Close that says so.
func TestWorkerLifecycle(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, 0)
	m := c.Leader()
	if err := (&swarm.Worker{}).Start(ctx); err == nil {
		t.Fatal("a worker without NodeID, Executor and Dispatcher started")
	}
	if err := (&swarm.Worker{NodeID: "bad id", Executor: &agent.FakeExecutor{}, Dispatcher: m}).Start(ctx); !errors.Is(err, api.ErrInvalidSpec) {
		t.Fatalf("bad node ID: %v", err)
	}
	fe := &agent.FakeExecutor{}
	t.Cleanup(fe.ExitAll)
	w := &swarm.Worker{NodeID: "w1", Executor: fe, Dispatcher: m}
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.Start(ctx); err != nil {
		t.Fatalf("second Start: %v", err)
	}
	waitForWithin(t, 20e9, "worker ready", func() bool {
		select {
		case <-w.Ready():
			return true
		default:
			return false
		}
	})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	if err := w.Start(ctx); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Start after Close: %v", err)
	}
}
