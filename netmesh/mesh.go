package netmesh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
)

// Protocol of a published port.
type Protocol string

// Protocols.
const (
	TCP Protocol = "tcp"
	UDP Protocol = "udp"
)

// Backend is a task a published port leads to.
type Backend struct {
	Addr netip.Addr
	Port uint16
}

// PublishedPort makes a service answer on a port of every node (ingress
// mode) and balances over its healthy backends on any node.
type PublishedPort struct {
	// ServiceID and Port name the entry; the same service may publish
	// several ports.
	ServiceID string
	Protocol  Protocol
	Port      uint16
	// Backends are the healthy tasks; an empty list refuses connections.
	Backends []Backend
}

// Backend kinds a RoutingMesh can use.
const (
	BackendNFTables = "nftables"
	BackendIPVS     = "ipvs"
)

// RoutingMesh programs a node's published ports. It keeps its rules in a
// private nftables table (the design of kube-proxy's nftables mode, KEP-3866):
// a verdict map keyed on protocol and port sends new connections to a chain
// per published port that picks a backend with `numgen random`; connections
// are masqueraded so replies come back through this node. Every change
// rewrites the table in one nft transaction: the kernel swaps it atomically,
// so established connections keep their conntrack entries.
//
// IPVS is not used: where the kernel has it, it would be a choice here, but
// these machines have none, and ipvs.New reports no error without it. The
// chosen backend is logged and reported by Backend.
type RoutingMesh struct {
	// NetNS is the path of the node's network namespace; empty means the
	// caller's.
	NetNS string
	// Table is the nftables table's name; empty means "shoal-mesh".
	Table string
	// Logger receives the mesh's logs; nil discards.
	Logger *slog.Logger

	mu      sync.Mutex
	ports   map[string]PublishedPort
	backend string
	started bool
}

func (m *RoutingMesh) table() string {
	if m.Table == "" {
		return "shoal-mesh"
	}
	return m.Table
}

// Start detects the kernel's load-balancing support, enables forwarding in
// the node's namespace and installs an empty table.
func (m *RoutingMesh) Start(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.started {
		return nil
	}
	if _, err := exec.LookPath("nft"); err != nil {
		return errors.New("netmesh: routing mesh needs the nft program (apt-get install nftables)")
	}
	m.backend = BackendNFTables
	hasIPVS := false
	if fam, err := netlink.GenlFamilyGet("IPVS"); err == nil && fam != nil {
		hasIPVS = true
	}
	m.logger().Info("netmesh: routing mesh backend", "backend", m.backend, "kernel_ipvs", hasIPVS)
	for _, kv := range [][2]string{{"net.ipv4.ip_forward", "1"}, {"net.ipv4.conf.all.route_localnet", "1"}} {
		if err := m.sysctl(ctx, kv[0], kv[1]); err != nil {
			return err
		}
	}
	m.sysctl(ctx, "net.bridge.bridge-nf-call-iptables", "0") // absent without br_netfilter
	m.ports = map[string]PublishedPort{}
	if err := m.apply(ctx); err != nil {
		return err
	}
	m.started = true
	return nil
}

// Backend reports the load-balancing backend in use.
func (m *RoutingMesh) Backend() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.backend
}

// Set adds or replaces a published port.
func (m *RoutingMesh) Set(ctx context.Context, p PublishedPort) error {
	if p.Port == 0 || (p.Protocol != TCP && p.Protocol != UDP) {
		return fmt.Errorf("netmesh: published port %d/%s: want a port and tcp or udp", p.Port, p.Protocol)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.started {
		return ErrNotStarted
	}
	prev, had := m.ports[portKey(p.Protocol, p.Port)]
	m.ports[portKey(p.Protocol, p.Port)] = p
	if err := m.apply(ctx); err != nil {
		if had {
			m.ports[portKey(p.Protocol, p.Port)] = prev
		} else {
			delete(m.ports, portKey(p.Protocol, p.Port))
		}
		return err
	}
	return nil
}

// Remove unpublishes a port.
func (m *RoutingMesh) Remove(ctx context.Context, proto Protocol, port uint16) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.started {
		return ErrNotStarted
	}
	delete(m.ports, portKey(proto, port))
	return m.apply(ctx)
}

// Close deletes the table.
func (m *RoutingMesh) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.started {
		return nil
	}
	m.started = false
	return m.nft(context.Background(), fmt.Sprintf("delete table ip %s\n", m.table()))
}

func portKey(p Protocol, port uint16) string { return fmt.Sprintf("%s/%d", p, port) }

// rules renders the whole table.
func (m *RoutingMesh) rules() string {
	var b strings.Builder
	t := m.table()
	// Creating then deleting makes the script work whether or not the table
	// exists; the new table follows in the same transaction.
	fmt.Fprintf(&b, "table ip %s {}\ndelete table ip %s\ntable ip %s {\n", t, t, t)
	keys := make([]string, 0, len(m.ports))
	for k := range m.ports {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var vmap []string
	for _, k := range keys {
		p := m.ports[k]
		chain := fmt.Sprintf("svc-%s-%d", p.Protocol, p.Port)
		vmap = append(vmap, fmt.Sprintf("%s . %d : goto %s", p.Protocol, p.Port, chain))
		fmt.Fprintf(&b, " chain %s {\n", chain)
		switch n := len(p.Backends); n {
		case 0:
			fmt.Fprintf(&b, "  reject\n")
		case 1:
			fmt.Fprintf(&b, "  meta l4proto %s ct mark set 0x5348 dnat to %s:%d\n", p.Protocol, p.Backends[0].Addr, p.Backends[0].Port)
		default:
			var elems []string
			for i, be := range p.Backends {
				elems = append(elems, fmt.Sprintf("%d : %s . %d", i, be.Addr, be.Port))
			}
			fmt.Fprintf(&b, "  meta l4proto %s ct mark set 0x5348 dnat ip addr . port to numgen random mod %d map { %s }\n", p.Protocol, n, strings.Join(elems, ", "))
		}
		b.WriteString(" }\n")
	}
	b.WriteString(" map published {\n  type inet_proto . inet_service : verdict\n")
	if len(vmap) > 0 {
		fmt.Fprintf(&b, "  elements = { %s }\n", strings.Join(vmap, ", "))
	}
	b.WriteString(" }\n")
	b.WriteString(" chain prerouting {\n  type nat hook prerouting priority dstnat; policy accept;\n  fib daddr type local meta l4proto . th dport vmap @published\n }\n")
	b.WriteString(" chain output {\n  type nat hook output priority -100; policy accept;\n  fib daddr type local meta l4proto . th dport vmap @published\n }\n")
	b.WriteString(" chain postrouting {\n  type nat hook postrouting priority srcnat; policy accept;\n  ct mark 0x5348 masquerade\n }\n")
	b.WriteString("}\n")
	return b.String()
}

func (m *RoutingMesh) apply(ctx context.Context) error { return m.nft(ctx, m.rules()) }

// nft runs an nft script in the node's namespace.
func (m *RoutingMesh) nft(ctx context.Context, script string) error {
	cmd := m.inNS(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("netmesh: nft: %v: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

func (m *RoutingMesh) sysctl(ctx context.Context, key, value string) error {
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	if m.NetNS == "" {
		return os.WriteFile(path, []byte(value), 0o644)
	}
	cmd := m.inNS(ctx, "sh", "-c", fmt.Sprintf("test -e %s && echo %s > %s || test ! -e %s", path, value, path, path))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("netmesh: sysctl %s: %v: %s", key, err, out)
	}
	return nil
}

func (m *RoutingMesh) inNS(ctx context.Context, name string, args ...string) *exec.Cmd {
	if m.NetNS == "" {
		return exec.CommandContext(ctx, name, args...)
	}
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + m.NetNS, name}, args...)...)
}

func (m *RoutingMesh) logger() *slog.Logger {
	if m.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return m.Logger
}
