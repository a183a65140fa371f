// Package shoal is an embeddable Go SDK for Docker-Swarm-mode-style
// container orchestration: managers that keep cluster state in Raft, workers
// that run tasks through containerd, a scheduler, overlay networks, a
// routing mesh and service discovery, with reference binaries under
// examples/.
//
// The packages, from the bottom up:
//
//	swarm/api   the object model: nodes, services, tasks, networks, secrets, configs, cluster
//	raftstore   replicated, transactional, watchable store (hashicorp/raft + a segment WAL)
//	scheduler   placement engine: filters, spread/binpack/random, preferences
//	netmesh     IPAM, VXLAN and encrypted overlays, gateway network, gossip, DNS, routing mesh
//	agent       task execution: runner with health checks, containerd and fake executors
//	swarm       Manager and Worker (Node and Client come with the network API)
//
// Each engine stands alone: raftstore, scheduler and netmesh import nothing
// else of Shoal. See docs/ARCHITECTURE.md.
package shoal
