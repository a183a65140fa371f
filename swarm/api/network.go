package api

// Network is an overlay network (or the ingress network).
type Network struct {
	Meta
	Spec NetworkSpec `json:"spec"`
	// VNI is the VXLAN network identifier allocated to the network.
	VNI uint32 `json:"vni,omitempty"`
	// IPAM is what was allocated: subnet and gateway.
	IPAM *IPAMConfig `json:"ipam,omitempty"`
	// WireGuardPort is an encrypted network's UDP port on every node.
	WireGuardPort int `json:"wireGuardPort,omitempty"`
}

// NetworkSpec is what a user asks for.
type NetworkSpec struct {
	Annotations
	// Driver is "overlay" (the default).
	Driver string `json:"driver,omitempty"`
	// Attachable lets standalone containers join, not only services.
	Attachable bool `json:"attachable,omitempty"`
	// Ingress marks the routing-mesh network; a cluster has at most one.
	Ingress bool `json:"ingress,omitempty"`
	// Internal networks have no route out.
	Internal bool `json:"internal,omitempty"`
	// Encrypted networks encrypt traffic between nodes.
	Encrypted bool        `json:"encrypted,omitempty"`
	IPAM      *IPAMConfig `json:"ipam,omitempty"`
}

// IPAMConfig is a network's addressing; empty fields are allocated.
type IPAMConfig struct {
	Subnet  string `json:"subnet,omitempty"`
	Gateway string `json:"gateway,omitempty"`
	// IPRange (a CIDR inside Subnet) is where task addresses, VIPs and
	// nodes' ingress addresses are taken from, as Docker's --ip-range;
	// empty means the whole subnet. The gateway may be outside it.
	IPRange string `json:"ipRange,omitempty"`
	// AuxAddresses are addresses of Subnet (by host name) that are never
	// handed out, as Docker's --aux-address: devices already on the
	// network.
	AuxAddresses map[string]string `json:"auxAddresses,omitempty"`
}
