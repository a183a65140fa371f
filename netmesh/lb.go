package netmesh

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
)

// VIPService is a service's virtual IP on one network, balanced over its
// healthy backends.
type VIPService struct {
	ServiceID string
	VIP       netip.Addr
	Protocol  Protocol
	// Port 0 balances every port of Protocol, as Docker's VIPs do: a
	// connection to any port of the VIP goes to the same port of the
	// chosen backend (whose Port is 0 then). A VIP with a port of its own
	// takes precedence over the VIP's every-port entry.
	Port uint16
	// Backends are the healthy tasks; with none that is not Draining, new
	// connections are refused.
	Backends []Backend
}

// ServiceLB balances a task's connections to service VIPs over the
// services' healthy backends, inside the task's network namespace (nftables:
// a verdict map keyed on VIP, protocol and port; a chain per service with
// `numgen random`). Nothing is masqueraded: backends see the task's own
// address. Changes touch only their service, in one nft transaction.
// Services of every port (Port 0) have a second verdict map, keyed on VIP
// and protocol, consulted after the first.
type ServiceLB struct {
	// NetNS is the path of the task's network namespace.
	NetNS string
	// Table is the nftables table's name; empty means "shoal-lb".
	Table string
	// Logger receives logs; nil discards.
	Logger *slog.Logger

	mu      sync.Mutex
	vips    map[string][]Backend
	left    unflushed
	started bool
	fast    *fastPath
}

func (l *ServiceLB) table() string {
	if l.Table == "" {
		return "shoal-lb"
	}
	return l.Table
}

// Start installs an empty table in the task's namespace.
func (l *ServiceLB) Start(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.started {
		return nil
	}
	script := baseScript(l.table(), "ipv4_addr . inet_proto . inet_service", "ip daddr . meta l4proto . th dport", []string{"output"}, "")
	script += fmt.Sprintf("add map ip %[1]s %[2]s { type ipv4_addr . inet_proto : verdict; }\nadd rule ip %[1]s output ip daddr . meta l4proto vmap @%[2]s\n", l.table(), anyPortMap)
	if err := nsExec(l.NetNS).nft(ctx, script); err != nil {
		return err
	}
	fast, err := newFastPath(l.NetNS, l.table())
	if err != nil {
		return err
	}
	l.fast = fast
	l.vips = map[string][]Backend{}
	l.left = unflushed{}
	l.started = true
	return nil
}

// anyPortMap is the verdict map of VIP services of every port.
const anyPortMap = "anyport"

// vipMapKey is a VIP service's verdict map and key in it.
func vipMapKey(vip netip.Addr, p Protocol, port uint16) (string, []byte) {
	if port == 0 {
		a := vip.As4()
		return anyPortMap, append(a[:], protoNumber(p), 0, 0, 0)
	}
	return "published", vipKeyBytes(vip, p, port)
}

func vipKey(vip netip.Addr, p Protocol, port uint16) string {
	return fmt.Sprintf("%s . %s . %d", vip, p, port)
}

func vipChain(vip netip.Addr, p Protocol, port uint16) string {
	b := vip.As4()
	return fmt.Sprintf("vip-%d-%d-%d-%d-%s-%d", b[0], b[1], b[2], b[3], p, port)
}

// Set adds or replaces a VIP service. As RoutingMesh.Set: when it
// returns, new connections go only to the backends given and not Draining;
// connections tracked to backends left out are then deleted, those of
// Draining ones kept.
func (l *ServiceLB) Set(ctx context.Context, s VIPService) error {
	if !s.VIP.Is4() || (s.Protocol != TCP && s.Protocol != UDP) {
		return fmt.Errorf("netmesh: VIP service %s: want an IPv4 VIP and tcp or udp", s.ServiceID)
	}
	for _, b := range s.Backends {
		err := b.validate()
		if s.Port == 0 {
			// Every port: the backend keeps the connection's port.
			err = b.withPort(1).validate()
			if err == nil && b.Port != 0 {
				err = fmt.Errorf("backend %v:%d of a VIP of every port must have port 0 (the connection's port is kept)", b.Addr, b.Port)
			}
		}
		if err != nil {
			return fmt.Errorf("netmesh: VIP service %s: %w", s.ServiceID, err)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.started {
		return ErrNotStarted
	}
	k := vipKey(s.VIP, s.Protocol, s.Port)
	prev, had := l.vips[k]
	vmap, key := vipMapKey(s.VIP, s.Protocol, s.Port)
	if err := l.fast.setService(vmap, vipChain(s.VIP, s.Protocol, s.Port), key, !had, s.Protocol, active(s.Backends), false); err != nil {
		return err
	}
	l.vips[k] = append([]Backend(nil), s.Backends...)
	return l.left.flush(l.logger(), fmt.Sprintf("VIP %s port %d/%s", s.VIP, s.Port, s.Protocol), k, l.NetNS, s.Protocol, s.Port, s.VIP,
		removedBackends(prev, s.Backends), s.Backends, nil)
}

// Remove forgets a VIP service.
func (l *ServiceLB) Remove(ctx context.Context, vip netip.Addr, p Protocol, port uint16) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.started {
		return ErrNotStarted
	}
	k := vipKey(vip, p, port)
	prev, had := l.vips[k]
	if had {
		vmap, key := vipMapKey(vip, p, port)
		if err := l.fast.removeService(vmap, vipChain(vip, p, port), key); err != nil {
			return err
		}
		delete(l.vips, k)
	}
	// Gone already: what a failed flush of the removal left is flushed
	// again (the caller retries a Remove that failed).
	return l.left.flush(l.logger(), fmt.Sprintf("VIP %s port %d/%s (removed)", vip, port, p), k, l.NetNS, p, port, vip, prev, nil, nil)
}

// Close deletes the table.
func (l *ServiceLB) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.started {
		return nil
	}
	l.started = false
	if l.fast != nil {
		l.fast.close()
		l.fast = nil
	}
	return nsExec(l.NetNS).nft(context.Background(), fmt.Sprintf("delete table ip %s\n", l.table()))
}

func (l *ServiceLB) logger() *slog.Logger {
	if l.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l.Logger
}
