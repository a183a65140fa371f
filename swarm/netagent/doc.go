// Package netagent is a node's network agent: it turns the managers' view
// of the cluster's networks (api.NetworkView, sent with each assignment)
// into netmesh state on the node, and gives each task its network
// namespace.
//
// On the node: the overlay networks its tasks are on and the ingress
// network (VXLAN, or WireGuard for encrypted networks, with the node's key
// kept in StateDir and rotated), their remote endpoints from the view, the
// gateway network (the tasks' way out), the routing mesh (published ports,
// ingress mode on every node, host mode where a task runs) and the node
// firewall (VXLAN and WireGuard from the other nodes only; tasks kept off
// the node's ports). Per task: a namespace bind-mounted under StateDir,
// attached to its networks and the gateway, a DNS server at 127.0.0.11
// answering service names, aliases and tasks.NAME on the task's networks,
// and VIP load balancing of every port in the namespace (nftables), with
// tasks that are not ready draining.
//
// The worker drives it:
//
//	a := &netagent.Agent{NodeID: id, DataAddr: addr, StateDir: "/var/lib/shoal/net"}
//	a.Start(ctx)
//	node.Description.WireGuardKey = a.PublicKey()
//	a.Apply(ctx, assignment.Network)            // on every assignment
//	exec := &containerd.Executor{Network: a.TaskNetwork, ...}
//	a.Prune(ctx, tasksThatStillRun)              // once, after a restart
//	a.ReleaseTask(ctx, task.ID)                  // when a task is removed
//
// It imports swarm/api and netmesh, not package swarm. It needs root,
// nftables and iproute2's kernel features (VXLAN, veth, bridges).
package netagent
