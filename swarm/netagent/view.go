package netagent

import (
	"cmp"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"

	"github.com/shoalproject/shoal/netmesh"
	"github.com/shoalproject/shoal/swarm/api"
)

// compiled is a NetworkView checked and parsed: what is unusable in it was
// logged and left out, so the rest can be applied.
type compiled struct {
	nets     map[string]*netInfo
	ingress  string // the ingress network's ID, "" without one
	nodes    map[string]*nodeInfo
	self     *nodeInfo // nil when the view does not list this node
	services []*serviceInfo
	// localNets are the networks a task of this node is on.
	localNets map[string]bool
	// endpoints are the remote endpoints of each network: the addresses
	// of tasks and nodes that are not this node, with their node's address.
	endpoints map[string][]netmesh.RemoteEndpoint
}

type netInfo struct {
	n        netmesh.OverlayNetwork
	name     string
	internal bool
}

type nodeInfo struct {
	id     string
	data   netip.Addr
	key    netmesh.WireGuardKey // zero when unknown
	attach map[string]netip.Addr
}

type serviceInfo struct {
	id, name string
	mode     netmesh.EndpointMode
	vips     map[string]netip.Addr
	aliases  map[string][]string // by network ID
	ports    []portSpec
	tasks    []*taskInfo
}

type taskInfo struct {
	id, name, node string
	addrs          map[string]netip.Addr
	ready          bool
}

type portSpec struct {
	proto             netmesh.Protocol
	published, target uint16
	host              bool
}

// compile checks and parses a view for node self. Every entry that cannot
// be used is logged (warn) and skipped; nothing else is affected by it.
func compile(v *api.NetworkView, self string, log *slog.Logger) *compiled {
	c := &compiled{nets: map[string]*netInfo{}, nodes: map[string]*nodeInfo{}, localNets: map[string]bool{},
		endpoints: map[string][]netmesh.RemoteEndpoint{}}
	if v == nil {
		return c
	}
	skip := func(what string, args ...any) { log.Warn("netagent: bad view data skipped: "+what, args...) }

	vnis := map[uint32]string{}
	for _, n := range v.Networks {
		if n == nil || n.ID == "" {
			skip("network without ID")
			continue
		}
		if c.nets[n.ID] != nil {
			skip("network listed twice", "network", n.ID)
			continue
		}
		var subnet string
		if n.IPAM != nil {
			subnet = n.IPAM.Subnet
		}
		prefix, err := netip.ParsePrefix(subnet)
		if err != nil || !prefix.Addr().Is4() || prefix.Bits() > 30 {
			skip("network subnet", "network", n.ID, "subnet", subnet)
			continue
		}
		if n.VNI == 0 || n.VNI >= 1<<24 {
			skip("network VNI", "network", n.ID, "vni", n.VNI)
			continue
		}
		if other, dup := vnis[n.VNI]; dup {
			skip("network VNI already used", "network", n.ID, "vni", n.VNI, "by", other)
			continue
		}
		if n.WireGuardPort < 0 || n.WireGuardPort > 65535 {
			skip("network WireGuard port", "network", n.ID, "port", n.WireGuardPort)
			continue
		}
		if n.Spec.Ingress {
			if c.ingress != "" {
				skip("second ingress network", "network", n.ID, "ingress", c.ingress)
				continue
			}
			c.ingress = n.ID
		}
		vnis[n.VNI] = n.ID
		c.nets[n.ID] = &netInfo{name: n.Spec.Name, internal: n.Spec.Internal,
			n: netmesh.OverlayNetwork{ID: n.ID, VNI: n.VNI, Subnet: prefix.Masked(), Encrypted: n.Spec.Encrypted, WireGuardPort: n.WireGuardPort}}
	}

	for _, ne := range v.Nodes {
		if ne == nil || ne.ID == "" {
			skip("node without ID")
			continue
		}
		if c.nodes[ne.ID] != nil {
			skip("node listed twice", "node", ne.ID)
			continue
		}
		data, err := netip.ParseAddr(ne.DataAddr)
		if err != nil || !data.Unmap().Is4() {
			skip("node data address", "node", ne.ID, "addr", ne.DataAddr)
			continue
		}
		nd := &nodeInfo{id: ne.ID, data: data.Unmap(), attach: map[string]netip.Addr{}}
		if ne.WireGuardKey != "" {
			if k, err := netmesh.ParseWireGuardKey(ne.WireGuardKey); err != nil {
				skip("node WireGuard key (its encrypted traffic stays unreachable)", "node", ne.ID, "err", err)
			} else {
				nd.key = k
			}
		}
		for _, at := range ne.Attachments {
			ni := c.nets[at.NetworkID]
			if ni == nil {
				skip("node attachment on an unknown network", "node", ne.ID, "network", at.NetworkID)
				continue
			}
			addr, ok := firstAddr(at.Addresses, ni.n.Subnet)
			if !ok {
				skip("node attachment address", "node", ne.ID, "network", at.NetworkID, "addresses", at.Addresses)
				continue
			}
			nd.attach[at.NetworkID] = addr
		}
		c.nodes[ne.ID] = nd
	}
	c.self = c.nodes[self]

	seen := map[string]bool{}
	for _, se := range v.Services {
		if se == nil || se.ID == "" {
			skip("service without ID")
			continue
		}
		if seen[se.ID] {
			skip("service listed twice", "service", se.ID)
			continue
		}
		seen[se.ID] = true
		s := &serviceInfo{id: se.ID, name: se.Name, mode: netmesh.VIP, vips: map[string]netip.Addr{}}
		switch se.Mode {
		case "", api.EndpointVIP:
		case api.EndpointDNSRR:
			s.mode = netmesh.DNSRR
		default:
			skip("service endpoint mode (vip assumed)", "service", se.ID, "mode", se.Mode)
		}
		if s.name == "" {
			skip("service without name (no DNS name)", "service", se.ID)
		}
		for _, vip := range se.VirtualIPs {
			ni := c.nets[vip.NetworkID]
			if ni == nil {
				// A service that publishes a port comes to every node,
				// with its VIPs on networks this node is not on.
				log.Debug("netagent: service VIP on a network not in this node's view", "service", se.ID, "network", vip.NetworkID)
				continue
			}
			addr, ok := firstAddr([]string{vip.Addr}, ni.n.Subnet)
			if !ok {
				skip("service VIP", "service", se.ID, "network", vip.NetworkID, "addr", vip.Addr)
				continue
			}
			if s.mode == netmesh.VIP {
				s.vips[vip.NetworkID] = addr
			}
		}
		// Aliases stay with their network: an alias given on one
		// network does not resolve on the service's others.
		for netID, names := range se.Aliases {
			var keep []string
			for _, al := range names {
				if al != "" && !slices.Contains(keep, al) {
					keep = append(keep, al)
				}
			}
			if len(keep) > 0 {
				if s.aliases == nil {
					s.aliases = map[string][]string{}
				}
				slices.Sort(keep)
				s.aliases[netID] = keep
			}
		}
		for _, p := range se.Ports {
			ps, err := parsePort(p)
			if err != nil {
				skip("service port", "service", se.ID, "err", err)
				continue
			}
			s.ports = append(s.ports, ps)
		}
		tasks := map[string]bool{}
		for _, te := range se.Tasks {
			if te == nil || te.ID == "" {
				skip("task endpoint without ID", "service", se.ID)
				continue
			}
			if tasks[te.ID] {
				skip("task endpoint listed twice", "service", se.ID, "task", te.ID)
				continue
			}
			tasks[te.ID] = true
			t := &taskInfo{id: te.ID, name: te.Name, node: te.NodeID, ready: te.Ready, addrs: map[string]netip.Addr{}}
			if t.node != self && c.nodes[t.node] == nil {
				skip("task endpoint on a node without data address (not reachable from here)", "task", te.ID, "node", te.NodeID)
				continue
			}
			for netID, as := range te.Addrs {
				ni := c.nets[netID]
				if ni == nil {
					// As the VIPs: its other networks may not be here.
					log.Debug("netagent: task address on a network not in this node's view", "task", te.ID, "network", netID)
					continue
				}
				addr, ok := firstAddr([]string{as}, ni.n.Subnet)
				if !ok {
					skip("task address", "task", te.ID, "network", netID, "addr", as)
					continue
				}
				t.addrs[netID] = addr
				if t.node == self {
					c.localNets[netID] = true
				}
			}
			s.tasks = append(s.tasks, t)
		}
		c.services = append(c.services, s)
	}
	slices.SortFunc(c.services, func(x, y *serviceInfo) int { return cmp.Compare(x.id, y.id) })

	// Remote endpoints by network, each address once.
	byNet := map[string]map[netip.Addr]netip.Addr{}
	add := func(netID string, addr, host netip.Addr) {
		m := byNet[netID]
		if m == nil {
			m = map[netip.Addr]netip.Addr{}
			byNet[netID] = m
		}
		m[addr] = host
	}
	for _, s := range c.services {
		for _, t := range s.tasks {
			if t.node == self {
				continue
			}
			for netID, addr := range t.addrs {
				add(netID, addr, c.nodes[t.node].data)
			}
		}
	}
	for _, nd := range c.nodes {
		if nd.id == self {
			continue
		}
		for netID, addr := range nd.attach {
			add(netID, addr, nd.data)
		}
	}
	for netID, m := range byNet {
		eps := make([]netmesh.RemoteEndpoint, 0, len(m))
		for addr, host := range m {
			eps = append(eps, netmesh.RemoteEndpoint{Addr: addr, Host: host})
		}
		slices.SortFunc(eps, func(x, y netmesh.RemoteEndpoint) int { return x.Addr.Compare(y.Addr) })
		c.endpoints[netID] = eps
	}
	return c
}

// firstAddr is the first of addrs ("10.0.1.5/24" or "10.0.1.5") that is an
// IPv4 host address of subnet.
func firstAddr(addrs []string, subnet netip.Prefix) (netip.Addr, bool) {
	for _, s := range addrs {
		var a netip.Addr
		if p, err := netip.ParsePrefix(s); err == nil {
			a = p.Addr()
		} else if ad, err := netip.ParseAddr(s); err == nil {
			a = ad
		} else {
			continue
		}
		a = a.Unmap()
		if a.Is4() && subnet.Contains(a) && a != subnet.Addr() && a != lastAddr(subnet) {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// lastAddr is a subnet's broadcast address.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= 1<<(32-p.Bits()) - 1
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func parsePort(p api.PortConfig) (portSpec, error) {
	ps := portSpec{}
	switch strings.ToLower(string(p.Protocol)) {
	case "", string(api.TCP):
		ps.proto = netmesh.TCP
	case string(api.UDP):
		ps.proto = netmesh.UDP
	default:
		return ps, fmt.Errorf("protocol %q not supported (tcp, udp)", p.Protocol)
	}
	switch p.PublishMode {
	case "", api.PublishIngress:
	case api.PublishHost:
		ps.host = true
	default:
		return ps, fmt.Errorf("publish mode %q", p.PublishMode)
	}
	if p.TargetPort == 0 || p.TargetPort > 65535 {
		return ps, fmt.Errorf("target port %d", p.TargetPort)
	}
	if p.PublishedPort == 0 || p.PublishedPort > 65535 {
		return ps, fmt.Errorf("published port %d (not allocated?) for target %d", p.PublishedPort, p.TargetPort)
	}
	ps.published, ps.target = uint16(p.PublishedPort), uint16(p.TargetPort)
	return ps, nil
}

// serviceEndpoint is what DNS knows of a service.
func (c *compiled) serviceEndpoint(s *serviceInfo) netmesh.ServiceEndpoint {
	// The ingress network carries the routing mesh only: no names are
	// resolved on it (as in Docker), so a task on ingress and an overlay
	// gets the overlay's addresses for a service, not both.
	se := netmesh.ServiceEndpoint{ID: s.id, Name: s.name, NetworkAliases: withoutNetwork(s.aliases, c.ingress), Mode: s.mode, VIPs: withoutNetwork(s.vips, c.ingress),
		NetworkNames: map[string]string{}}
	names := func(netID string) {
		if ni := c.nets[netID]; ni != nil && ni.name != "" {
			se.NetworkNames[netID] = ni.name
		}
	}
	for netID := range se.VIPs {
		names(netID)
	}
	for _, t := range s.tasks {
		addrs := withoutNetwork(t.addrs, c.ingress)
		se.Tasks = append(se.Tasks, netmesh.TaskEndpoint{ID: t.id, Name: t.name, Addrs: addrs, Healthy: t.ready})
		for netID := range addrs {
			names(netID)
		}
	}
	return se
}

// withoutNetwork is m without the key netID (m itself when it has none).
func withoutNetwork[V any](m map[string]V, netID string) map[string]V {
	if _, ok := m[netID]; !ok || netID == "" {
		return m
	}
	out := make(map[string]V, len(m)-1)
	for k, v := range m {
		if k != netID {
			out[k] = v
		}
	}
	return out
}
