// Package swarm composes Shoal's engines into a cluster: the Manager keeps
// the desired state in Raft (raftstore) and drives it, and Workers run what
// it assigns on an agent.Executor.
//
// Built so far, with workers in the same process as the managers
// (Dispatcher is a Go interface the Manager implements; Failover spreads a
// worker over several managers):
//   - one or more managers in one Raft cluster; only the leader reconciles
//     and takes writes, and a new leader carries on with the same tasks;
//   - replicated and global services, and replicated and global jobs (run
//     to completion, MaxConcurrent at a time), with replicas in slots, replacements
//     by restart policy (condition, delay, attempts in a window) and a
//     history of 5 ended tasks per slot;
//   - placement of pending tasks by the scheduler, a service at a time, with
//     a reason a person can act on for tasks that cannot be placed;
//   - node heartbeats: a node silent for three periods is down, and its
//     tasks are replaced elsewhere;
//   - drain and pause;
//   - rolling updates (parallelism, delay, monitor, stop-first or
//     start-first, a failure ratio that pauses or rolls back) and manual
//     rollback.
//
// Still to come: the network dispatcher and control API with mutual TLS,
// CA and join tokens, adding and removing managers at run time, networks,
// secrets and configs.
//
//	m := &swarm.Manager{}
//	m.Start(ctx)
//	w := &swarm.Worker{NodeID: "node1", Executor: executor, Dispatcher: m}
//	w.Start(ctx)
//	svc, err := m.CreateService(ctx, api.ServiceSpec{Annotations: api.Annotations{Name: "web"},
//		Mode: api.Replicated(3), TaskTemplate: api.TaskSpec{Image: "example/web:1"}})
package swarm
