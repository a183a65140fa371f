// Package netmesh will give tasks their network: IPAM, VXLAN overlay
// networks, gossip of peers, embedded DNS at 127.0.0.11 and the routing mesh
// (nftables, or IPVS where the kernel has it). It imports nothing else of
// Shoal. Not built yet.
package netmesh
