package netmesh_test

import (
	"fmt"
	"net/netip"

	"github.com/shoalproject/shoal/netmesh"
)

// IPAM hands out a subnet per network and addresses in it; its state is a
// plain value, so managers can keep it in Raft and every manager restores
// the same allocations.
func ExampleIPAM() {
	var ipam netmesh.IPAM // zero value: pool 10.0.0.0/8 cut into /24s
	sn, _ := ipam.AllocateSubnet("web", netip.Prefix{})
	vip, _ := ipam.AllocateAddr("web", "service/web", netip.Addr{})
	task, _ := ipam.AllocateAddr("web", "task/web.1", netip.Addr{})
	fmt.Println(sn.Prefix, sn.Gateway, vip, task)

	var restored netmesh.IPAM
	restored.Restore(ipam.State())
	next, _ := restored.AllocateAddr("web", "task/web.2", netip.Addr{})
	fmt.Println(next)
	// Output:
	// 10.0.0.0/24 10.0.0.1 10.0.0.2 10.0.0.3
	// 10.0.0.4
}

// WireGuard keys for encrypted networks: each node keeps its private key and
// hands out the public one.
func ExampleWireGuardKey() {
	priv, _ := netmesh.ParseWireGuardKey("dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=")
	fmt.Println(priv.PublicKey())
	// Output: hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=
}
