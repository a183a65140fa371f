package netagent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"

	"github.com/shoalproject/shoal/netmesh"
	"github.com/shoalproject/shoal/swarm/api"
)

// Apply makes the node's network state match the view: the overlay
// networks this node's tasks are on (and ingress, always), their remote
// endpoints, the WireGuard peers, the firewall's peers, the DNS registry,
// every task's VIP load balancing and the published ports. Only what
// changed since the last Apply is touched. Bad view data is logged and
// skipped; the error returned joins what the kernel refused (the rest was
// applied, and the next Apply tries those again).
//
// The first Apply also removes the devices an earlier agent left for
// networks no longer wanted.
func (a *Agent) Apply(ctx context.Context, v *api.NetworkView) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.usable(); err != nil {
		return err
	}
	a.view = compile(v, a.NodeID, a.logger())
	if a.view.self == nil && v != nil {
		a.logger().Warn("netagent: the view does not list this node (no ingress address)", "node", a.NodeID)
	}
	errs := []error{a.syncPeerKeys(), a.syncNetworks(), a.syncFirewall(ctx), a.syncRegistry()}
	for _, id := range slices.Sorted(maps.Keys(a.tasks)) {
		if ts := a.tasks[id]; ts.live {
			errs = append(errs, a.syncTaskLB(ctx, ts))
		}
	}
	errs = append(errs, a.syncPorts(ctx))
	err := errors.Join(errs...)
	a.stats.Applies++
	if err != nil {
		a.stats.ApplyErrors++
	}
	return err
}

func (a *Agent) usable() error {
	switch {
	case a.closed:
		return fmt.Errorf("netagent: %w", net.ErrClosed)
	case !a.started:
		return ErrNotStarted
	}
	return nil
}

// syncPeerKeys gives the overlay the other nodes' WireGuard keys.
func (a *Agent) syncPeerKeys() error {
	keys := map[netip.Addr]netmesh.WireGuardKey{}
	for _, nd := range a.view.nodes {
		if nd.id != a.NodeID && !nd.key.IsZero() && nd.data != a.DataAddr {
			keys[nd.data] = nd.key
		}
	}
	if a.applied.peerKeys != nil && maps.Equal(keys, a.applied.peerKeys) {
		return nil
	}
	if err := a.overlay.SetPeerKeys(keys); err != nil {
		return fmt.Errorf("netagent: WireGuard peer keys: %w", err)
	}
	a.applied.peerKeys = keys
	return nil
}

// wantedNetworks are the networks the node needs: ingress, those of its
// tasks in the view, and those of the tasks it holds (live or on disk).
func (a *Agent) wantedNetworks() map[string]netmesh.OverlayNetwork {
	want := map[string]netmesh.OverlayNetwork{}
	add := func(id string) {
		if ni := a.view.nets[id]; ni != nil {
			want[id] = ni.n
		}
	}
	add(a.view.ingress)
	for id := range a.view.localNets {
		add(id)
	}
	for _, ts := range a.tasks {
		for _, at := range ts.rec.Networks {
			add(at.NetworkID)
		}
	}
	return want
}

// syncNetworks makes and removes overlay networks, and programs their
// node address and remote endpoints.
func (a *Agent) syncNetworks() error {
	want := a.wantedNetworks()
	var errs []error
	if !a.pruned {
		removed, err := a.overlay.RemoveStale(slices.Collect(maps.Values(want)))
		if err != nil {
			errs = append(errs, fmt.Errorf("netagent: remove stale network devices: %w", err))
		} else {
			a.pruned = true
		}
		if len(removed) > 0 {
			a.logger().Info("netagent: removed stale network devices", "devices", removed)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(a.applied.networks)) {
		n := a.applied.networks[id]
		if w, ok := want[id]; ok && w == n {
			continue
		}
		if err := a.overlay.RemoveNetwork(n); err != nil {
			errs = append(errs, fmt.Errorf("netagent: remove network %s (VNI %d): %w", id, n.VNI, err))
			continue
		}
		a.logger().Info("netagent: network removed", "network", id, "vni", n.VNI)
		delete(a.applied.networks, id)
		delete(a.applied.endpoints, id)
		delete(a.applied.nodeAddrs, id)
	}
	for _, id := range slices.Sorted(maps.Keys(want)) {
		errs = append(errs, a.ensureNetwork(id))
	}
	return errors.Join(errs...)
}

// ensureNetwork makes a network of the view, gives the node its address on
// it, and programs its remote endpoints, each only when changed.
func (a *Agent) ensureNetwork(id string) error {
	ni := a.view.nets[id]
	if ni == nil {
		return fmt.Errorf("%w: %s", ErrUnknownNetwork, id)
	}
	n := ni.n
	if _, ok := a.applied.networks[id]; !ok {
		if err := a.overlay.EnsureNetwork(n); err != nil {
			return fmt.Errorf("netagent: network %s (VNI %d): %w", id, n.VNI, err)
		}
		a.applied.networks[id] = n
		a.logger().Info("netagent: network ready", "network", id, "name", ni.name, "vni", n.VNI, "subnet", n.Subnet, "encrypted", n.Encrypted)
	}
	var errs []error
	if a.view.self != nil {
		if addr, ok := a.view.self.attach[id]; ok && a.applied.nodeAddrs[id] != addr {
			if err := a.overlay.SetNodeAddr(n, addr); err != nil {
				errs = append(errs, fmt.Errorf("netagent: node address %s on network %s: %w", addr, id, err))
			} else {
				a.applied.nodeAddrs[id] = addr
			}
		}
	}
	eps := a.view.endpoints[id]
	if old, ok := a.applied.endpoints[id]; !ok || !slices.Equal(old, eps) {
		err := a.overlay.SetEndpoints(n, eps)
		if errors.Is(err, netmesh.ErrNoPeerKey) {
			// Programmed but for those nodes; SetPeerKeys adds them when
			// their keys come.
			a.logger().Warn("netagent: endpoints on nodes without a WireGuard key", "network", id, "err", err)
			err = nil
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("netagent: endpoints of network %s: %w", id, err))
		} else {
			a.applied.endpoints[id] = eps
		}
	}
	return errors.Join(errs...)
}

// wireGuardPort is an encrypted network's port, as netmesh picks it.
func wireGuardPort(n netmesh.OverlayNetwork) uint16 {
	if n.WireGuardPort != 0 {
		return uint16(n.WireGuardPort)
	}
	return uint16(netmesh.DefaultWireGuardPort + int(n.VNI%1000))
}

// syncFirewall lets VXLAN and the encrypted networks' WireGuard ports in
// from the other nodes only.
func (a *Agent) syncFirewall(ctx context.Context) error {
	var peers []netip.Addr
	for _, nd := range a.view.nodes {
		if nd.id != a.NodeID && nd.data != a.DataAddr {
			peers = append(peers, nd.data)
		}
	}
	slices.SortFunc(peers, netip.Addr.Compare)
	peers = slices.Compact(peers)
	var ports []netmesh.NodePort
	for _, n := range a.applied.networks {
		if n.Encrypted {
			ports = append(ports, netmesh.NodePort{Protocol: netmesh.UDP, Port: wireGuardPort(n)})
		}
	}
	slices.SortFunc(ports, func(x, y netmesh.NodePort) int { return int(x.Port) - int(y.Port) })
	ports = slices.Compact(ports)
	if a.fw == nil || !slices.Equal(ports, a.applied.peerPorts) {
		// The ports are the table's shape: a new table replaces the old in
		// one transaction (NodeFirewall.Start), never leaving the node open.
		fw := a.newFirewall(ports)
		if err := fw.SetPeers(ctx, peers); err != nil {
			return fmt.Errorf("netagent: node firewall: %w", err)
		}
		if err := fw.Start(ctx); err != nil {
			return fmt.Errorf("netagent: node firewall: %w", err)
		}
		a.fw, a.applied.peerPorts, a.applied.peers = fw, ports, peers
		return nil
	}
	if a.applied.peers != nil && slices.Equal(peers, a.applied.peers) {
		return nil
	}
	if err := a.fw.SetPeers(ctx, peers); err != nil {
		return fmt.Errorf("netagent: node firewall peers: %w", err)
	}
	if peers == nil {
		peers = []netip.Addr{}
	}
	a.applied.peers = peers
	return nil
}

// syncRegistry puts the view's services in the DNS registry.
func (a *Agent) syncRegistry() error {
	seen := map[string]bool{}
	for _, s := range a.view.services {
		seen[s.id] = true
		se := a.view.serviceEndpoint(s)
		if old, ok := a.applied.services[s.id]; ok && sameService(old, se) {
			continue
		}
		a.registry.SetService(se)
		a.applied.services[s.id] = se
	}
	for id := range a.applied.services {
		if !seen[id] {
			a.registry.RemoveService(id)
			delete(a.applied.services, id)
		}
	}
	return nil
}

// vipKey names a VIP service in a task's load balancer.
type vipKey struct {
	vip   netip.Addr
	proto netmesh.Protocol
}

// vipServices are the VIP services a task on the given networks balances:
// every port of each service VIP on those networks, over TCP and UDP, to
// the service's tasks there (those not ready draining).
func (c *compiled) vipServices(networks []string) map[vipKey]netmesh.VIPService {
	out := map[vipKey]netmesh.VIPService{}
	owner := map[netip.Addr]string{}
	for _, s := range c.services {
		if s.mode != netmesh.VIP {
			continue
		}
		for _, netID := range networks {
			vip, ok := s.vips[netID]
			if !ok {
				continue
			}
			if other, dup := owner[vip]; dup && other != s.id {
				continue // two services with one VIP: bad data, the first keeps it
			}
			owner[vip] = s.id
			var backends []netmesh.Backend
			for _, t := range s.tasks {
				if addr, ok := t.addrs[netID]; ok {
					backends = append(backends, netmesh.Backend{Addr: addr, Draining: !t.ready})
				}
			}
			slices.SortFunc(backends, func(x, y netmesh.Backend) int { return x.Addr.Compare(y.Addr) })
			for _, p := range []netmesh.Protocol{netmesh.TCP, netmesh.UDP} {
				out[vipKey{vip, p}] = netmesh.VIPService{ServiceID: s.id, VIP: vip, Protocol: p, Backends: backends}
			}
		}
	}
	return out
}

// syncTaskLB makes a live task's load balancer match the view.
func (a *Agent) syncTaskLB(ctx context.Context, ts *taskState) error {
	if ts.lb == nil {
		return nil // a task on no network: no VIP to balance (see wire)
	}
	want := a.view.vipServices(ts.networkIDs())
	var errs []error
	for k, old := range ts.vips {
		if _, ok := want[k]; ok {
			continue
		}
		if err := ts.lb.Remove(ctx, k.vip, k.proto, 0); err != nil {
			errs = append(errs, fmt.Errorf("netagent: task %s: remove VIP %s/%s (service %s): %w", ts.rec.ID, k.vip, k.proto, old.ServiceID, err))
			continue
		}
		delete(ts.vips, k)
	}
	for k, s := range want {
		if old, ok := ts.vips[k]; ok && old.ServiceID == s.ServiceID && slices.Equal(old.Backends, s.Backends) {
			continue
		}
		if err := ts.lb.Set(ctx, s); err != nil {
			errs = append(errs, fmt.Errorf("netagent: task %s: VIP %s/%s (service %s): %w", ts.rec.ID, k.vip, k.proto, s.ServiceID, err))
			continue
		}
		ts.vips[k] = s
	}
	return errors.Join(errs...)
}

// portKey names a published port.
type portKey struct {
	proto netmesh.Protocol
	port  uint16
}

// reservedPorts are the node's own ports, which no service may publish:
// VXLAN, gossip, and the encrypted networks' WireGuard ports.
func (a *Agent) reservedPorts() map[portKey]bool {
	vx := uint16(a.VXLANPort)
	if vx == 0 {
		vx = netmesh.DefaultVXLANPort
	}
	r := map[portKey]bool{{netmesh.UDP, vx}: true, {netmesh.UDP, netmesh.DefaultGossipPort}: true, {netmesh.TCP, netmesh.DefaultGossipPort}: true}
	for _, ni := range a.view.nets {
		if ni.n.Encrypted {
			r[portKey{netmesh.UDP, wireGuardPort(ni.n)}] = true
		}
	}
	return r
}

// publishedPorts are the ports this node publishes: every ingress-mode
// port, to the service's tasks on the ingress network anywhere; host-mode
// ports of services with a task here, to those tasks' gateway addresses.
func (a *Agent) publishedPorts() map[portKey]netmesh.PublishedPort {
	out := map[portKey]netmesh.PublishedPort{}
	reserved := a.reservedPorts()
	for _, s := range a.view.services {
		for _, p := range s.ports {
			k := portKey{p.proto, p.published}
			if reserved[k] {
				a.logger().Warn("netagent: published port is one of the node's own: skipped", "service", s.id, "port", p.published, "protocol", p.proto)
				continue
			}
			if other, dup := out[k]; dup {
				if other.ServiceID != s.id || other.HostMode != p.host {
					a.logger().Warn("netagent: published port already taken: skipped", "service", s.id, "port", p.published, "protocol", p.proto, "by", other.ServiceID)
				}
				continue
			}
			if holder, ok := a.applied.ports[k]; ok && holder.ServiceID != s.id && holdsPort(a.view.services, holder.ServiceID, k) {
				// Bad data: the port stays with the service that has it.
				a.logger().Warn("netagent: published port already taken: skipped", "service", s.id, "port", p.published, "protocol", p.proto, "by", holder.ServiceID)
				continue
			}
			pp := netmesh.PublishedPort{ServiceID: s.id, Protocol: p.proto, Port: p.published, HostMode: p.host}
			for _, t := range s.tasks {
				if p.host {
					if t.node != a.NodeID {
						continue
					}
					ts := a.tasks[t.id]
					if ts == nil || !ts.rec.Gateway.IsValid() {
						continue // not wired here (yet), or no gateway (internal only)
					}
					pp.Backends = append(pp.Backends, netmesh.Backend{Addr: ts.rec.Gateway, Port: p.target, Draining: !t.ready})
				} else if addr, ok := t.addrs[a.view.ingress]; ok && a.view.ingress != "" {
					pp.Backends = append(pp.Backends, netmesh.Backend{Addr: addr, Port: p.target, Draining: !t.ready})
				}
			}
			if p.host && len(pp.Backends) == 0 {
				continue // published on the nodes of its tasks only
			}
			if !p.host && a.view.ingress == "" {
				a.logger().Warn("netagent: ingress-mode port without an ingress network: skipped", "service", s.id, "port", p.published)
				continue
			}
			slices.SortFunc(pp.Backends, func(x, y netmesh.Backend) int { return x.Addr.Compare(y.Addr) })
			out[k] = pp
		}
	}
	return out
}

// syncPorts makes the routing mesh publish what the view publishes here.
func (a *Agent) syncPorts(ctx context.Context) error {
	if !a.meshStarted {
		if err := a.mesh.Start(ctx); err != nil {
			return fmt.Errorf("netagent: routing mesh: %w", err)
		}
		a.meshStarted = true
	}
	want := a.publishedPorts()
	var errs []error
	for k := range a.applied.ports {
		if _, ok := want[k]; ok {
			continue
		}
		if err := a.mesh.Remove(ctx, k.proto, k.port); err != nil {
			errs = append(errs, fmt.Errorf("netagent: unpublish %d/%s: %w", k.port, k.proto, err))
			continue
		}
		delete(a.applied.ports, k)
		a.stats.MeshRuleChanges++
		a.logger().Info("netagent: port unpublished", "port", k.port, "protocol", k.proto)
	}
	for k, p := range want {
		if old, ok := a.applied.ports[k]; ok && reflect.DeepEqual(old, p) {
			continue
		}
		if err := a.mesh.Set(ctx, p); err != nil {
			errs = append(errs, fmt.Errorf("netagent: publish %d/%s (service %s): %w", k.port, k.proto, p.ServiceID, err))
			continue
		}
		a.applied.ports[k] = p
		a.stats.MeshRuleChanges++
		a.logger().Debug("netagent: published port backends", "port", k.port, "protocol", k.proto, "service", p.ServiceID, "backends", backendList(p.Backends))
	}
	return errors.Join(errs...)
}

// backendList names backends for a log line ("10.0.0.5:80
// 10.0.0.6:80(draining)"), the first 32 of them.
func backendList(bs []netmesh.Backend) string {
	const shown = 32
	var b strings.Builder
	for i, be := range bs[:min(len(bs), shown)] {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(netip.AddrPortFrom(be.Addr, be.Port).String())
		if be.Draining {
			b.WriteString("(draining)")
		}
	}
	if len(bs) > shown {
		fmt.Fprintf(&b, " and %d more", len(bs)-shown)
	}
	return b.String()
}

// holdsPort reports whether the service still publishes the port.
func holdsPort(services []*serviceInfo, id string, k portKey) bool {
	for _, s := range services {
		if s.id == id {
			return slices.ContainsFunc(s.ports, func(p portSpec) bool { return p.proto == k.proto && p.published == k.port })
		}
	}
	return false
}

// sameService compares two service endpoints (reflect.DeepEqual, at a
// tenth of its cost: Apply compares every service of the view).
func sameService(x, y netmesh.ServiceEndpoint) bool {
	if x.ID != y.ID || x.Name != y.Name || x.Mode != y.Mode || !slices.Equal(x.Aliases, y.Aliases) ||
		!maps.EqualFunc(x.NetworkAliases, y.NetworkAliases, slices.Equal) || !maps.Equal(x.VIPs, y.VIPs) || !maps.Equal(x.NetworkNames, y.NetworkNames) || len(x.Tasks) != len(y.Tasks) {
		return false
	}
	for i, t := range x.Tasks {
		u := y.Tasks[i]
		if t.ID != u.ID || t.Name != u.Name || t.Healthy != u.Healthy || !maps.Equal(t.Addrs, u.Addrs) {
			return false
		}
	}
	return true
}
