package api

// Assignment is what the managers send a node: the tasks it must run or
// stop, and what those tasks need from the cluster. The leader builds it
// from Raft, so it is authoritative: a node never acts on hearsay.
type Assignment struct {
	// Tasks are the node's tasks, whole.
	Tasks []*Task `json:"tasks,omitempty"`
	// Secrets and Configs are those the node's tasks reference, with their
	// data; no other node receives them.
	Secrets []*Secret `json:"secrets,omitempty"`
	Configs []*Config `json:"configs,omitempty"`
	// Kept are the IDs of the node's ended tasks that the managers still
	// keep in their history: their containers stay (stopped) for their
	// logs, and go when the task leaves the history.
	Kept []string `json:"kept,omitempty"`
	// Network is what the node's network agent wires: nil when the node
	// has nothing to wire (no network object exists yet).
	Network *NetworkView `json:"network,omitempty"`
	// Drained are the IDs of the node's tasks told to stop that no node
	// routes new connections to any more: every node that could has
	// applied a view without them (or is down, or the managers stopped
	// waiting). The node stops such a task only once it is listed here
	// (or its own bound passes), so that no client meets a closed port.
	Drained []string `json:"drained,omitempty"`
}

// NetworkView is a node's view of the cluster's networks: the networks
// its tasks are on (and ingress, which every node serves), the services
// reachable on them with their backends, and the other nodes' data-plane
// addresses and keys.
type NetworkView struct {
	// Version orders the views of the leader's book: it grows whenever a
	// task starts draining (leaves the backends before it stops). A node
	// tells the leader the version it has applied (AckNetwork), which is
	// how the leader knows that every node has taken a stopping task out
	// of its backends. Versions of a later leader are greater.
	Version uint64 `json:"version,omitempty"`
	// Networks are the networks this node takes part in.
	Networks []*Network `json:"networks,omitempty"`
	// Services are the services on those networks, and every service that
	// publishes a port (the routing mesh answers for them on every node).
	Services []*ServiceEndpoints `json:"services,omitempty"`
	// Nodes are the cluster's nodes with a data-plane address, this one
	// included.
	Nodes []*NodeEndpoint `json:"nodes,omitempty"`
}

// ServiceEndpoints is a service as its clients reach it.
type ServiceEndpoints struct {
	ID   string       `json:"id"`
	Name string       `json:"name"`
	Mode EndpointMode `json:"mode,omitempty"`
	// VirtualIPs are the service's VIPs, one per network (vip mode).
	VirtualIPs []VirtualIP `json:"virtualIPs,omitempty"`
	// Ports are the published ports (ingress and host mode).
	Ports []PortConfig `json:"ports,omitempty"`
	// Aliases are the service's other names, by network ID.
	Aliases map[string][]string `json:"aliases,omitempty"`
	// Tasks are the service's tasks that are, or were just, backends.
	Tasks []*TaskEndpoint `json:"tasks,omitempty"`
}

// TaskEndpoint is one task of a service, as a backend.
type TaskEndpoint struct {
	ID     string `json:"id"`
	Name   string `json:"name"` // SERVICE.SLOT.ID, or SERVICE.NODEID.ID
	NodeID string `json:"nodeID"`
	// Addrs are the task's addresses by network ID (without prefix length).
	Addrs map[string]string `json:"addrs,omitempty"`
	// Ready tasks take new connections. A task that is not ready is about
	// to stop (its desired state is past running): it takes no new
	// connections, and those it has carry on until it stops.
	Ready bool `json:"ready"`
}

// NodeEndpoint is a node's data-plane identity.
type NodeEndpoint struct {
	ID string `json:"id"`
	// DataAddr is where overlay traffic to the node goes.
	DataAddr string `json:"dataAddr"`
	// WireGuardKey is the node's public key for encrypted networks.
	WireGuardKey string `json:"wireGuardKey,omitempty"`
	// Attachments are the node's own addresses on networks (ingress).
	Attachments []NetworkAttachment `json:"attachments,omitempty"`
}
