package netmesh_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/shoalproject/shoal/internal/nettest"
	"github.com/shoalproject/shoal/netmesh"
)

func echo(t *testing.T, ns, addr string) {
	t.Helper()
	var ln net.Listener
	if err := nettest.Do(ns, func() (err error) { ln, err = net.Listen("tcp", addr); return }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
}

// dial connects from a namespace to an echo server and checks the echo.
// Its timeout outlasts a lost first SYN (resent after 1 s), which happens
// now and then on a lab's first packet between two hosts: reachability
// does not hang on one packet. An address the overlay does not resolve
// fails sooner, with EHOSTUNREACH, in namespaces set up by fastARP.
func dial(ns, addr string) error { return dialWithin(ns, addr, 5*time.Second) }

// dialWithin is dial with a timeout of its own: a bounded attempt, for
// checks where a packet is dropped and nothing comes back.
func dialWithin(ns, addr string, timeout time.Duration) error {
	return nettest.Do(ns, func() error {
		c, err := net.DialTimeout("tcp", addr, timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		_, err = io.ReadFull(c, make([]byte, 4))
		return err
	})
}

// fastARP makes a task namespace give up on an address nobody answers ARP
// for after 3 x 100 ms instead of 3 s, so that a test can observe the
// failure (EHOSTUNREACH) instead of waiting out a timeout.
func fastARP(t *testing.T, ns, link string) {
	t.Helper()
	if out, err := exec.Command("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.neigh."+link+".retrans_time_ms=100").CombinedOutput(); err != nil {
		t.Fatalf("sysctl in %s: %v %s", ns, err, out)
	}
}

// TestOverlayReachabilityIsolationMTU builds two overlay networks over three
// test hosts. Both use the same subnet, so isolation is a property of the
// overlay, not of routing.
func TestOverlayReachabilityIsolationMTU(t *testing.T) {
	lab := nettest.New(t, 3)
	subnet := netip.MustParsePrefix("10.10.1.0/24")
	netA := netmesh.OverlayNetwork{ID: "A", VNI: 4097, Subnet: subnet}
	netB := netmesh.OverlayNetwork{ID: "B", VNI: 4098, Subnet: subnet}
	type task struct {
		ns   string
		host *nettest.Host
		net  netmesh.OverlayNetwork
		addr netip.Addr
	}
	tasks := []*task{
		{host: lab.Hosts[0], net: netA, addr: netip.MustParseAddr("10.10.1.2")},
		{host: lab.Hosts[1], net: netA, addr: netip.MustParseAddr("10.10.1.3")},
		{host: lab.Hosts[2], net: netB, addr: netip.MustParseAddr("10.10.1.4")},
		{host: lab.Hosts[2], net: netA, addr: netip.MustParseAddr("10.10.1.5")},
	}
	overlays := map[*nettest.Host]*netmesh.Overlay{}
	for _, h := range lab.Hosts {
		o := &netmesh.Overlay{NetNS: "/var/run/netns/" + h.Name, LocalAddr: h.Addr}
		if err := o.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { o.Close() })
		overlays[h] = o
	}
	for i, tk := range tasks {
		ns, err := lab.NewNamespace("t" + string(rune('0'+i)))
		if err != nil {
			t.Fatal(err)
		}
		tk.ns = ns
		o := overlays[tk.host]
		if err := o.EnsureNetwork(tk.net); err != nil {
			t.Fatal(err)
		}
		if err := o.Attach(tk.net, "/var/run/netns/"+ns, "eth0", tk.addr); err != nil {
			t.Fatal(err)
		}
		// Attach is idempotent.
		if err := o.Attach(tk.net, "/var/run/netns/"+ns, "eth0", tk.addr); err != nil {
			t.Fatalf("second attach: %v", err)
		}
		fastARP(t, ns, "eth0")
	}
	// Every node learns every endpoint of the networks it takes part in.
	for _, n := range []netmesh.OverlayNetwork{netA, netB} {
		var eps []netmesh.RemoteEndpoint
		for _, tk := range tasks {
			if tk.net.ID == n.ID {
				eps = append(eps, netmesh.RemoteEndpoint{Addr: tk.addr, Host: tk.host.Addr})
			}
		}
		for _, h := range lab.Hosts {
			if err := overlays[h].EnsureNetwork(n); err != nil {
				t.Fatal(err)
			}
			if err := overlays[h].SetEndpoints(n, eps); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tk := range tasks {
		echo(t, tk.ns, tk.addr.String()+":9000")
	}
	a0, a1, b2, a3 := tasks[0], tasks[1], tasks[2], tasks[3]
	for _, pair := range [][2]*task{{a0, a1}, {a1, a0}, {a0, a3}, {a3, a1}} {
		if err := dial(pair[0].ns, pair[1].addr.String()+":9000"); err != nil {
			t.Fatalf("%s -> %s over network A: %v", pair[0].addr, pair[1].addr, err)
		}
	}
	// Another network's address does not even resolve: nothing answers
	// ARP for it on this network.
	if err := dial(a0.ns, b2.addr.String()+":9000"); !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Fatalf("a task on network A dialling one on network B: %v, want no route to host", err)
	}
	if err := dial(b2.ns, a3.addr.String()+":9000"); !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Fatalf("a task on network B dialling one on network A (same host): %v, want no route to host", err)
	}
	// MTU: underlay minus 50.
	if err := nettest.Do(a0.ns, func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if l.Attrs().MTU != 1450 {
			t.Errorf("task MTU %d, want 1450", l.Attrs().MTU)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Removing an endpoint takes it off the other nodes: h0 forgets a1's
	// neighbour and forwarding entries, so a0 can no longer reach it, with
	// its own ARP cache of a1 (which a task keeps for a while) and without.
	if err := overlays[lab.Hosts[0]].SetEndpoints(netA, []netmesh.RemoteEndpoint{{Addr: a3.addr, Host: a3.host.Addr}}); err != nil {
		t.Fatal(err)
	}
	if err := dialWithin(a0.ns, a1.addr.String()+":9000", 700*time.Millisecond); err == nil {
		t.Fatal("reached an endpoint that was removed (a0 still knowing its MAC)")
	}
	if out, err := exec.Command("ip", "-n", a0.ns, "neigh", "flush", "to", a1.addr.String()).CombinedOutput(); err != nil {
		t.Fatalf("flush a0's ARP entry: %v %s", err, out)
	}
	if err := dial(a0.ns, a1.addr.String()+":9000"); !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Fatalf("dialling an endpoint that was removed: %v, want no route to host", err)
	}
	if err := dial(a0.ns, a3.addr.String()+":9000"); err != nil {
		t.Fatalf("kept endpoint unreachable: %v", err)
	}
	// A restarted agent removes what its predecessor made for networks that
	// are gone, and keeps the rest.
	netC := netmesh.OverlayNetwork{ID: "C", VNI: 4099, Subnet: netip.MustParsePrefix("10.10.9.0/24")}
	if err := overlays[lab.Hosts[1]].EnsureNetwork(netC); err != nil {
		t.Fatal(err)
	}
	restarted := &netmesh.Overlay{NetNS: "/var/run/netns/" + lab.Hosts[1].Name, LocalAddr: lab.Hosts[1].Addr}
	if err := restarted.Start(); err != nil {
		t.Fatal(err)
	}
	removed, err := restarted.RemoveStale([]netmesh.OverlayNetwork{netA, netB})
	restarted.Close()
	if err != nil || fmt.Sprint(removed) != "[sbr4099 svx4099]" && fmt.Sprint(removed) != "[svx4099 sbr4099]" {
		t.Fatalf("stale devices removed: %v %v", removed, err)
	}
	if err := dial(a1.ns, a3.addr.String()+":9000"); err != nil {
		t.Fatalf("kept network broken by the cleanup: %v", err)
	}

	// Detach and remove leave nothing behind.
	o := overlays[lab.Hosts[0]]
	if err := o.Detach(netA, "/var/run/netns/"+a0.ns); err != nil {
		t.Fatal(err)
	}
	if err := o.RemoveNetwork(netA); err != nil {
		t.Fatal(err)
	}
	ns, _ := netns.GetFromName(lab.Hosts[0].Name)
	defer ns.Close()
	h, _ := netlink.NewHandleAt(ns)
	defer h.Close()
	links, _ := h.LinkList()
	for _, l := range links {
		if name := l.Attrs().Name; name == "sbr4097" || name == "svx4097" || len(name) == 11 && name[:3] == "sve" {
			t.Fatalf("%s left on the host after detach and remove", name)
		}
	}
}

// TestOverlayDevices checks, through netlink, what the overlay sets up on
// purpose: a VXLAN device that learns nothing from the wire (its forwarding
// and neighbour entries are all static, from SetEndpoints), answers ARP
// itself, reports no misses, uses the configured VNI, port, source address
// and MTU, and is a port of the network's bridge; the bridge and the task
// links with the overlay MTU.
func TestOverlayDevices(t *testing.T) {
	lab := nettest.New(t, 1)
	host := lab.Hosts[0]
	o := &netmesh.Overlay{NetNS: "/var/run/netns/" + host.Name, LocalAddr: host.Addr, Port: 4790, UnderlayMTU: 1400}
	if err := o.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	const mtu = 1400 - netmesh.VXLANOverhead
	n := netmesh.OverlayNetwork{ID: "attrs", VNI: 4242, Subnet: netip.MustParsePrefix("10.42.0.0/24")}
	h := netlinkIn(t, host.Name)
	devices := func() (*netlink.Bridge, *netlink.Vxlan) {
		t.Helper()
		if err := o.EnsureNetwork(n); err != nil {
			t.Fatal(err)
		}
		br, err := h.LinkByName("sbr4242")
		if err != nil {
			t.Fatal(err)
		}
		vx, err := h.LinkByName("svx4242")
		if err != nil {
			t.Fatal(err)
		}
		b, ok := br.(*netlink.Bridge)
		if !ok {
			t.Fatalf("sbr4242 is a %s, want a bridge", br.Type())
		}
		v, ok := vx.(*netlink.Vxlan)
		if !ok {
			t.Fatalf("svx4242 is a %s, want a vxlan", vx.Type())
		}
		return b, v
	}
	br, vx := devices()
	checkOverlayDevices(t, br, vx, n.VNI, 4790, host.Addr, mtu)
	// Idempotent: the same devices, unchanged.
	br2, vx2 := devices()
	if br2.Index != br.Index || vx2.Index != vx.Index {
		t.Fatalf("second EnsureNetwork made new devices: bridge %d -> %d, vxlan %d -> %d", br.Index, br2.Index, vx.Index, vx2.Index)
	}
	checkOverlayDevices(t, br2, vx2, n.VNI, 4790, host.Addr, mtu)

	// Endpoints: a permanent neighbour entry and a permanent forwarding
	// entry per remote task, nothing for local ones or for addresses
	// outside the subnet, and no default destination (no flooding).
	eps := []netmesh.RemoteEndpoint{
		{Addr: netip.MustParseAddr("10.42.0.5"), Host: netip.MustParseAddr("192.0.2.50")},
		{Addr: netip.MustParseAddr("10.42.0.6"), Host: netip.MustParseAddr("192.0.2.51")},
		{Addr: netip.MustParseAddr("10.42.0.7"), Host: host.Addr},
		{Addr: netip.MustParseAddr("10.99.0.1"), Host: netip.MustParseAddr("192.0.2.50")},
	}
	if err := o.SetEndpoints(n, eps); err != nil {
		t.Fatal(err)
	}
	neighs, err := h.NeighList(vx.Index, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var gotNeigh []string
	for _, nb := range neighs {
		gotNeigh = append(gotNeigh, fmt.Sprintf("%s %s %s", nb.IP, nb.HardwareAddr, neighState(nb.State)))
	}
	slices.Sort(gotNeigh)
	wantNeigh := []string{"10.42.0.5 02:42:0a:2a:00:05 permanent", "10.42.0.6 02:42:0a:2a:00:06 permanent"}
	if !slices.Equal(gotNeigh, wantNeigh) {
		t.Fatalf("neighbour entries %q, want %q", gotNeigh, wantNeigh)
	}
	fdb, err := h.NeighList(vx.Index, unix.AF_BRIDGE)
	if err != nil {
		t.Fatal(err)
	}
	var gotFDB []string
	for _, e := range fdb {
		if e.Flags&netlink.NTF_SELF != 0 { // the VXLAN device's own table, not the bridge's
			gotFDB = append(gotFDB, fmt.Sprintf("%s dst %s %s", e.HardwareAddr, e.IP, neighState(e.State)))
		}
	}
	slices.Sort(gotFDB)
	wantFDB := []string{"02:42:0a:2a:00:05 dst 192.0.2.50 permanent", "02:42:0a:2a:00:06 dst 192.0.2.51 permanent"}
	if !slices.Equal(gotFDB, wantFDB) {
		t.Fatalf("VXLAN forwarding entries %q, want %q", gotFDB, wantFDB)
	}

	// A task link: on the bridge, with the overlay MTU on both ends.
	ns, err := lab.NewNamespace("attrs")
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddr("10.42.0.2")
	if err := o.Attach(n, "/var/run/netns/"+ns, "eth0", addr); err != nil {
		t.Fatal(err)
	}
	links, _ := h.LinkList()
	var veths []string
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Index && l.Type() == "veth" {
			a := l.Attrs()
			veths = append(veths, fmt.Sprintf("mtu %d up %v", a.MTU, a.Flags&net.FlagUp != 0))
		}
	}
	if want := fmt.Sprintf("[mtu %d up true]", mtu); fmt.Sprint(veths) != want {
		t.Fatalf("task links on the bridge %v, want %s", veths, want)
	}
	th := netlinkIn(t, ns)
	l, err := th.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	addrs, _ := th.AddrList(l, netlink.FAMILY_V4)
	a := l.Attrs()
	if a.MTU != mtu || a.HardwareAddr.String() != netmesh.MACFor(addr).String() || a.Flags&net.FlagUp == 0 || len(addrs) != 1 || addrs[0].IPNet.String() != "10.42.0.2/24" {
		t.Fatalf("task's eth0: mtu %d mac %s flags %v addrs %v", a.MTU, a.HardwareAddr, a.Flags, addrs)
	}

	// A VXLAN device left with other settings (by an older agent, or before
	// the node's address changed) is replaced, not kept.
	stale := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "svx4243", MTU: 1500}, VxlanId: 4243, Port: 9999, Learning: true,
		SrcAddr: net.ParseIP("192.0.2.99")}
	if err := h.LinkAdd(stale); err != nil {
		t.Fatal(err)
	}
	n2 := netmesh.OverlayNetwork{ID: "stale", VNI: 4243, Subnet: netip.MustParsePrefix("10.43.0.0/24")}
	if err := o.EnsureNetwork(n2); err != nil {
		t.Fatal(err)
	}
	br3, _ := h.LinkByName("sbr4243")
	vx3, _ := h.LinkByName("svx4243")
	b3, _ := br3.(*netlink.Bridge)
	v3, _ := vx3.(*netlink.Vxlan)
	if b3 == nil || v3 == nil {
		t.Fatalf("devices of a network over a stale one: %v %v", br3, vx3)
	}
	checkOverlayDevices(t, b3, v3, n2.VNI, 4790, host.Addr, mtu)
}

func checkOverlayDevices(t *testing.T, br *netlink.Bridge, vx *netlink.Vxlan, vni uint32, port int, local netip.Addr, mtu int) {
	t.Helper()
	if br.MTU != mtu || br.Flags&net.FlagUp == 0 || br.VlanFiltering != nil && *br.VlanFiltering {
		t.Errorf("bridge %s: mtu %d (want %d), flags %v, vlan filtering %v; want up, no VLAN filtering", br.Name, br.MTU, mtu, br.Flags, br.VlanFiltering)
	}
	got := fmt.Sprintf("vni %d port %d local %s group %v learning %v proxy %v l2miss %v l3miss %v mtu %d master %d up %v",
		vx.VxlanId, vx.Port, vx.SrcAddr, vx.Group, vx.Learning, vx.Proxy, vx.L2miss, vx.L3miss, vx.MTU, vx.MasterIndex, vx.Flags&net.FlagUp != 0)
	want := fmt.Sprintf("vni %d port %d local %s group <nil> learning false proxy true l2miss false l3miss false mtu %d master %d up true",
		vni, port, local, mtu, br.Index)
	if got != want {
		t.Errorf("vxlan %s:\n got %s\nwant %s", vx.Name, got, want)
	}
}

func neighState(s int) string {
	switch s {
	case netlink.NUD_PERMANENT:
		return "permanent"
	case netlink.NUD_NOARP:
		return "noarp"
	case netlink.NUD_REACHABLE:
		return "reachable"
	case netlink.NUD_STALE:
		return "stale"
	}
	return fmt.Sprintf("state %#x", s)
}
