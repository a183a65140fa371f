package netmesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"
)

// NodePort is a port of the node itself.
type NodePort struct {
	Protocol Protocol
	Port     uint16
}

// DefaultTaskInterfaces are the interfaces tasks' traffic reaches a node by:
// the gateway bridge, the overlay bridges and the WireGuard devices of
// encrypted networks (which carry other nodes' tasks).
var DefaultTaskInterfaces = []string{DefaultGatewayBridge, "sbr*", "swg*"}

// DefaultTaskPorts are the node's ports tasks may reach: DNS, for a
// resolver of the node that tasks are pointed at.
var DefaultTaskPorts = []NodePort{{UDP, 53}, {TCP, 53}}

// NodeFirewall guards a node's own ports, in the input hook of a private
// nftables table (inet: IPv4 and IPv6):
//
//   - Traffic from tasks into the node itself (by the gateway bridge, an
//     overlay bridge or a WireGuard device) reaches only TaskPorts, ICMP
//     echo (a ping of the gateway) and IPv6 neighbour discovery, plus the
//     replies to the node's own connections; not the management, gossip or
//     VXLAN ports, nor anything else bound on the node. What tasks send
//     through the node (the gateway's way out, published ports) is
//     forwarded, not input, and is not touched.
//   - VXLAN and gossip (and PeerPorts) are accepted only from the peers the
//     caller sets (SetPeers): the other nodes' underlay addresses.
//   - Loopback is not filtered; everything else is left alone.
//
// A drop here is final whatever other tables accept. Start replaces what an
// earlier agent left; Close removes the table.
type NodeFirewall struct {
	// NetNS is the path of the node's network namespace; empty means the
	// caller's.
	NetNS string
	// Table is the nftables table's name; empty means "shoal-input".
	Table string
	// TaskInterfaces are nft interface names (a trailing * matches a
	// prefix) by which tasks' traffic comes in; nil means
	// DefaultTaskInterfaces.
	TaskInterfaces []string
	// TaskPorts are the node's ports tasks may reach; nil means
	// DefaultTaskPorts, empty none.
	TaskPorts []NodePort
	// VXLANPort is the overlay's UDP port; 0 means 4789.
	VXLANPort uint16
	// GossipPort is gossip's port (UDP and TCP); 0 means 7946.
	GossipPort uint16
	// PeerPorts are more ports only peers may reach (encrypted networks'
	// WireGuard ports, say).
	PeerPorts []NodePort
	// Logger receives the firewall's logs; nil discards.
	Logger *slog.Logger

	mu      sync.Mutex
	peers   []netip.Addr
	started bool
	closed  bool
}

func (f *NodeFirewall) table() string {
	if f.Table == "" {
		return "shoal-input"
	}
	return f.Table
}

// peerPorts are the ports only peers may reach.
func (f *NodeFirewall) peerPorts() []NodePort {
	vx, gossip := f.VXLANPort, f.GossipPort
	if vx == 0 {
		vx = DefaultVXLANPort
	}
	if gossip == 0 {
		gossip = DefaultGossipPort
	}
	return append([]NodePort{{UDP, vx}, {UDP, gossip}, {TCP, gossip}}, f.PeerPorts...)
}

func (f *NodeFirewall) validate() error {
	ifaces := f.TaskInterfaces
	if ifaces == nil {
		ifaces = DefaultTaskInterfaces
	}
	for _, i := range ifaces {
		if i == "" || len(i) > 15 || strings.ContainsAny(i, "\" \t\n\\;{}") {
			return fmt.Errorf("netmesh: firewall: bad interface name %q", i)
		}
	}
	ports := slices.Concat(f.TaskPorts, f.PeerPorts)
	for _, p := range ports {
		if p.Port == 0 || (p.Protocol != TCP && p.Protocol != UDP) {
			return fmt.Errorf("netmesh: firewall: port %d/%s: want a port and tcp or udp", p.Port, p.Protocol)
		}
	}
	return nil
}

// Start installs the table (replacing one an earlier agent left), with
// the peers set so far.
func (f *NodeFirewall) Start(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return fmt.Errorf("netmesh: firewall: %w", net.ErrClosed)
	}
	if f.started {
		return nil
	}
	if _, err := exec.LookPath("nft"); err != nil {
		return errors.New("netmesh: the node firewall needs the nft program (apt-get install nftables)")
	}
	if err := f.validate(); err != nil {
		return err
	}
	if err := nsExec(f.NetNS).nft(ctx, f.script()); err != nil {
		return err
	}
	f.started = true
	f.logger().Info("node firewall", "table", f.table(), "peers", len(f.peers))
	return nil
}

// script replaces the table in one transaction.
func (f *NodeFirewall) script() string {
	t := f.table()
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {}\ndelete table inet %s\ntable inet %s {\n", t, t, t)
	b.WriteString(" set peers {\n  type ipv4_addr\n")
	if len(f.peers) > 0 {
		fmt.Fprintf(&b, "  elements = { %s }\n", joinAddrs(f.peers))
	}
	b.WriteString(" }\n")
	b.WriteString(" chain input {\n  type filter hook input priority filter; policy accept;\n  iifname \"lo\" accept\n")
	ifaces := f.TaskInterfaces
	if ifaces == nil {
		ifaces = DefaultTaskInterfaces
	}
	for _, i := range ifaces {
		fmt.Fprintf(&b, "  iifname \"%s\" goto from_tasks\n", i)
	}
	for _, p := range f.peerPorts() {
		fmt.Fprintf(&b, "  meta l4proto %s th dport %d goto peers_only\n", p.Protocol, p.Port)
	}
	b.WriteString(" }\n")
	b.WriteString(" chain peers_only {\n  ip saddr @peers accept\n  counter drop\n }\n")
	b.WriteString(" chain from_tasks {\n  ct state established,related accept\n")
	ports := f.TaskPorts
	if ports == nil {
		ports = DefaultTaskPorts
	}
	for _, p := range ports {
		fmt.Fprintf(&b, "  meta l4proto %s th dport %d accept\n", p.Protocol, p.Port)
	}
	b.WriteString("  icmp type echo-request accept\n")
	b.WriteString("  icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, echo-request } accept\n")
	b.WriteString("  counter drop\n }\n}\n")
	return b.String()
}

func joinAddrs(addrs []netip.Addr) string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

// SetPeers replaces the addresses VXLAN, gossip and PeerPorts are accepted
// from (the other nodes' underlay addresses), in one transaction. Before
// Start, they are kept for Start.
func (f *NodeFirewall) SetPeers(ctx context.Context, peers []netip.Addr) error {
	var clean []netip.Addr
	for _, p := range peers {
		p = p.Unmap()
		if !p.Is4() {
			return fmt.Errorf("netmesh: firewall: peer %v is not an IPv4 address", p)
		}
		clean = append(clean, p)
	}
	slices.SortFunc(clean, netip.Addr.Compare)
	clean = slices.Compact(clean)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return fmt.Errorf("netmesh: firewall: %w", net.ErrClosed)
	}
	if f.started {
		script := fmt.Sprintf("flush set inet %s peers\n", f.table())
		if len(clean) > 0 {
			script += fmt.Sprintf("add element inet %s peers { %s }\n", f.table(), joinAddrs(clean))
		}
		if err := nsExec(f.NetNS).nft(ctx, script); err != nil {
			return err
		}
	}
	f.peers = clean
	return nil
}

// Close removes the table. A second Close returns an error wrapping
// net.ErrClosed.
func (f *NodeFirewall) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return fmt.Errorf("netmesh: firewall: %w", net.ErrClosed)
	}
	f.closed = true
	if !f.started {
		return nil
	}
	return nsExec(f.NetNS).nft(context.Background(), fmt.Sprintf("table inet %[1]s {}\ndelete table inet %[1]s\n", f.table()))
}

func (f *NodeFirewall) logger() *slog.Logger {
	if f.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return f.Logger
}
