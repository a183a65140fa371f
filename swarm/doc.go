// Package swarm will compose Shoal's engines into cluster nodes: the
// Manager (Raft state in raftstore, orchestrators, scheduler, allocator,
// dispatcher, CA and control API), the Worker (agent and netmesh), Node
// (either role) and the Go Client. It is not built yet; its object model is
// in swarm/api.
package swarm
