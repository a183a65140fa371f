package swarm_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/swarmtest"
)

// A network whose subnet holds an address a node advertises (the nodes'
// own LAN) is refused, naming the node and its address; a subnet from the
// pools skips the nodes' addresses.
func TestNetworkSubnetOnTheNodesLAN(t *testing.T) {
	ctx := context.Background()
	lan := map[string]string{"node0": "10.0.1.7", "node1": "10.77.3.9"}
	c := swarmtest.New(t, swarmtest.Options{Workers: 2, Executor: testImages,
		Description: func(id string) api.NodeDescription {
			d := swarmtest.DefaultDescription(id)
			d.DataAddr = lan[id]
			return d
		}})
	m := c.Leader()
	c.WaitFor("both nodes registered with their addresses", func() bool {
		ns, _ := m.Nodes()
		return len(ns) == 2 && ns[0].Description.DataAddr != "" && ns[1].Description.DataAddr != ""
	})
	_, err := m.CreateNetwork(ctx, api.NetworkSpec{Annotations: api.Annotations{Name: "lan"}, IPAM: &api.IPAMConfig{Subnet: "10.77.0.0/16"}})
	if !errors.Is(err, api.ErrInvalidSpec) || !strings.Contains(err.Error(), "10.77.3.9") || !strings.Contains(err.Error(), "node1") {
		t.Fatalf("a subnet holding node1's address: %v; want an invalid spec naming node1 and 10.77.3.9", err)
	}
	// Beside it, not holding it: fine.
	if _, err := m.CreateNetwork(ctx, api.NetworkSpec{Annotations: api.Annotations{Name: "beside"}, IPAM: &api.IPAMConfig{Subnet: "10.77.4.0/24"}}); err != nil {
		t.Fatal(err)
	}
	// From the pools (10.0.0.0/8 in /24s, ingress on 10.0.0.0/24): not
	// 10.0.1.0/24, which holds node0's address.
	n, err := m.CreateNetwork(ctx, api.NetworkSpec{Annotations: api.Annotations{Name: "pooled"}})
	if err != nil {
		t.Fatal(err)
	}
	if p := netip.MustParsePrefix(n.IPAM.Subnet); p.Contains(netip.MustParseAddr("10.0.1.7")) || n.IPAM.Subnet != "10.0.2.0/24" {
		t.Fatalf("a subnet from the pools: %s, want 10.0.2.0/24 (10.0.1.0/24 holds node0's address)", n.IPAM.Subnet)
	}
}
