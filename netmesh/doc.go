// Package netmesh gives tasks their network, without importing anything
// else of Shoal: IPAM (subnets and addresses, serializable for Raft), VXLAN
// overlay networks (a bridge and a VXLAN device per network, peers as static
// forwarding and neighbour entries, tasks attached by veth), encrypted
// networks (routed through WireGuard: the kernel module or wireguard-go), a
// gateway network for the tasks' way out (Gateway), a routing mesh
// (published ports answering on every node) and VIP load balancing on
// nftables, a DNS server per task at 127.0.0.11 answering from a Registry of
// service endpoints, Gossip (hashicorp/memberlist, encrypted, records
// signed by their nodes) telling every node where the task endpoints of its
// networks live, and a NodeFirewall that keeps tasks off the node's own
// ports and VXLAN and gossip to known peers.
//
//	o := &netmesh.Overlay{LocalAddr: nodeAddr}
//	o.Start()
//	o.EnsureNetwork(netmesh.OverlayNetwork{ID: "web", VNI: 4097, Subnet: subnet})
//	o.Attach(network, "/var/run/netns/task1", "eth0", taskAddr)
//	o.SetEndpoints(network, endpointsOnOtherNodes)
//
// An encrypted network needs every node's public key (PublicKey on that
// node, SetPeerKeys on the others):
//
//	o.SetPeerKeys(map[netip.Addr]netmesh.WireGuardKey{otherNode: itsPublicKey})
//	o.EnsureNetwork(netmesh.OverlayNetwork{ID: "secret", VNI: 4098, Subnet: subnet, Encrypted: true})
//
// Gossip needs the node's signing key, and every node's public key from the
// managers; the firewall the other nodes' underlay addresses:
//
//	g := &netmesh.Gossip{Name: nodeID, HostAddr: nodeAddr, Key: clusterKey, Signer: nodeKey}
//	g.Start(ctx)
//	g.SetNodeKeys(map[string]crypto.PublicKey{otherID: itsPublicKey})
//	fw := &netmesh.NodeFirewall{}
//	fw.SetPeers(ctx, []netip.Addr{otherNode})
//	fw.Start(ctx)
package netmesh
