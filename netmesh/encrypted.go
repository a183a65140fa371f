package netmesh

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// encNet is an encrypted network's WireGuard side on this node.
type encNet struct {
	vni    uint32
	tunnel wgTunnel
	port   int
	// remote is the desired task address -> node address, from SetEndpoints.
	remote map[netip.Addr]netip.Addr
	// applied is what the tunnel holds, by node address.
	applied map[netip.Addr]wgPeer
}

func wgName(vni uint32) string { return fmt.Sprintf("swg%d", vni) }

// Routing tables of encrypted networks: one per network, in a range of
// their own so RemoveStale recognises them.
const (
	encTableBase = 0x53000000
	encRulePrio  = 1000
)

func encTable(vni uint32) int { return encTableBase + int(vni) }

func (n OverlayNetwork) wireGuardPort() int {
	if n.WireGuardPort != 0 {
		return n.WireGuardPort
	}
	return DefaultWireGuardPort + int(n.VNI%1000)
}

// mtuFor is the MTU of a network's links: the underlay's less the tunnel's
// overhead.
func (o *Overlay) mtuFor(n OverlayNetwork) int {
	if n.Encrypted {
		return o.underlayMTU() - WireGuardOverhead
	}
	return o.MTU()
}

func (o *Overlay) underlayMTU() int {
	if o.UnderlayMTU == 0 {
		return DefaultUnderlayMTU
	}
	return o.UnderlayMTU
}

// WireGuardBackend is the WireGuard implementation encrypted networks use on
// this node: "kernel" or "userspace" (wireguard-go over TUN).
func (o *Overlay) WireGuardBackend() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.wgBackend
}

// ESPAvailable reports whether the kernel could carry IPsec ESP (a test
// state was accepted at Start). Encrypted networks use WireGuard either way;
// this is reported so operators know whether ESP would be an option.
func (o *Overlay) ESPAvailable() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.esp
}

// PublicKey is this node's current WireGuard public key, for the managers to
// hand to the other nodes.
func (o *Overlay) PublicKey() WireGuardKey {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.wgKey.PublicKey()
}

// RotateKey replaces this node's WireGuard key on every encrypted network
// and returns the new public key, which the other nodes must get through
// SetPeerKeys. Established connections survive: tunnels hand over to new
// sessions as soon as the peers know the key, and TCP resends the packets
// of the gap.
func (o *Overlay) RotateKey() (WireGuardKey, error) {
	k, err := GenerateWireGuardKey()
	if err != nil {
		return WireGuardKey{}, err
	}
	return o.SetKey(k)
}

// SetKey is RotateKey with a private key the caller made (and keeps: on
// disk, so that a restarted agent has the key the other nodes know). It
// returns the public key.
func (o *Overlay) SetKey(k WireGuardKey) (WireGuardKey, error) {
	if k.IsZero() {
		return WireGuardKey{}, errors.New("netmesh: SetKey: zero key")
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.h == nil {
		return WireGuardKey{}, ErrNotStarted
	}
	var errs []error
	for vni, en := range o.enc {
		if err := en.tunnel.setPrivateKey(k); err != nil {
			errs = append(errs, fmt.Errorf("netmesh: new key on %s: %w", wgName(vni), err))
		}
	}
	o.wgKey = k
	return k.PublicKey(), errors.Join(errs...)
}

// SetPeerKeys sets the other nodes' WireGuard public keys, by underlay
// address, and reprograms the encrypted networks' tunnels to match.
func (o *Overlay) SetPeerKeys(keys map[netip.Addr]WireGuardKey) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.h == nil {
		return ErrNotStarted
	}
	o.peerKeys = maps.Clone(keys)
	var errs []error
	for vni, en := range o.enc {
		if err := o.applyPeers(en); err != nil && !errors.Is(err, ErrNoPeerKey) {
			errs = append(errs, fmt.Errorf("netmesh: %s: %w", wgName(vni), err))
		}
	}
	return errors.Join(errs...)
}

// ensureEncrypted makes an encrypted network's WireGuard device, policy
// rules and routing table. Traffic from the bridge and from the tunnel is
// routed in the network's own table: remote task addresses through the
// tunnel, the subnet onto the bridge, nothing else. The bridge answers ARP
// for remote tasks (proxy ARP), so tasks see one flat subnet as on a VXLAN
// network.
func (o *Overlay) ensureEncrypted(n OverlayNetwork, br netlink.Link) error {
	if o.enc == nil {
		o.enc = map[uint32]*encNet{}
	}
	name, mtu := wgName(n.VNI), o.mtuFor(n)
	brName := bridgeName(n.VNI)
	if err := o.inNS(func() error {
		for key, value := range map[string]string{
			"ipv4/ip_forward":                    "1",
			"ipv4/conf/" + brName + "/proxy_arp": "1",
			// Proxy ARP replies to broadcasts are delayed up to 0.8 s by
			// default; tasks would wait that long for every new peer.
			"ipv4/neigh/" + brName + "/proxy_delay": "0",
		} {
			if err := os.WriteFile("/proc/sys/net/"+key, []byte(value), 0o644); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("netmesh: sysctl for %s: %w", n.ID, err)
	}
	en := o.enc[n.VNI]
	if en != nil && en.port != n.wireGuardPort() {
		en.tunnel.close()
		delete(o.enc, n.VNI)
		en = nil
	}
	if en == nil {
		// A kernel device left by an earlier agent would hold the port.
		if l, err := o.h.LinkByName(name); err == nil {
			o.h.LinkDel(l)
		}
		t, err := o.newTunnel(name, mtu, n.wireGuardPort(), o.wgKey)
		if err != nil {
			return fmt.Errorf("netmesh: encrypted network %s (%s WireGuard): %w", n.ID, o.wgBackend, err)
		}
		en = &encNet{vni: n.VNI, tunnel: t, port: n.wireGuardPort(), applied: map[netip.Addr]wgPeer{}}
		o.enc[n.VNI] = en
		o.logger().Info("encrypted network", "network", n.ID, "device", name, "wireguard", o.wgBackend, "port", en.port)
	}
	wg, err := o.h.LinkByName(name)
	if err != nil {
		return err
	}
	if err := o.h.LinkSetUp(wg); err != nil {
		return err
	}
	table := encTable(n.VNI)
	rules, err := o.h.RuleList(unix.AF_INET)
	if err != nil {
		return err
	}
	for _, iif := range []string{brName, name} {
		if slices.ContainsFunc(rules, func(r netlink.Rule) bool { return r.Table == table && r.IifName == iif }) {
			continue
		}
		r := netlink.NewRule()
		r.Family, r.Table, r.IifName, r.Priority = unix.AF_INET, table, iif, encRulePrio
		if err := o.h.RuleAdd(r); err != nil {
			return fmt.Errorf("netmesh: policy rule for %s: %w", iif, err)
		}
	}
	subnet := &net.IPNet{IP: n.Subnet.Masked().Addr().AsSlice(), Mask: net.CIDRMask(n.Subnet.Bits(), 32)}
	for _, r := range []*netlink.Route{
		{Dst: subnet, LinkIndex: br.Attrs().Index, Table: table, Scope: netlink.SCOPE_LINK},
		{Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, Table: table, Type: unix.RTN_UNREACHABLE},
	} {
		if err := o.h.RouteReplace(r); err != nil {
			return fmt.Errorf("netmesh: route %v in table %d: %w", r.Dst, table, err)
		}
	}
	return o.applyPeers(en)
}

// setEncryptedEndpoints records the remote endpoints of an encrypted network
// and applies them.
func (o *Overlay) setEncryptedEndpoints(n OverlayNetwork, want map[netip.Addr]netip.Addr) error {
	en := o.enc[n.VNI]
	if en == nil {
		return fmt.Errorf("netmesh: encrypted network %s not set up on this node", n.ID)
	}
	en.remote = want
	return o.applyPeers(en)
}

// applyPeers makes the tunnel's peers and the routing table's task routes
// match en.remote. Only peers that change are touched, so established
// sessions stay.
func (o *Overlay) applyPeers(en *encNet) error {
	vni := en.vni
	byHost := map[netip.Addr][]netip.Prefix{}
	for a, host := range en.remote {
		byHost[host] = append(byHost[host], netip.PrefixFrom(a, 32))
	}
	var missing []netip.Addr
	want := map[netip.Addr]wgPeer{}
	for host, prefixes := range byHost {
		key, ok := o.peerKeys[host]
		if !ok {
			missing = append(missing, host)
			continue
		}
		slices.SortFunc(prefixes, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
		want[host] = wgPeer{Key: key, Endpoint: netip.AddrPortFrom(host, uint16(en.port)), AllowedIPs: prefixes}
	}
	var remove []WireGuardKey
	var set []wgPeer
	for host, p := range en.applied {
		if w, ok := want[host]; !ok || w.Key != p.Key {
			remove = append(remove, p.Key)
		}
	}
	for host, p := range want {
		if old, ok := en.applied[host]; !ok || !old.equal(p) {
			set = append(set, p)
		}
	}
	if err := en.tunnel.update(remove, set); err != nil {
		return fmt.Errorf("netmesh: WireGuard peers of %s: %w", wgName(vni), err)
	}
	en.applied = want

	// Routes: a /32 per reachable remote task, through the tunnel.
	wg, err := o.h.LinkByName(wgName(vni))
	if err != nil {
		return err
	}
	table := encTable(vni)
	routes, err := o.h.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: table, LinkIndex: wg.Attrs().Index},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_OIF)
	if err != nil {
		return err
	}
	have := map[netip.Addr]bool{}
	for _, r := range routes {
		a, _ := netip.AddrFromSlice(r.Dst.IP.To4())
		if host, ok := en.remote[a]; ok && want[host].Key != (WireGuardKey{}) {
			have[a] = true
			continue
		}
		o.h.RouteDel(&r)
	}
	for a, host := range en.remote {
		if _, ok := want[host]; !ok || have[a] {
			continue
		}
		r := &netlink.Route{Dst: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)}, LinkIndex: wg.Attrs().Index, Table: table, Scope: netlink.SCOPE_LINK}
		if err := o.h.RouteReplace(r); err != nil {
			return fmt.Errorf("netmesh: route to %s: %w", a, err)
		}
	}
	if len(missing) > 0 {
		slices.SortFunc(missing, netip.Addr.Compare)
		return fmt.Errorf("%w: %v (their endpoints stay unreachable until SetPeerKeys has them)", ErrNoPeerKey, missing)
	}
	return nil
}

// removeEncrypted deletes an encrypted network's tunnel, rules and table.
func (o *Overlay) removeEncrypted(vni uint32) error {
	var errs []error
	if en := o.enc[vni]; en != nil {
		errs = append(errs, en.tunnel.close())
		delete(o.enc, vni)
	}
	if l, err := o.h.LinkByName(wgName(vni)); err == nil {
		errs = append(errs, o.h.LinkDel(l))
	}
	errs = append(errs, o.removeEncTables(func(v uint32) bool { return v == vni }))
	return errors.Join(errs...)
}

// removeEncTables deletes the rules and routes of the encrypted networks'
// tables whose VNI matches.
func (o *Overlay) removeEncTables(match func(vni uint32) bool) error {
	rules, err := o.h.RuleList(unix.AF_INET)
	if err != nil {
		return err
	}
	var errs []error
	tables := map[int]bool{}
	for _, r := range rules {
		if r.Table >= encTableBase && r.Table < encTableBase+1<<24 && match(uint32(r.Table-encTableBase)) {
			errs = append(errs, o.h.RuleDel(&r))
			tables[r.Table] = true
		}
	}
	for t := range tables {
		routes, err := o.h.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: t}, netlink.RT_FILTER_TABLE)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, r := range routes {
			errs = append(errs, o.h.RouteDel(&r))
		}
	}
	return errors.Join(errs...)
}
