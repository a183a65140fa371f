package netmesh

import (
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Defaults for Overlay fields left zero.
const (
	DefaultVXLANPort   = 4789
	DefaultUnderlayMTU = 1500
	// VXLANOverhead is what VXLAN adds to each packet (outer IP, UDP,
	// VXLAN and Ethernet headers).
	VXLANOverhead = 50
)

// OverlayNetwork is one overlay network on a node.
type OverlayNetwork struct {
	ID     string
	VNI    uint32
	Subnet netip.Prefix
	// Encrypted networks carry their traffic in WireGuard between nodes
	// instead of VXLAN (see SetPeerKeys).
	Encrypted bool
	// WireGuardPort is an encrypted network's UDP port on every node; 0
	// means 51820 + VNI%1000. Managers should hand out distinct ports.
	WireGuardPort int
}

// RemoteEndpoint is a task address on a network and the underlay address of
// the node that runs it.
type RemoteEndpoint struct {
	Addr netip.Addr
	Host netip.Addr
}

// Overlay makes a node's side of overlay networks: per network a bridge and
// a VXLAN device (one VNI per network, learning off, proxy ARP), with the
// other nodes' endpoints programmed as static forwarding and neighbour
// entries (no multicast, no flooding). Tasks are attached by veth. All calls
// are idempotent, so a restarted agent can apply the desired state again.
type Overlay struct {
	// NetNS is the path of the node's network namespace; empty means the
	// namespace of the calling process.
	NetNS string
	// LocalAddr is this node's underlay address (the VXLAN source).
	LocalAddr netip.Addr
	// Port is the VXLAN UDP port; 0 means 4789.
	Port int
	// UnderlayMTU is the MTU of the underlay; overlay links get 50 less.
	UnderlayMTU int
	// WireGuard chooses the backend of encrypted networks: "kernel",
	// "userspace" (wireguard-go over TUN), or empty to use the kernel
	// module where the kernel has it.
	WireGuard string
	// WireGuardKey is this node's private key for encrypted networks; zero
	// means a new one is made at Start. PublicKey tells the public key.
	WireGuardKey WireGuardKey
	// Logger receives the overlay's logs; nil discards.
	Logger *slog.Logger

	mu        sync.RWMutex // Attach and Detach take the read lock: tasks are wired at once
	h         *netlink.Handle
	ns        netns.NsHandle
	wgBackend string
	esp       bool
	wgKey     WireGuardKey
	peerKeys  map[netip.Addr]WireGuardKey
	enc       map[uint32]*encNet
}

// ErrNotStarted is returned by an Overlay used before Start.
var ErrNotStarted = errors.New("netmesh: not started")

// Start opens the node's namespace.
func (o *Overlay) Start() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.h != nil {
		return nil
	}
	if !o.LocalAddr.Is4() {
		return fmt.Errorf("netmesh: overlay: LocalAddr %v must be an IPv4 underlay address", o.LocalAddr)
	}
	ns, err := openNS(o.NetNS)
	if err != nil {
		return err
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return fmt.Errorf("netmesh: netlink in %s: %w", o.NetNS, err)
	}
	o.h, o.ns = h, ns
	o.wgKey = o.WireGuardKey
	if o.wgKey.IsZero() {
		if o.wgKey, err = GenerateWireGuardKey(); err != nil {
			return err
		}
	}
	o.wgBackend = o.probeWireGuard()
	esp, espErr := o.probeESP()
	o.esp = esp
	o.logger().Info("overlay started", "netns", o.NetNS, "wireguard", o.wgBackend, "kernel_esp", esp, "esp_probe", espErr)
	return nil
}

// Close releases the namespace; the devices stay.
func (o *Overlay) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.h == nil {
		return fmt.Errorf("netmesh: overlay: %w", net.ErrClosed)
	}
	// Userspace tunnels live in this process; their devices go with them.
	for vni, en := range o.enc {
		en.tunnel.close()
		delete(o.enc, vni)
	}
	o.h.Close()
	o.h = nil
	return o.ns.Close()
}

func openNS(path string) (netns.NsHandle, error) {
	if path == "" {
		return netns.Get()
	}
	return netns.GetFromPath(path)
}

func (o *Overlay) port() int {
	if o.Port == 0 {
		return DefaultVXLANPort
	}
	return o.Port
}

// MTU is the MTU of overlay links.
func (o *Overlay) MTU() int {
	m := o.UnderlayMTU
	if m == 0 {
		m = DefaultUnderlayMTU
	}
	return m - VXLANOverhead
}

func bridgeName(vni uint32) string { return fmt.Sprintf("sbr%d", vni) }
func vxlanName(vni uint32) string  { return fmt.Sprintf("svx%d", vni) }

// MACFor is the MAC address of a task address: 02:42 and the IPv4 address,
// as Docker does, so peers need to learn only addresses.
func MACFor(a netip.Addr) net.HardwareAddr {
	b := a.As4()
	return net.HardwareAddr{0x02, 0x42, b[0], b[1], b[2], b[3]}
}

// EnsureNetwork makes (or keeps) the network's bridge and VXLAN device.
func (o *Overlay) EnsureNetwork(n OverlayNetwork) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.h == nil {
		return ErrNotStarted
	}
	if err := n.validate(); err != nil {
		return err
	}
	br, err := o.h.LinkByName(bridgeName(n.VNI))
	if err != nil {
		br = &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridgeName(n.VNI), MTU: o.mtuFor(n)}}
		if err := o.h.LinkAdd(br); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("netmesh: bridge for %s: %w", n.ID, err)
		}
		if br, err = o.h.LinkByName(bridgeName(n.VNI)); err != nil {
			return err
		}
	}
	if n.Encrypted {
		if err := o.h.LinkSetUp(br); err != nil {
			return err
		}
		return o.ensureEncrypted(n, br)
	}
	vx, err := o.h.LinkByName(vxlanName(n.VNI))
	if err == nil && !o.vxlanAsWanted(vx, n, br) {
		// Left with other settings (by an older agent, or before this
		// node's address or port changed): a device that learns from the
		// wire or sends from the wrong address must not stay. Its
		// forwarding entries go with it; SetEndpoints puts them back.
		o.logger().Info("netmesh: replacing a VXLAN device with other settings", "device", vxlanName(n.VNI))
		if err := o.h.LinkDel(vx); err != nil {
			return fmt.Errorf("netmesh: vxlan for %s (VNI %d): remove the one with other settings: %w", n.ID, n.VNI, err)
		}
		err = unix.ENODEV
	}
	if err != nil {
		vx = &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: vxlanName(n.VNI), MTU: o.MTU(), MasterIndex: br.Attrs().Index},
			VxlanId: int(n.VNI), SrcAddr: o.LocalAddr.AsSlice(), Port: o.port(), Learning: false, Proxy: true, L2miss: false, L3miss: false}
		if err := o.h.LinkAdd(vx); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("netmesh: vxlan for %s (VNI %d): %w", n.ID, n.VNI, err)
		}
		if vx, err = o.h.LinkByName(vxlanName(n.VNI)); err != nil {
			return err
		}
	}
	for _, l := range []netlink.Link{br, vx} {
		if err := o.h.LinkSetUp(l); err != nil {
			return err
		}
	}
	return nil
}

// vxlanAsWanted reports whether an existing VXLAN device is the one
// EnsureNetwork would make for n.
func (o *Overlay) vxlanAsWanted(l netlink.Link, n OverlayNetwork, br netlink.Link) bool {
	vx, ok := l.(*netlink.Vxlan)
	return ok && vx.VxlanId == int(n.VNI) && vx.SrcAddr.Equal(o.LocalAddr.AsSlice()) && vx.Port == o.port() &&
		len(vx.Group) == 0 && !vx.Learning && vx.Proxy && !vx.L2miss && !vx.L3miss &&
		vx.MTU == o.MTU() && vx.MasterIndex == br.Attrs().Index
}

func (n OverlayNetwork) validate() error {
	if n.VNI == 0 || n.VNI > 1<<24-1 {
		return fmt.Errorf("netmesh: network %s: VNI %d outside 1..16777215", n.ID, n.VNI)
	}
	if !n.Subnet.IsValid() || !n.Subnet.Addr().Is4() || n.Subnet.Bits() > 30 {
		return fmt.Errorf("netmesh: network %s: subnet %s: want an IPv4 subnet of /30 or larger", n.ID, n.Subnet)
	}
	if n.WireGuardPort < 0 || n.WireGuardPort > 65535 {
		return fmt.Errorf("netmesh: network %s: WireGuard port %d outside 0..65535", n.ID, n.WireGuardPort)
	}
	return nil
}

// RemoveNetwork deletes the network's devices (and with them every entry).
func (o *Overlay) RemoveNetwork(n OverlayNetwork) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.h == nil {
		return ErrNotStarted
	}
	errs := []error{o.removeEncrypted(n.VNI)}
	for _, name := range []string{vxlanName(n.VNI), bridgeName(n.VNI)} {
		if l, err := o.h.LinkByName(name); err == nil {
			errs = append(errs, o.h.LinkDel(l))
		}
	}
	return errors.Join(errs...)
}

// SetEndpoints makes the network's forwarding and neighbour entries match
// the endpoints on other nodes: stale entries go, new ones come. Endpoints
// on this node are skipped (the bridge reaches them).
func (o *Overlay) SetEndpoints(n OverlayNetwork, eps []RemoteEndpoint) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.h == nil {
		return ErrNotStarted
	}
	if err := n.validate(); err != nil {
		return err
	}
	want := map[netip.Addr]netip.Addr{}
	for _, ep := range eps {
		if !ep.Host.Is4() {
			return fmt.Errorf("netmesh: endpoint %s of %s: node address %v is not an IPv4 address", ep.Addr, n.ID, ep.Host)
		}
		if ep.Host != o.LocalAddr && n.Subnet.Contains(ep.Addr) {
			want[ep.Addr] = ep.Host
		}
	}
	if n.Encrypted {
		return o.setEncryptedEndpoints(n, want)
	}
	vx, err := o.h.LinkByName(vxlanName(n.VNI))
	if err != nil {
		return fmt.Errorf("netmesh: network %s not set up on this node: %w", n.ID, err)
	}
	idx := vx.Attrs().Index
	// Neighbour (ARP) entries: task address -> MAC.
	neighs, err := o.h.NeighList(idx, unix.AF_INET)
	if err != nil {
		return err
	}
	have := map[netip.Addr]bool{}
	for _, nb := range neighs {
		a, _ := netip.AddrFromSlice(nb.IP.To4())
		if _, ok := want[a]; !ok {
			o.h.NeighDel(&nb)
			continue
		}
		have[a] = true
	}
	// Forwarding entries: MAC -> remote node.
	fdb, err := o.h.NeighList(idx, unix.AF_BRIDGE)
	if err != nil {
		return err
	}
	haveFDB := map[string]netip.Addr{}
	for _, e := range fdb {
		if e.HardwareAddr == nil || e.IP == nil {
			continue
		}
		dst, _ := netip.AddrFromSlice(e.IP.To4())
		haveFDB[e.HardwareAddr.String()] = dst
	}
	wantFDB := map[string]bool{}
	for a, host := range want {
		mac := MACFor(a)
		wantFDB[mac.String()] = true
		if !have[a] {
			if err := o.h.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_INET, State: netlink.NUD_PERMANENT, IP: a.AsSlice(), HardwareAddr: mac}); err != nil {
				return fmt.Errorf("netmesh: neighbour %s: %w", a, err)
			}
		}
		if haveFDB[mac.String()] != host {
			if err := o.h.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT,
				IP: host.AsSlice(), HardwareAddr: mac}); err != nil {
				return fmt.Errorf("netmesh: forwarding entry %s via %s: %w", a, host, err)
			}
		}
	}
	for _, e := range fdb {
		if e.HardwareAddr != nil && e.IP != nil && !wantFDB[e.HardwareAddr.String()] && e.HardwareAddr[0] == 0x02 && e.HardwareAddr[1] == 0x42 {
			o.h.NeighDel(&e)
		}
	}
	return nil
}

// Attach connects a task's network namespace (by path) to the network: a
// veth with one end on the bridge, the other in the task's namespace named
// ifName with address addr and the network's MTU.
func (o *Overlay) Attach(n OverlayNetwork, taskNS, ifName string, addr netip.Addr) error {
	o.mu.RLock()
	defer o.mu.RUnlock()
	if o.h == nil {
		return ErrNotStarted
	}
	if err := n.validate(); err != nil {
		return err
	}
	if !n.Subnet.Contains(addr) {
		return fmt.Errorf("netmesh: %s is not in %s's subnet %s", addr, n.ID, n.Subnet)
	}
	br, err := o.h.LinkByName(bridgeName(n.VNI))
	if err != nil {
		return fmt.Errorf("netmesh: network %s not set up on this node: %w", n.ID, err)
	}
	host := hostVethName(n.ID, taskNS)
	return attachTaskVeth(o.h, taskNS, taskVeth{host: host, master: br.Attrs().Index, ifName: ifName, mtu: o.mtuFor(n), mac: MACFor(addr),
		addr: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(n.Subnet.Bits(), 32)}}, nil)
}

// Detach removes a task's link to the network.
func (o *Overlay) Detach(n OverlayNetwork, taskNS string) error {
	o.mu.RLock()
	defer o.mu.RUnlock()
	if o.h == nil {
		return ErrNotStarted
	}
	host := hostVethName(n.ID, taskNS)
	if l, err := o.h.LinkByName(host); err == nil {
		return o.h.LinkDel(l)
	}
	return nil
}

// hostVethName names the node's end of a task's veth: short (15 bytes at
// most) and stable for a task and network.
func hostVethName(networkID, taskNS string) string {
	return fmt.Sprintf("sve%08x", crc32.ChecksumIEEE([]byte(networkID+"\x00"+taskNS)))
}

// SetNodeAddr gives this node an address on the network (on its bridge), so
// the node itself can reach the network's tasks: the routing mesh forwards
// published ports to tasks on other nodes over the ingress network this way.
func (o *Overlay) SetNodeAddr(n OverlayNetwork, addr netip.Addr) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.h == nil {
		return ErrNotStarted
	}
	if !n.Subnet.Contains(addr) {
		return fmt.Errorf("netmesh: %s is not in %s's subnet %s", addr, n.ID, n.Subnet)
	}
	br, err := o.h.LinkByName(bridgeName(n.VNI))
	if err != nil {
		return fmt.Errorf("netmesh: network %s not set up on this node: %w", n.ID, err)
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(n.Subnet.Bits(), 32)}}
	if err := o.h.AddrReplace(br, a); err != nil {
		return fmt.Errorf("netmesh: address %s on %s: %w", addr, n.ID, err)
	}
	// The node answers ARP for its own address itself, with the MAC other
	// nodes expect from MACFor.
	return o.h.LinkSetHardwareAddr(br, MACFor(addr))
}

// RemoveStale deletes the devices of every overlay network on this node
// that is not in keep: what an earlier agent made for networks that are gone
// (after a crash, say). Task links go with their task's namespace.
func (o *Overlay) RemoveStale(keep []OverlayNetwork) (removed []string, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.h == nil {
		return nil, ErrNotStarted
	}
	want := map[string]bool{}
	for _, n := range keep {
		want[bridgeName(n.VNI)], want[vxlanName(n.VNI)] = true, true
		if n.Encrypted {
			want[wgName(n.VNI)] = true
		}
	}
	var errs []error
	for vni := range o.enc {
		if !want[wgName(vni)] {
			errs = append(errs, o.removeEncrypted(vni))
		}
	}
	errs = append(errs, o.removeEncTables(func(vni uint32) bool { return !want[wgName(vni)] }))
	links, err := o.h.LinkList()
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		name := l.Attrs().Name
		var vni uint32
		ours := false
		for _, f := range []string{"sbr%d", "svx%d", "swg%d"} {
			if n, _ := fmt.Sscanf(name, f, &vni); n == 1 && fmt.Sprintf(f, vni) == name {
				ours = true
			}
		}
		if ours && !want[name] {
			if err := o.h.LinkDel(l); err != nil {
				errs = append(errs, err)
				continue
			}
			removed = append(removed, name)
		}
	}
	return removed, errors.Join(errs...)
}
