package swarm_test

import (
	"context"
	"crypto/tls"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/internal/testca"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// Workers reach the manager over HTTP/2 with mutual TLS; a node is who its
// certificate says.
func TestRemoteDispatcher(t *testing.T) {
	ctx := context.Background()
	ca, err := testca.New()
	if err != nil {
		t.Fatal(err)
	}
	c := newCluster(t, 0)
	m := c.Leader()
	srv := httptest.NewUnstartedServer(m.Handler(nil))
	if srv.TLS, err = ca.Config("manager"); err != nil {
		t.Fatal(err)
	}
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()
	remote := func(node string) *swarm.RemoteDispatcher {
		conf, err := ca.Config(node)
		if err != nil {
			t.Fatal(err)
		}
		return &swarm.RemoteDispatcher{Addrs: []string{addr}, TLS: conf}
	}
	execs := map[string]*agent.FakeExecutor{}
	for _, id := range []string{"node0", "node1"} {
		fe := &agent.FakeExecutor{}
		w := &swarm.Worker{NodeID: id, Executor: fe, Dispatcher: remote(id),
			Description: api.NodeDescription{Hostname: id, Resources: api.Resources{NanoCPUs: 4e9, MemoryBytes: 8 << 30}}}
		if err := w.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { w.Close(); fe.ExitAll() })
		execs[id] = fe
	}
	svc := create(t, c, service("web", api.Replicated(3)))
	c.WaitFor("3 running over the network", func() bool { return len(c.Running(svc.ID)) == 3 })
	victim := c.Running(svc.ID)[0]
	execs[victim.NodeID].Exit(victim.ID, 1)
	c.WaitFor("replacement", func() bool {
		for _, tk := range c.Running(svc.ID) {
			if tk.Slot == victim.Slot && tk.ID != victim.ID {
				return true
			}
		}
		return false
	})

	// Impersonation is refused.
	other := "node1"
	if victim.NodeID == "node1" {
		other = "node0"
	}
	var target *api.Task
	for _, tk := range c.Running(svc.ID) {
		if tk.NodeID != other {
			target = tk
		}
	}
	if target == nil {
		t.Fatalf("no task off %s:\n%s", other, c.Dump())
	}
	_, err = remote(other).Register(ctx, target.NodeID, api.NodeDescription{})
	if err == nil || !strings.Contains(err.Error(), "cannot act as node "+target.NodeID) {
		t.Fatalf("registering as another node: %v", err)
	}
	// A report about another node's task, sent as itself, changes nothing.
	bogus := []agent.StatusUpdate{{TaskID: target.ID, Status: api.TaskStatus{State: api.TaskFailed, Message: "forged"}}}
	if err := remote(other).UpdateStatus(ctx, other, bogus); err != nil {
		t.Fatal(err)
	}
	ts := c.Tasks(svc.ID)
	for _, tk := range ts {
		if tk.ID == target.ID && tk.Status.State != api.TaskRunning {
			t.Fatalf("another node's report changed task %s to %s", tk.ID, tk.Status.State)
		}
	}
	// Without a certificate there is no conversation.
	noCert := &swarm.RemoteDispatcher{Addrs: []string{addr}, TLS: &tls.Config{InsecureSkipVerify: true}}
	if _, err := noCert.Heartbeat(ctx, "node0"); err == nil {
		t.Fatal("heartbeat without a client certificate accepted")
	}
}
