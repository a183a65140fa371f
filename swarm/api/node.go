package api

import "net/netip"

// NodeRole is what a node does in the cluster.
type NodeRole string

// Node roles.
const (
	RoleWorker  NodeRole = "worker"
	RoleManager NodeRole = "manager"
	// RoleArbiter names the arbiters' join token (see Cluster.Arbiters):
	// an arbiter is a Raft voter, not a node, and no node spec takes it.
	RoleArbiter NodeRole = "arbiter"
)

// NodeAvailability says whether the scheduler may use a node.
type NodeAvailability string

// Availabilities: active nodes get tasks; paused nodes keep theirs but get no
// new ones; drained nodes have their tasks moved elsewhere.
const (
	NodeActive NodeAvailability = "active"
	NodePause  NodeAvailability = "pause"
	NodeDrain  NodeAvailability = "drain"
)

// NodeState is a node's health as the managers see it.
type NodeState string

// Node states.
const (
	NodeUnknown      NodeState = "unknown"
	NodeDown         NodeState = "down"
	NodeReady        NodeState = "ready"
	NodeDisconnected NodeState = "disconnected"
)

// Node is one machine of the cluster.
type Node struct {
	Meta
	Spec          NodeSpec        `json:"spec"`
	Description   NodeDescription `json:"description"`
	Status        NodeStatus      `json:"status"`
	ManagerStatus *ManagerStatus  `json:"managerStatus,omitempty"`
	// Attachments are the node's own addresses on networks: on ingress,
	// where the routing mesh reaches tasks on other nodes from.
	Attachments []NetworkAttachment `json:"attachments,omitempty"`
	// SpecChangedAfter is the version the node had just before its spec
	// last changed (see Service.SpecChangedAfter): status changes do not
	// make an operator's update a conflict.
	SpecChangedAfter uint64 `json:"specChangedAfter,omitempty"`
}

// NodeSpec is what an operator sets on a node.
type NodeSpec struct {
	Annotations
	Role         NodeRole         `json:"role"`
	Availability NodeAvailability `json:"availability"`
}

// NodeDescription is what a node reports about itself.
type NodeDescription struct {
	Hostname  string    `json:"hostname"`
	Platform  Platform  `json:"platform"`
	Resources Resources `json:"resources"`
	Engine    Engine    `json:"engine"`
	// DataAddr is the address other nodes send overlay traffic to; empty
	// means the address the node reaches the managers from.
	DataAddr string `json:"dataAddr,omitempty"`
	// WireGuardKey is the node's public key for encrypted networks.
	WireGuardKey string `json:"wireGuardKey,omitempty"`
	// NoTasks says the node runs no tasks (a manager that only manages):
	// it registers drained, and the scheduler places nothing there.
	NoTasks bool `json:"noTasks,omitempty"`
}

// Engine describes the node's container runtime.
type Engine struct {
	Version string            `json:"version,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
}

// NodeStatus is the node's state as the managers last saw it.
type NodeStatus struct {
	State   NodeState `json:"state"`
	Message string    `json:"message,omitempty"`
	Addr    string    `json:"addr,omitempty"`
}

// Reachability of a manager in the Raft cluster.
type Reachability string

// Reachabilities.
const (
	ReachabilityUnknown     Reachability = "unknown"
	ReachabilityUnreachable Reachability = "unreachable"
	ReachabilityReachable   Reachability = "reachable"
)

// ManagerStatus is set on manager nodes.
type ManagerStatus struct {
	Leader       bool         `json:"leader"`
	Reachability Reachability `json:"reachability"`
	Addr         string       `json:"addr"`
	// Voter is false for a manager that has joined Raft but does not
	// vote yet (it is catching up).
	Voter bool `json:"voter"`
	// Warning, when set, says what the managers' Raft membership cannot
	// survive (two managers and no arbiter: no manager failure).
	Warning string `json:"warning,omitempty"`
}

// Validate reports every problem of the spec.
func (s *NodeSpec) Validate() error {
	v := newValidator("spec")
	v.labels("labels", s.Labels)
	switch s.Role {
	case RoleWorker, RoleManager:
	default:
		v.addf("role", "must be worker or manager, got %q", s.Role)
	}
	switch s.Availability {
	case NodeActive, NodePause, NodeDrain:
	default:
		v.addf("availability", "must be active, pause or drain, got %q", s.Availability)
	}
	return v.err()
}

// Bounds on what a node may say of itself.
const (
	maxDescLabels = 256
	maxDescString = 1024
	maxGeneric    = 1024
)

// Validate reports every problem of a node's description: it comes from
// the node, and is bounded so that a node cannot fill the managers' store.
func (d *NodeDescription) Validate() error {
	v := newValidator("description")
	if len(d.Hostname) > 255 {
		v.addf("hostname", "at most 255 characters, got %d", len(d.Hostname))
	}
	if len(d.Platform.OS) > 64 || len(d.Platform.Architecture) > 64 {
		v.add("platform", "os and architecture are at most 64 characters each")
	}
	if d.Resources.NanoCPUs < 0 || d.Resources.MemoryBytes < 0 || d.Resources.Pids < 0 {
		v.add("resources", "must not be negative")
	}
	if len(d.Resources.Generic) > maxGeneric {
		v.addf("resources.generic", "at most %d entries, got %d", maxGeneric, len(d.Resources.Generic))
	}
	for i, g := range d.Resources.Generic {
		f := "resources." + pathIdx("generic", i)
		switch {
		case g.Kind == "" || len(g.Kind) > 128:
			v.add(f+".kind", "1 to 128 characters")
		case len(g.Named) > 256:
			v.add(f+".named", "at most 256 characters")
		case g.Value < 0:
			v.add(f+".value", "must not be negative")
		}
	}
	if d.DataAddr != "" {
		if _, err := netip.ParseAddr(d.DataAddr); err != nil {
			v.addf("dataAddr", "%q is not an IP address", d.DataAddr)
		}
	}
	if len(d.WireGuardKey) > 64 {
		v.add("wireGuardKey", "at most 64 characters (a base64 key)")
	}
	if len(d.Engine.Version) > 128 {
		v.add("engine.version", "at most 128 characters")
	}
	if len(d.Engine.Labels) > maxDescLabels {
		v.addf("engine.labels", "at most %d labels, got %d", maxDescLabels, len(d.Engine.Labels))
	}
	v.labels("engine.labels", d.Engine.Labels)
	for k, val := range d.Engine.Labels {
		if len(k) > maxDescString || len(val) > maxDescString {
			v.addf("engine.labels", "label %.40q: keys and values are at most %d characters", k, maxDescString)
		}
	}
	return v.err()
}
