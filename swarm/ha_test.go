package swarm_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// Three managers, three workers: the leader dies and the cluster goes on
// under a new one, with the same tasks, healing failures again.
func TestManagerFailover(t *testing.T) {
	ctx := context.Background()
	network := raftstore.NewMemNetwork()
	var boot []raftstore.Server
	for i := range 3 {
		id := fmt.Sprint("m", i)
		boot = append(boot, raftstore.Server{ID: id, Address: id, Voter: true})
	}
	managers := map[string]*swarm.Manager{}
	var dispatchers []swarm.Dispatcher
	for _, s := range boot {
		m := &swarm.Manager{ID: s.ID, Transport: network.Transport(s.ID), Bootstrap: boot, HeartbeatPeriod: beat}
		if err := m.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		managers[s.ID] = m
		dispatchers = append(dispatchers, m)
	}
	leader := func() *swarm.Manager {
		for _, m := range managers {
			if m.Store().IsLeader() {
				return m
			}
		}
		return nil
	}
	c := &cluster{t: t, workers: map[string]*swarm.Worker{}, execs: map[string]*agent.FakeExecutor{}}
	c.eventually("a leader", func() bool { return leader() != nil })
	c.m = leader()
	for i := range 3 {
		id := fmt.Sprint("node", i)
		fe := &agent.FakeExecutor{}
		w := &swarm.Worker{NodeID: id, Executor: fe, Dispatcher: &swarm.Failover{Managers: dispatchers}, HeartbeatPeriod: beat,
			Description: api.NodeDescription{Hostname: id, Resources: api.Resources{NanoCPUs: 4e9, MemoryBytes: 8 << 30}}}
		if err := w.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { w.Close() })
		c.workers[id], c.execs[id] = w, fe
	}
	// Writes go to the leader; a follower says so.
	for _, m := range managers {
		if m != c.m {
			if _, err := m.CreateService(ctx, service("nope", api.Replicated(1))); !errors.Is(err, raftstore.ErrNotLeader) {
				t.Fatalf("write on a follower: %v", err)
			}
			break
		}
	}
	svc, err := c.m.CreateService(ctx, service("web", api.Replicated(3)))
	if err != nil {
		t.Fatal(err)
	}
	c.eventually("3 running", func() bool { return len(c.running(svc.ID)) == 3 })
	before := map[string]bool{}
	for _, tk := range c.running(svc.ID) {
		before[tk.ID] = true
	}

	old := c.m
	old.Close()
	delete(managers, old.ID)
	start := time.Now()
	c.eventually("a new leader", func() bool { return leader() != nil })
	c.m = leader()
	t.Logf("new leader %s after %v", c.m.ID, time.Since(start))
	// The same three tasks run on: no node was declared down, nothing
	// was started twice.
	time.Sleep(5 * beat)
	now := c.running(svc.ID)
	if len(now) != 3 {
		t.Fatalf("%d running after failover", len(now))
	}
	for _, tk := range now {
		if !before[tk.ID] {
			t.Fatalf("task %s started by the failover", tk.ID)
		}
	}
	// The new leader heals failures and takes new services.
	victim := now[0]
	c.execs[victim.NodeID].Exit(victim.ID, 1)
	c.eventually("replacement under the new leader", func() bool {
		for _, tk := range c.running(svc.ID) {
			if tk.Slot == victim.Slot && tk.ID != victim.ID {
				return true
			}
		}
		return false
	})
	svc2, err := c.m.CreateService(ctx, service("api", api.Replicated(2)))
	if err != nil {
		t.Fatal(err)
	}
	c.eventually("new service running", func() bool { return len(c.running(svc2.ID)) == 2 })
}
