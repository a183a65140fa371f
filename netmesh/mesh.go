package netmesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os/exec"
	"slices"
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

// Backend is a task a published port or a VIP leads to.
type Backend struct {
	Addr netip.Addr
	Port uint16
	// Draining takes the backend out of the choice for new connections
	// while its established ones go on (their conntrack entries are kept):
	// a graceful drain sets it, waits for the task to finish its
	// connections or stop, then leaves the backend out, which resets what
	// is left.
	Draining bool
}

// key is the backend without its state.
func (b Backend) key() Backend { return Backend{Addr: b.Addr, Port: b.Port} }

// withPort is the backend with another port.
func (b Backend) withPort(port uint16) Backend { b.Port = port; return b }

// active are the backends new connections may go to.
func active(backends []Backend) []Backend {
	out := make([]Backend, 0, len(backends))
	for _, b := range backends {
		if !b.Draining {
			out = append(out, b)
		}
	}
	return out
}

// validate refuses what is no task's address: IPv6 (not supported yet),
// loopback (a published port to it would publish the node's loopback
// services on every node), unspecified, multicast and broadcast.
func (b Backend) validate() error {
	a := b.Addr
	if !a.Is4() || b.Port == 0 || a.IsLoopback() || a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return fmt.Errorf("backend %v:%d is not a task's IPv4 address and port", b.Addr, b.Port)
	}
	return nil
}

// PublishedPort makes a service answer on a port of every node (ingress
// mode) and balances over its healthy backends on any node.
type PublishedPort struct {
	// ServiceID and Port name the entry; the same service may publish
	// several ports.
	ServiceID string
	Protocol  Protocol
	Port      uint16
	// Backends are the healthy tasks; with none that is not Draining, new
	// connections are refused.
	Backends []Backend
	// HostMode publishes the port on this node only, to tasks on this node
	// (set it only where such a task runs). Connections are not masqueraded:
	// the task sees the client's address.
	HostMode bool
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
// are masqueraded so replies come back through this node. A change touches
// only its port's chain and map element, in one nft transaction that the
// kernel applies atomically.
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

	mu    sync.Mutex
	ports map[string]PublishedPort
	left  unflushed
	// afterDump, set by tests, runs between a flush's listing and its
	// deletions.
	afterDump func()
	backend   string
	started   bool
	fast      *fastPath
}

func (m *RoutingMesh) table() string {
	if m.Table == "" {
		return "shoal-mesh"
	}
	return m.Table
}

// Start detects the kernel's load-balancing support, enables forwarding in
// the node's namespace (and route_localnet, so that published ports answer
// on the node's 127.0.0.1 too, with the node's loopback guarded from other
// hosts) and installs an empty table.
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
	m.ports = map[string]PublishedPort{}
	m.left = unflushed{}
	// A fresh table: after a crash, whatever the last agent left is gone,
	// and the caller sets the published ports again. It comes first, so
	// that route_localnet is never on without its guard.
	if err := m.nft(ctx, baseScript(m.table(), "inet_proto . inet_service", "fib daddr type local meta l4proto . th dport", []string{"prerouting", "output"}, localnetGuard)); err != nil {
		return err
	}
	for _, kv := range [][2]string{{"net.ipv4.ip_forward", "1"}, {"net.ipv4.conf.all.route_localnet", "1"}} {
		if err := m.sysctl(ctx, kv[0], kv[1]); err != nil {
			return err
		}
	}
	m.sysctl(ctx, "net.bridge.bridge-nf-call-iptables", "0") // absent without br_netfilter
	fast, err := newFastPath(m.NetNS, m.table())
	if err != nil {
		return err
	}
	m.fast = fast
	m.started = true
	return nil
}

// Backend reports the load-balancing backend in use.
func (m *RoutingMesh) Backend() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.backend
}

// Set adds or replaces a published port. Only that port's chain and map
// element change (one nft transaction), so the cost does not grow with the
// number of services. When Set returns, the kernel has the new backend set:
// no connection opened after it goes to a backend left out or Draining.
// Then the connections still tracked to backends left out are deleted (not
// those of Draining ones), so their clients are reset rather than hang.
func (m *RoutingMesh) Set(ctx context.Context, p PublishedPort) error {
	if p.Port == 0 || (p.Protocol != TCP && p.Protocol != UDP) {
		return fmt.Errorf("netmesh: published port %d/%s: want a port and tcp or udp", p.Port, p.Protocol)
	}
	for _, b := range p.Backends {
		if err := b.validate(); err != nil {
			return fmt.Errorf("netmesh: published port %d/%s: %w", p.Port, p.Protocol, err)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.started {
		return ErrNotStarted
	}
	k := portKey(p.Protocol, p.Port)
	prev, had := m.ports[k]
	if err := m.fast.setService("published", chainName(p.Protocol, p.Port), meshKey(p.Protocol, p.Port), !had, p.Protocol, active(p.Backends), !p.HostMode); err != nil {
		return err
	}
	p.Backends = slices.Clone(p.Backends)
	m.ports[k] = p
	return m.left.flush(m.logger(), fmt.Sprintf("published port %d/%s", p.Port, p.Protocol), k, m.NetNS, p.Protocol, p.Port, netip.Addr{},
		removedBackends(prev.Backends, p.Backends), p.Backends, m.afterDump)
}

// Remove unpublishes a port.
func (m *RoutingMesh) Remove(ctx context.Context, proto Protocol, port uint16) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.started {
		return ErrNotStarted
	}
	k := portKey(proto, port)
	prev, had := m.ports[k]
	if had {
		if err := m.fast.removeService("published", chainName(proto, port), meshKey(proto, port)); err != nil {
			return err
		}
		delete(m.ports, k)
	}
	// Gone already: what a failed flush of the removal left is flushed
	// again (the caller retries a Remove that failed).
	return m.left.flush(m.logger(), fmt.Sprintf("published port %d/%s (unpublished)", port, proto), k, m.NetNS, proto, port, netip.Addr{},
		prev.Backends, nil, m.afterDump)
}

// Close turns route_localnet off again, then deletes the table (and with
// it the guard route_localnet needs). Forwarding stays on: the gateway
// network may need it.
func (m *RoutingMesh) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.started {
		return nil
	}
	m.started = false
	if m.fast != nil {
		m.fast.close()
		m.fast = nil
	}
	ctx := context.Background()
	err := m.sysctl(ctx, "net.ipv4.conf.all.route_localnet", "0")
	return errors.Join(err, m.nft(ctx, fmt.Sprintf("delete table ip %s\n", m.table())))
}

func portKey(p Protocol, port uint16) string { return fmt.Sprintf("%s/%d", p, port) }

func chainName(p Protocol, port uint16) string { return fmt.Sprintf("svc-%s-%d", p, port) }

// localnetGuard drops packets to or from 127.0.0.0/8 that come from
// anywhere but the node itself (the CVE-2020-8558 pattern). Start turns
// route_localnet on, so that the node's own connections to a published
// port on 127.0.0.1 can be sent to a backend on another node; without the
// guard, the same setting would let any host on the node's links reach
// services that listen on the node's loopback only, and send packets that
// claim a loopback source (which the kernel then accepts, but for
// 127.0.0.1 itself) to services that trust such sources as the node's own.
// It runs before NAT (priority -150), where replies to the node's
// connections that the mesh sent elsewhere still carry the node's own
// address (masqueraded): what the mesh itself DNATs is never dropped. The
// mesh never DNATs to loopback either (Backend.validate).
const localnetGuard = ` chain localnet {
  type filter hook prerouting priority -150; policy accept;
  iifname != "lo" ip daddr 127.0.0.0/8 drop
  iifname != "lo" ip saddr 127.0.0.0/8 drop
 }
`

// baseScript replaces the table with an empty one: the verdict map, the
// hooks and any extra chains. Creating then deleting makes it work whether
// or not the table exists; the new table follows in the same transaction.
func baseScript(table, mapType, match string, hooks []string, extra string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table ip %s {}\ndelete table ip %s\ntable ip %s {\n", table, table, table)
	fmt.Fprintf(&b, " map published {\n  type %s : verdict\n }\n", mapType)
	b.WriteString(extra)
	for _, h := range hooks {
		fmt.Fprintf(&b, " chain %s {\n  type nat hook %s priority %s; policy accept;\n  %s vmap @published\n }\n", h, h, natPriority(h), match)
	}
	b.WriteString(" chain postrouting {\n  type nat hook postrouting priority srcnat; policy accept;\n  ct mark 0x5348 masquerade\n }\n}\n")
	return b.String()
}

func natPriority(hook string) string {
	if hook == "prerouting" {
		return "dstnat"
	}
	return "-100" // nft 1.0.6 knows the name dstnat only for prerouting
}

func (m *RoutingMesh) nft(ctx context.Context, script string) error {
	return nsExec(m.NetNS).nft(ctx, script)
}

func (m *RoutingMesh) sysctl(ctx context.Context, key, value string) error {
	return nsExec(m.NetNS).sysctl(ctx, key, value)
}

func (m *RoutingMesh) logger() *slog.Logger {
	if m.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return m.Logger
}
