package swarm_test

import (
	"context"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/waitfor"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/swarmtest"
)

// nodesOn reports whether every node has exactly one attachment, to
// network (networkID "" means none at all).
func nodesOn(m *swarm.Manager, networkID string) bool {
	nodes, err := m.Nodes()
	if err != nil || len(nodes) == 0 {
		return false
	}
	for _, n := range nodes {
		switch {
		case networkID == "" && len(n.Attachments) != 0:
			return false
		case networkID != "" && (len(n.Attachments) != 1 || n.Attachments[0].NetworkID != networkID):
			return false
		}
	}
	return true
}

// The ingress network can be replaced, as in Docker (remove it, create one
// with the ingress option): the leader follows network changes as they
// come, not at its next full pass (a minute), so the nodes drop their
// addresses on the old ingress and get one on the new one at once, and a
// service that then publishes a port joins the new ingress.
func TestIngressReplaced(t *testing.T) {
	ctx := context.Background()
	c := swarmtest.New(t, swarmtest.Options{Workers: 2, Executor: testImages, Description: dataPlane})
	m := c.Leader()
	old, err := m.Network(swarm.IngressNetworkName)
	if err != nil {
		t.Fatal(err)
	}
	c.WaitFor("every node with its address on ingress", func() bool { return nodesOn(m, old.ID) })

	// Well under the leader's full pass (a minute), which would do it
	// too; the leader's reaction to the change is what is tested.
	const bound = 10 * time.Second
	if err := m.RemoveNetwork(ctx, swarm.IngressNetworkName); err != nil {
		t.Fatal(err)
	}
	waitfor.Within(t, bound, "no node attached to the removed ingress", func() bool { return nodesOn(m, "") }, c.Dump)

	repl, err := m.CreateNetwork(ctx, api.NetworkSpec{Annotations: api.Annotations{Name: "mesh"}, Ingress: true,
		IPAM: &api.IPAMConfig{Subnet: "10.11.0.0/24"}})
	if err != nil {
		t.Fatal(err)
	}
	waitfor.Within(t, bound, "every node with its address on the new ingress", func() bool {
		if !nodesOn(m, repl.ID) {
			return false
		}
		nodes, _ := m.Nodes()
		for _, n := range nodes {
			if a := n.Attachments[0].Addresses; len(a) != 1 || a[0][:8] != "10.11.0." {
				return false
			}
		}
		return true
	}, c.Dump)

	web := service("web", api.Replicated(2))
	web.EndpointSpec = &api.EndpointSpec{Ports: []api.PortConfig{{TargetPort: 80, PublishedPort: 8080}}}
	svc, err := m.CreateService(ctx, web)
	if err != nil {
		t.Fatal(err)
	}
	c.WaitFor("web's VIP and tasks on the new ingress", func() bool {
		s := mustService(t, m, svc.ID)
		if s.Endpoint == nil || len(s.Endpoint.VirtualIPs) != 1 || s.Endpoint.VirtualIPs[0].NetworkID != repl.ID {
			return false
		}
		ts := c.Running(svc.ID)
		for _, tk := range ts {
			if !addrOn(tk, repl.ID).IsValid() || addrOn(tk, old.ID).IsValid() {
				return false
			}
		}
		return len(ts) == 2
	})
}
