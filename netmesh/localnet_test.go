package netmesh_test

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shoalproject/shoal/internal/nettest"
	"github.com/shoalproject/shoal/netmesh"
)

// TestRoutingMeshLoopback: a published port answers on the node's own
// 127.0.0.1 too, even with its backend on another host (which needs the
// kernel's route_localnet); and that setting does not open the node's
// loopback to other hosts: a packet for 127.0.0.1 that arrives from the
// wire is dropped, not delivered to a service listening on loopback only.
func TestRoutingMeshLoopback(t *testing.T) {
	lab := nettest.New(t, 2)
	ctx := context.Background()
	h0, h1 := lab.Hosts[0], lab.Hosts[1]
	serveHTTP(t, h0.Name, h0.Addr.String()+":80", "remote-backend")
	m := &netmesh.RoutingMesh{NetNS: "/var/run/netns/" + h1.Name}
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if err := m.Set(ctx, netmesh.PublishedPort{ServiceID: "web", Protocol: netmesh.TCP, Port: 8080,
		Backends: []netmesh.Backend{{Addr: h0.Addr, Port: 80}}}); err != nil {
		t.Fatal(err)
	}
	if body, err := get(h1.Name, "http://127.0.0.1:8080/"); err != nil || body != "remote-backend" {
		t.Fatalf("published port on the node's loopback: %q %v", body, err)
	}

	// A service of h1 on loopback only, and one on its wire address as
	// the control.
	var lo, wire net.PacketConn
	if err := nettest.Do(h1.Name, func() (err error) {
		if lo, err = net.ListenPacket("udp", "127.0.0.1:9999"); err != nil {
			return err
		}
		wire, err = net.ListenPacket("udp", h1.Addr.String()+":9998")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lo.Close(); wire.Close() })
	h1MAC := linkMAC(t, h1.Name, "eth0")
	// fromOutside sends, from h0, hand-made frames to h1's MAC: first one
	// for 127.0.0.1, then the control for h1's own address. Both are sent
	// from one CPU, so the kernel handles them in that order: once the
	// control has arrived, the first has been delivered or dropped. It
	// returns what waits on the loopback-only socket.
	fromOutside := func() int {
		t.Helper()
		if err := nettest.Do(h0.Name, func() error {
			return sendUDPFrames(h0.Addr, h1MAC,
				udpFrame{dst: netip.MustParseAddr("127.0.0.1"), port: 9999, payload: "from outside"},
				udpFrame{dst: h1.Addr, port: 9998, payload: "control"})
		}); err != nil {
			t.Fatal(err)
		}
		wire.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 64)
		if n, _, err := wire.ReadFrom(buf); err != nil || string(buf[:n]) != "control" {
			t.Fatalf("control datagram to h1's address: %q %v", buf[:n], err)
		}
		return queued(t, lo)
	}
	if pending := fromOutside(); pending != 0 {
		t.Fatalf("a datagram for 127.0.0.1 from another host reached a service on h1's loopback (%d bytes queued)", pending)
	}
	// Nor does a packet that claims to come from the node's loopback:
	// route_localnet accepts 127.0.0.0/8 sources from the wire too (the
	// kernel still refuses 127.0.0.1, an address of the node's own, but
	// not 127.0.0.2), and a service that trusts loopback sources as "this
	// node" (Go's IsLoopback is all of 127.0.0.0/8) would take it for one
	// of the node's own.
	if first := spoofedFirst(t, h0, h1, h1MAC); first != "control" {
		t.Fatalf("a datagram from 127.0.0.2 sent by another host reached a service of h1: got %q first", first)
	}
	// The mesh never leads a published port to the node's loopback: that
	// would publish what listens there on every node.
	for _, a := range []string{"127.0.0.1", "127.1.2.3", "0.0.0.0", "224.0.0.1", "255.255.255.255"} {
		err := m.Set(ctx, netmesh.PublishedPort{ServiceID: "lo", Protocol: netmesh.TCP, Port: 8081, Backends: []netmesh.Backend{{Addr: netip.MustParseAddr(a), Port: 22}}})
		if err == nil {
			t.Errorf("a backend at %s accepted", a)
		}
	}
	// Closed, the mesh takes its guard away, and route_localnet with it.
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if pending := fromOutside(); pending != 0 {
		t.Fatalf("after Close, a datagram for 127.0.0.1 from another host reached h1's loopback (%d bytes queued)", pending)
	}
	if first := spoofedFirst(t, h0, h1, h1MAC); first != "control" {
		t.Fatalf("after Close, a datagram from 127.0.0.2 sent by another host reached a service of h1: got %q first", first)
	}
}

// spoofedFirst sends, from a to b, a datagram claiming to come from
// 127.0.0.2, then one from a's own address, to a socket of b on all
// addresses, and returns the payload of the first that arrives.
func spoofedFirst(t *testing.T, a, b *nettest.Host, bMAC net.HardwareAddr) string {
	t.Helper()
	var any net.PacketConn
	if err := nettest.Do(b.Name, func() (err error) { any, err = net.ListenPacket("udp", "0.0.0.0:9997"); return }); err != nil {
		t.Fatal(err)
	}
	defer any.Close()
	if err := nettest.Do(a.Name, func() error {
		return sendUDPFrames(a.Addr, bMAC,
			udpFrame{src: netip.MustParseAddr("127.0.0.2"), dst: b.Addr, port: 9997, payload: "spoofed"},
			udpFrame{dst: b.Addr, port: 9997, payload: "control"})
	}); err != nil {
		t.Fatal(err)
	}
	any.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	n, _, err := any.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

// linkMAC is the MAC address of a link in a namespace.
func linkMAC(t *testing.T, ns, link string) net.HardwareAddr {
	t.Helper()
	l, err := netlinkIn(t, ns).LinkByName(link)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().HardwareAddr
}

// queued is the size of the next datagram waiting on c, 0 if none.
func queued(t *testing.T, c net.PacketConn) int {
	t.Helper()
	rc, err := c.(*net.UDPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var ierr error
	if err := rc.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); err != nil {
		t.Fatal(err)
	}
	if ierr != nil {
		t.Fatal(ierr)
	}
	return n
}

type udpFrame struct {
	src     netip.Addr // zero: the sender's
	dst     netip.Addr
	port    uint16
	payload string
}

// sendUDPFrames sends IPv4/UDP datagrams from src as Ethernet frames to
// the MAC dstMAC through eth0 of the caller's namespace, bypassing the
// sender's routing (which would not send to 127.0.0.1 at all), all from
// one CPU.
func sendUDPFrames(src netip.Addr, dstMAC net.HardwareAddr, frames ...udpFrame) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var orig unix.CPUSet
	if err := unix.SchedGetaffinity(0, &orig); err != nil {
		return err
	}
	var one unix.CPUSet
	for cpu := 0; cpu < 1024; cpu++ {
		if orig.IsSet(cpu) {
			one.Set(cpu)
			break
		}
	}
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		return err
	}
	defer unix.SchedSetaffinity(0, &orig)
	eth0, err := net.InterfaceByName("eth0")
	if err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_IP)))
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	to := &unix.SockaddrLinklayer{Ifindex: eth0.Index, Protocol: htons(unix.ETH_P_IP), Halen: 6}
	copy(to.Addr[:], dstMAC)
	for _, f := range frames {
		if err := unix.Sendto(fd, ipv4UDP(src, f), 0, to); err != nil {
			return err
		}
	}
	return nil
}

// ipv4UDP is an IPv4 packet holding a UDP datagram (no UDP checksum).
func ipv4UDP(src netip.Addr, f udpFrame) []byte {
	p := make([]byte, 20+8+len(f.payload))
	p[0], p[8], p[9] = 0x45, 64, unix.IPPROTO_UDP
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	binary.BigEndian.PutUint16(p[6:], 0x4000) // don't fragment
	if f.src.IsValid() {
		src = f.src
	}
	s, d := src.As4(), f.dst.As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(p[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(p[10:], ^uint16(sum))
	binary.BigEndian.PutUint16(p[20:], 40000)
	binary.BigEndian.PutUint16(p[22:], f.port)
	binary.BigEndian.PutUint16(p[24:], uint16(8+len(f.payload)))
	copy(p[28:], f.payload)
	return p
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
