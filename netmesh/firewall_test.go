package netmesh_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shoalproject/shoal/internal/nettest"
	"github.com/shoalproject/shoal/netmesh"
)

// udpEcho answers each datagram with itself.
func udpEcho(t *testing.T, ns, addr string) {
	t.Helper()
	var pc net.PacketConn
	if err := nettest.Do(ns, func() (err error) { pc, err = net.ListenPacket("udp", addr); return }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
}

// udpAsk sends a datagram from a namespace and waits for the echo.
func udpAsk(ns, addr string, timeout time.Duration) error {
	return nettest.Do(ns, func() error {
		c, err := net.Dial("udp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		_, err = c.Read(make([]byte, 16))
		return err
	})
}

func nftTables(t *testing.T, ns string) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "tables").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list tables: %v %s", err, out)
	}
	return string(out)
}

// Tasks reach their node only at the DNS port (and by ping); the node's
// other ports, on any of its addresses, IPv4 or IPv6, are out of their
// reach. Their way out through the gateway, and the node's own
// connections to them, are untouched.
func TestNodeFirewallKeepsTasksOffTheNode(t *testing.T) {
	ctx := context.Background()
	lab := nettest.New(t, 2)
	h0, h1 := lab.Hosts[0], lab.Hosts[1]
	ns0 := "/var/run/netns/" + h0.Name
	gw := &netmesh.Gateway{NetNS: ns0}
	if err := gw.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	task, _ := lab.NewNamespace("fwtask")
	taskAddr := netip.MustParseAddr("172.18.0.7")
	if err := gw.Attach("/var/run/netns/"+task, "eth1", taskAddr); err != nil {
		t.Fatal(err)
	}
	o := &netmesh.Overlay{NetNS: ns0, LocalAddr: h0.Addr}
	if err := o.Start(); err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	ov := netmesh.OverlayNetwork{ID: "ov", VNI: 4310, Subnet: netip.MustParsePrefix("10.61.0.0/24")}
	if err := o.EnsureNetwork(ov); err != nil {
		t.Fatal(err)
	}
	if err := o.SetNodeAddr(ov, netip.MustParseAddr("10.61.0.1")); err != nil {
		t.Fatal(err)
	}
	ovTask, _ := lab.NewNamespace("fwovl")
	if err := o.Attach(ov, "/var/run/netns/"+ovTask, "eth0", netip.MustParseAddr("10.61.0.5")); err != nil {
		t.Fatal(err)
	}
	// IPv6 on the gateway network too (as a kernel gives every link
	// link-local addresses): the node must not be reachable that way
	// either.
	for _, c := range [][]string{
		{"-n", h0.Name, "addr", "add", "fd00:18::1/64", "dev", "shoal_gwbridge", "nodad"},
		{"-n", task, "addr", "add", "fd00:18::7/64", "dev", "eth1", "nodad"},
	} {
		if out, err := exec.Command("ip", c...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v %s", c, err, out)
		}
	}
	// What the node serves: a management-like port on every address (IPv4
	// and IPv6), gossip, and DNS on the gateway address.
	echo(t, h0.Name, ":2377")
	echo(t, h0.Name, ":7946")
	udpEcho(t, h0.Name, gw.Addr().String()+":53")
	echo(t, h0.Name, gw.Addr().String()+":53")
	// And what is outside: another host, and the task's own port.
	echo(t, h1.Name, h1.Addr.String()+":80")
	echo(t, task, taskAddr.String()+":80")

	blocked := []struct{ ns, addr string }{
		{task, h0.Addr.String() + ":2377"},   // the node's underlay address
		{task, gw.Addr().String() + ":2377"}, // its gateway address
		{task, gw.Addr().String() + ":7946"}, // gossip
		{task, "[fd00:18::1]:2377"},          // IPv6
		{ovTask, "10.61.0.1:2377"},           // its address on an overlay
		{ovTask, "10.61.0.1:7946"},
	}
	// Without the firewall, all of it is open: the test tests something.
	for _, b := range blocked {
		if err := dial(b.ns, b.addr); err != nil {
			t.Fatalf("control, without the firewall: %s -> %s: %v", b.ns, b.addr, err)
		}
	}
	// The node's VXLAN socket is the kernel's: a task that can send to it
	// can put frames on any overlay network of the node, its own or not.
	var injected net.PacketConn
	if err := nettest.Do(ovTask, func() (err error) { injected, err = net.ListenPacket("udp", "10.61.0.5:9999"); return }); err != nil {
		t.Fatal(err)
	}
	defer injected.Close()
	inject := func() bool {
		t.Helper()
		if err := injectVXLAN(task, gw.Addr().String()+":4789", ov.VNI, netip.MustParseAddr("10.61.0.99"), netip.MustParseAddr("10.61.0.5"), 9999); err != nil {
			t.Fatal(err)
		}
		injected.SetReadDeadline(time.Now().Add(700 * time.Millisecond))
		_, _, err := injected.ReadFrom(make([]byte, 64))
		return err == nil
	}
	if !inject() {
		t.Fatal("control, without the firewall: a VXLAN frame from the gateway network did not reach the overlay task")
	}

	fw := &netmesh.NodeFirewall{NetNS: ns0, Table: "fw-test"}
	if err := fw.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fw.Close() })
	if err := fw.Start(ctx); err != nil {
		t.Fatalf("second Start: %v", err)
	}
	for _, b := range blocked {
		if err := dialWithin(b.ns, b.addr, 700*time.Millisecond); err == nil {
			t.Errorf("%s reached the node at %s through the firewall", b.ns, b.addr)
		}
	}
	if inject() {
		t.Error("a task put a frame on an overlay network through the node's VXLAN port")
	}
	// What stays open: DNS at the node, the way out, ping of the gateway,
	// the node's own connections into the task.
	if err := udpAsk(task, gw.Addr().String()+":53", 2*time.Second); err != nil {
		t.Errorf("DNS over UDP from a task: %v", err)
	}
	if err := dial(task, gw.Addr().String()+":53"); err != nil {
		t.Errorf("DNS over TCP from a task: %v", err)
	}
	if err := dial(task, h1.Addr.String()+":80"); err != nil {
		t.Errorf("a task's way out through the gateway: %v", err)
	}
	if err := ping(task, gw.Addr()); err != nil {
		t.Errorf("ping of the gateway: %v", err)
	}
	if err := dial(h0.Name, taskAddr.String()+":80"); err != nil {
		t.Errorf("the node's own connection to a task: %v", err)
	}
	// Other hosts still reach the node's management port (the firewall
	// guards it from tasks only).
	if err := dial(h1.Name, h0.Addr.String()+":2377"); err != nil {
		t.Errorf("another host to the management port: %v", err)
	}
	// A new agent's Start replaces the table; Close removes it, and all is
	// open again.
	again := &netmesh.NodeFirewall{NetNS: ns0, Table: "fw-test"}
	if err := again.Start(ctx); err != nil {
		t.Fatalf("Start over a table left behind: %v", err)
	}
	if err := again.Close(); err != nil {
		t.Fatal(err)
	}
	if err := again.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	if tables := nftTables(t, h0.Name); strings.Contains(tables, "fw-test") {
		t.Fatalf("table left after Close: %s", tables)
	}
	if err := dial(task, h0.Addr.String()+":2377"); err != nil {
		t.Fatalf("after Close: %v", err)
	}
}

// VXLAN and gossip come in only from known peers: a task behind an
// unknown host cannot reach one on the node, a peer's can; the set
// follows SetPeers.
func TestNodeFirewallPeersOnly(t *testing.T) {
	ctx := context.Background()
	lab := nettest.New(t, 3)
	n := netmesh.OverlayNetwork{ID: "fwpeers", VNI: 4311, Subnet: netip.MustParsePrefix("10.62.0.0/24")}
	var eps []netmesh.RemoteEndpoint
	var overlays []*netmesh.Overlay
	var tasks []string
	for i, h := range lab.Hosts {
		o := &netmesh.Overlay{NetNS: "/var/run/netns/" + h.Name, LocalAddr: h.Addr}
		if err := o.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { o.Close() })
		if err := o.EnsureNetwork(n); err != nil {
			t.Fatal(err)
		}
		ns, _ := lab.NewNamespace(fmt.Sprint("fwp", i))
		a := netip.AddrFrom4([4]byte{10, 62, 0, byte(2 + i)})
		if err := o.Attach(n, "/var/run/netns/"+ns, "eth0", a); err != nil {
			t.Fatal(err)
		}
		echo(t, ns, a.String()+":9000")
		eps = append(eps, netmesh.RemoteEndpoint{Addr: a, Host: h.Addr})
		overlays = append(overlays, o)
		tasks = append(tasks, ns)
	}
	for _, o := range overlays {
		if err := o.SetEndpoints(n, eps); err != nil {
			t.Fatal(err)
		}
	}
	h0, h1, h2 := lab.Hosts[0], lab.Hosts[1], lab.Hosts[2]
	target := eps[0].Addr.String() + ":9000"
	echo(t, h0.Name, h0.Addr.String()+":7946")
	udpEcho(t, h0.Name, h0.Addr.String()+":7946")
	gossipTCP, gossipUDP := h0.Addr.String()+":7946", h0.Addr.String()+":7946"
	for _, i := range []int{1, 2} {
		if err := dial(tasks[i], target); err != nil {
			t.Fatalf("control, without the firewall: task on h%d -> task on h0: %v", i, err)
		}
	}
	fw := &netmesh.NodeFirewall{NetNS: "/var/run/netns/" + h0.Name}
	if err := fw.SetPeers(ctx, []netip.Addr{h1.Addr}); err != nil { // before Start: kept for it
		t.Fatal(err)
	}
	if err := fw.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fw.Close() })
	check := func(peer *nettest.Host, task string, want bool) {
		t.Helper()
		timeout := 700 * time.Millisecond
		if want {
			timeout = 5 * time.Second
		}
		for what, err := range map[string]error{
			"overlay (VXLAN)": dialWithin(task, target, timeout),
			"gossip TCP":      dialWithin(peer.Name, gossipTCP, timeout),
			"gossip UDP":      udpAsk(peer.Name, gossipUDP, timeout),
		} {
			if (err == nil) != want {
				t.Errorf("%s from %s: %v, want reachable %v", what, peer.Name, err, want)
			}
		}
	}
	check(h1, tasks[1], true)
	check(h2, tasks[2], false)
	if err := fw.SetPeers(ctx, []netip.Addr{h1.Addr, h2.Addr, h2.Addr}); err != nil {
		t.Fatal(err)
	}
	check(h2, tasks[2], true)
	if err := fw.SetPeers(ctx, []netip.Addr{h2.Addr}); err != nil {
		t.Fatal(err)
	}
	check(h1, tasks[1], false)
	check(h2, tasks[2], true)
	if err := fw.SetPeers(ctx, []netip.Addr{netip.MustParseAddr("fd00::1")}); err == nil {
		t.Error("an IPv6 peer accepted")
	}
	if err := (&netmesh.NodeFirewall{NetNS: "/var/run/netns/" + h0.Name, Table: "fw-bad", TaskInterfaces: []string{`x" accept`}}).Start(ctx); err == nil {
		t.Error("a bad interface name accepted")
	}
}

// injectVXLAN sends, from a namespace, a VXLAN packet to addr carrying an
// Ethernet frame with a UDP datagram from src to dst:port, to dst's MAC.
func injectVXLAN(ns, addr string, vni uint32, src, dst netip.Addr, port uint16) error {
	frame := append([]byte{}, netmesh.MACFor(dst)...)
	frame = append(frame, netmesh.MACFor(src)...)
	frame = append(frame, 0x08, 0x00)
	frame = append(frame, ipv4UDP(src, udpFrame{dst: dst, port: port, payload: "injected"})...)
	pkt := append([]byte{0x08, 0, 0, 0, byte(vni >> 16), byte(vni >> 8), byte(vni), 0}, frame...)
	return nettest.Do(ns, func() error {
		c, err := net.Dial("udp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write(pkt)
		return err
	})
}

// ping sends an ICMP echo request from a namespace and waits 2 s for the
// reply.
func ping(ns string, to netip.Addr) error {
	return nettest.Do(ns, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		tv := unix.NsecToTimeval((2 * time.Second).Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		req := []byte{8, 0, 0, 0, 0x53, 0x48, 0, 1, 'p', 'i', 'n', 'g'}
		var sum uint32
		for i := 0; i < len(req); i += 2 {
			sum += uint32(req[i])<<8 | uint32(req[i+1])
		}
		for sum > 0xffff {
			sum = sum&0xffff + sum>>16
		}
		req[2], req[3] = byte(^sum>>8), byte(^sum)
		if err := unix.Sendto(fd, req, 0, &unix.SockaddrInet4{Addr: to.As4()}); err != nil {
			return err
		}
		buf := make([]byte, 1500)
		for {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				return err
			}
			ihl := int(buf[0]&0xf) * 4
			if n >= ihl+8 && buf[ihl] == 0 && buf[ihl+4] == 0x53 && buf[ihl+5] == 0x48 { // our echo reply
				return nil
			}
		}
	})
}
