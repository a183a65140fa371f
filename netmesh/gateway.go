package netmesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Gateway defaults.
const (
	DefaultGatewayBridge = "shoal_gwbridge"
	gatewayTable         = "shoal-gw"
)

// DefaultGatewaySubnet is the gateway network's subnet when none is given,
// as Docker's docker_gwbridge.
var DefaultGatewaySubnet = netip.MustParsePrefix("172.18.0.0/16")

// Gateway is a node's gateway network, as Docker's docker_gwbridge: a bridge
// with a private subnet through which tasks reach what is outside their
// overlay networks, the node and the world, masqueraded to the node's
// address. Tasks cannot reach each other through it (its ports are
// isolated), nor the overlay networks through the node. A task's default
// route goes through it, so replies to host-mode published ports leave this
// way too.
type Gateway struct {
	// NetNS is the path of the node's network namespace; empty means the
	// caller's.
	NetNS string
	// Subnet is the gateway network's subnet; zero means 172.18.0.0/16.
	// The node takes its first address.
	Subnet netip.Prefix
	// Bridge is the bridge's name; empty means "shoal_gwbridge".
	Bridge string
	// Logger receives the gateway's logs; nil discards.
	Logger *slog.Logger

	// mu guards h: Attach and Detach share it (each netlink request
	// locks its socket) under the read lock, so tasks are wired at once.
	mu sync.RWMutex
	h  *netlink.Handle
}

func (g *Gateway) subnet() netip.Prefix {
	if !g.Subnet.IsValid() {
		return DefaultGatewaySubnet
	}
	return g.Subnet.Masked()
}

func (g *Gateway) bridge() string {
	if g.Bridge == "" {
		return DefaultGatewayBridge
	}
	return g.Bridge
}

// Addr is the node's address on the gateway network: the tasks' default
// gateway.
func (g *Gateway) Addr() netip.Addr { return g.subnet().Addr().Next() }

// Start makes (or keeps) the bridge and installs the masquerading and
// isolation rules, replacing what an earlier agent left.
func (g *Gateway) Start(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.h != nil {
		return nil
	}
	sn := g.subnet()
	if !sn.Addr().Is4() || sn.Bits() > 30 {
		return fmt.Errorf("netmesh: gateway subnet %s: want an IPv4 subnet of /30 or larger", sn)
	}
	if _, err := exec.LookPath("nft"); err != nil {
		return errors.New("netmesh: the gateway network needs the nft program (apt-get install nftables)")
	}
	ns, err := openNS(g.NetNS)
	if err != nil {
		return err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	fail := func(err error) error { h.Close(); return fmt.Errorf("netmesh: gateway network: %w", err) }
	br, err := h.LinkByName(g.bridge())
	if err != nil {
		if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: g.bridge()}}); err != nil && !errors.Is(err, unix.EEXIST) {
			return fail(err)
		}
		if br, err = h.LinkByName(g.bridge()); err != nil {
			return fail(err)
		}
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: g.Addr().AsSlice(), Mask: net.CIDRMask(sn.Bits(), 32)}}
	if err := h.AddrReplace(br, addr); err != nil {
		return fail(err)
	}
	if err := h.LinkSetUp(br); err != nil {
		return fail(err)
	}
	x := nsExec(g.NetNS)
	if err := x.sysctl(ctx, "net.ipv4.ip_forward", "1"); err != nil {
		return fail(err)
	}
	// Bridged frames must not meet the IP hooks (where br_netfilter is
	// loaded it defaults to on in new namespaces); absent, nothing to do.
	x.sysctl(ctx, "net.bridge.bridge-nf-call-iptables", "0")
	if err := x.nft(ctx, gatewayScript(g.bridge(), sn)); err != nil {
		return fail(err)
	}
	g.h = h
	g.logger().Info("gateway network", "bridge", g.bridge(), "subnet", sn)
	return nil
}

// gatewayScript replaces the gateway's table: traffic from the gateway
// network leaving the node is masqueraded; forwarding from it into overlay
// networks (and back into itself) is dropped.
func gatewayScript(bridge string, subnet netip.Prefix) string {
	return fmt.Sprintf(`table ip %[1]s
delete table ip %[1]s
table ip %[1]s {
	chain forward {
		type filter hook forward priority -10; policy accept;
		iifname "%[2]s" oifname "sbr*" drop
		iifname "%[2]s" oifname "swg*" drop
		iifname "%[2]s" oifname "%[2]s" drop
	}
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr %[3]s oifname != "%[2]s" masquerade
	}
}
`, gatewayTable, bridge, subnet)
}

// Attach connects a task's network namespace to the gateway network: a veth
// named ifName with address addr (from the gateway's subnet, handed out by
// the caller), and the task's default route through the node.
func (g *Gateway) Attach(taskNS, ifName string, addr netip.Addr) error {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.h == nil {
		return ErrNotStarted
	}
	sn := g.subnet()
	if !sn.Contains(addr) || addr == g.Addr() || addr == sn.Addr() {
		return fmt.Errorf("netmesh: %s is not a task address of the gateway subnet %s", addr, sn)
	}
	br, err := g.h.LinkByName(g.bridge())
	if err != nil {
		return fmt.Errorf("netmesh: gateway bridge: %w", err)
	}
	host := hostVethName("\x00gateway", taskNS)
	return attachTaskVeth(g.h, taskNS, taskVeth{host: host, master: br.Attrs().Index, ifName: ifName, isolated: true,
		addr: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(sn.Bits(), 32)}},
		func(th *netlink.Handle, l netlink.Link) error {
			return th.RouteReplace(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: g.Addr().AsSlice(),
				Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}})
		})
}

// Detach removes a task's link to the gateway network.
func (g *Gateway) Detach(taskNS string) error {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.h == nil {
		return ErrNotStarted
	}
	host := hostVethName("\x00gateway", taskNS)
	if l, err := g.h.LinkByName(host); err == nil {
		return g.h.LinkDel(l)
	}
	return nil
}

// Remove deletes the bridge and the rules; tasks still attached lose their
// way out.
func (g *Gateway) Remove(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.h == nil {
		return ErrNotStarted
	}
	var errs []error
	if l, err := g.h.LinkByName(g.bridge()); err == nil {
		errs = append(errs, g.h.LinkDel(l))
	}
	errs = append(errs, nsExec(g.NetNS).nft(ctx, fmt.Sprintf("table ip %[1]s\ndelete table ip %[1]s\n", gatewayTable)))
	return errors.Join(errs...)
}

// Close releases the namespace handle; the bridge and rules stay.
func (g *Gateway) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.h == nil {
		return fmt.Errorf("netmesh: gateway: %w", net.ErrClosed)
	}
	g.h.Close()
	g.h = nil
	return nil
}

func (g *Gateway) logger() *slog.Logger {
	if g.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return g.Logger
}
