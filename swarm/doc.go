// Package swarm composes Shoal's engines into a cluster: Managers keep the
// desired state in Raft (raftstore) and drive it; Workers run what the
// managers assign on an agent.Executor and report back.
//
// The types:
//   - Manager: one manager node. Its control API (CreateService,
//     UpdateService, RollbackService, RemoveService, UpdateNode,
//     SetNodeAvailability, RemoveNode, UpdateCluster, and the reads) takes
//     writes on the leader; its dispatcher (Register, Heartbeat,
//     Assignments, UpdateStatus) serves workers; on the leader, the
//     orchestrators (replicated and global services and jobs, restart
//     policy, rolling updates gated on health, the constraint enforcer,
//     task history) and the scheduler turn every change into tasks.
//   - Worker: one worker node's agent. It keeps every status report until
//     a manager takes it, and a restarted worker adopts the containers
//     that still run (agent.Adopter).
//   - Dispatcher: what a worker needs of the managers. *Manager implements
//     it in-process, RemoteDispatcher over HTTP/2 with mutual TLS (a node is
//     its certificate's common name), Failover over several managers.
//   - Node: what a host runs (shoald is one): Init a cluster (its CA and
//     join tokens), Join one with a token over mutual TLS on one
//     management port (Raft and the APIs multiplexed), or Start again from
//     Dir; it is a manager, a worker or both, follows promotions and
//     demotions, wires the network agent (overlays, DNS, routing mesh) into
//     its executor, and renews its certificate.
//   - Client: the control API over the network, against any manager
//     (followers forward writes and answer reads after the leader's
//     applied index), including service and task logs, which the leader
//     gathers from the workers that ran the tasks (LogStream).
//   - Arbiter: a Raft voter that runs nothing and hands leadership away,
//     the third vote of two-manager clusters. TwoNode: two managers with
//     no third vote, where a survivor goes on alone only after its Fencer
//     powered off or cut off the lost peer (see docs/ARCHITECTURE.md for
//     what each mode guarantees). Node.ForceNewCluster: the operator's
//     recovery of a lost quorum.
//   - Networks, secrets and configs are cluster objects; the allocator
//     keeps addresses, VIPs and ports in Raft.
//   - swarmtest (a subpackage): in-process clusters for tests, with
//     restarts from disk and partitions.
//
// Managers keep their identity and data in Dir, sealed at rest; with
// AutoLock the key stays with the operator and a restarted manager waits
// for Unlock. Lifecycles follow the usual shape: Start (idempotent), Ready,
// Shutdown (a leader hands leadership over first), Close.
//
//	m := &swarm.Manager{Dir: "/var/lib/shoal/manager"}
//	if err := m.Start(ctx); err != nil { ... }
//	<-m.Ready()
//	w := &swarm.Worker{NodeID: "node1", Executor: executor, Dispatcher: m}
//	if err := w.Start(ctx); err != nil { ... }
//	svc, err := m.CreateService(ctx, api.ServiceSpec{Annotations: api.Annotations{Name: "web"},
//		Mode: api.Replicated(3), TaskTemplate: api.TaskSpec{Image: "example/web:1"}})
package swarm
