package swarm

import (
	"net/netip"
	"testing"

	"github.com/shoalproject/shoal/swarm/api"
)

// A network removed and another made with its subnet between two passes
// (docker stack rm, then deploy): the new one has its subnet in the book.
func TestSyncNetworksReusedSubnet(t *testing.T) {
	spec := DefaultClusterSpec()
	old := &api.Network{Meta: api.Meta{ID: "old"}, IPAM: &api.IPAMConfig{Subnet: "10.0.1.0/24", Gateway: "10.0.1.1"}}
	ipam, err := ipamFor(spec, []*api.Network{old})
	if err != nil {
		t.Fatal(err)
	}
	a := &allocator{spec: spec, ipam: ipam, nets: map[string]*api.Network{"old": old}}
	reused := &api.Network{Meta: api.Meta{ID: "new"}, IPAM: &api.IPAMConfig{Subnet: "10.0.1.0/24", Gateway: "10.0.1.1"}}
	a.syncNetworks([]*api.Network{reused})
	if _, ok := a.nets["old"]; ok {
		t.Fatal("the removed network is still in the book")
	}
	ad, err := a.ipam.AllocateAddr("new", taskOwner("t1"), netip.Addr{})
	if err != nil {
		t.Fatalf("an address on the network that took the removed one's subnet: %v", err)
	}
	if !netip.MustParsePrefix("10.0.1.0/24").Contains(ad) {
		t.Fatalf("address %s outside the subnet", ad)
	}
}
