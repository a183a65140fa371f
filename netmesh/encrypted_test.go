package netmesh_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/shoalproject/shoal/internal/nettest"
	"github.com/shoalproject/shoal/netmesh"
)

func TestWireGuardKeys(t *testing.T) {
	k, err := netmesh.GenerateWireGuardKey()
	if err != nil {
		t.Fatal(err)
	}
	back, err := netmesh.ParseWireGuardKey(k.String())
	if err != nil || back != k {
		t.Fatalf("round trip: %v %v", back, err)
	}
	if k.PublicKey() == k || k.PublicKey().IsZero() {
		t.Fatal("public key equals the private key or is zero")
	}
	// RFC 7748 section 6.1: Alice's key pair.
	alice, _ := netmesh.ParseWireGuardKey("dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=")
	if got := alice.PublicKey().String(); got != "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=" {
		t.Fatalf("public key %s, want RFC 7748's", got)
	}
	for _, bad := range []string{"", "short", "AAAA", strings.Repeat("A", 43)} {
		if _, err := netmesh.ParseWireGuardKey(bad); err == nil || !strings.Contains(err.Error(), "not a WireGuard key") {
			t.Errorf("ParseWireGuardKey(%q): %v", bad, err)
		}
	}
}

// encLab is three test hosts with an overlay each, knowing each other's
// WireGuard keys.
type encLab struct {
	lab      *nettest.Lab
	overlays []*netmesh.Overlay
}

func newEncLab(t *testing.T) *encLab {
	lab := nettest.New(t, 3)
	e := &encLab{lab: lab}
	for _, h := range lab.Hosts {
		o := &netmesh.Overlay{NetNS: "/var/run/netns/" + h.Name, LocalAddr: h.Addr}
		if err := o.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { o.Close() })
		e.overlays = append(e.overlays, o)
	}
	e.shareKeys(t)
	return e
}

func (e *encLab) shareKeys(t *testing.T) {
	t.Helper()
	keys := map[netip.Addr]netmesh.WireGuardKey{}
	for i, o := range e.overlays {
		keys[e.lab.Hosts[i].Addr] = o.PublicKey()
	}
	for _, o := range e.overlays {
		if err := o.SetPeerKeys(keys); err != nil {
			t.Fatal(err)
		}
	}
}

type encTask struct {
	ns   string
	host int
	addr netip.Addr
}

// network sets n up on every host with the given tasks attached and every
// host knowing every endpoint.
func (e *encLab) network(t *testing.T, n netmesh.OverlayNetwork, tasks ...*encTask) {
	t.Helper()
	var eps []netmesh.RemoteEndpoint
	for _, tk := range tasks {
		ns, err := e.lab.NewNamespace(n.ID + tk.addr.String())
		if err != nil {
			t.Fatal(err)
		}
		tk.ns = ns
		eps = append(eps, netmesh.RemoteEndpoint{Addr: tk.addr, Host: e.lab.Hosts[tk.host].Addr})
	}
	for _, o := range e.overlays {
		if err := o.EnsureNetwork(n); err != nil {
			t.Fatal(err)
		}
		// Idempotent.
		if err := o.EnsureNetwork(n); err != nil {
			t.Fatalf("second EnsureNetwork: %v", err)
		}
	}
	for _, tk := range tasks {
		if err := e.overlays[tk.host].Attach(n, "/var/run/netns/"+tk.ns, "eth0", tk.addr); err != nil {
			t.Fatal(err)
		}
		fastARP(t, tk.ns, "eth0")
	}
	for _, o := range e.overlays {
		if err := o.SetEndpoints(n, eps); err != nil {
			t.Fatal(err)
		}
	}
	for _, tk := range tasks {
		echo(t, tk.ns, tk.addr.String()+":9000")
	}
}

// sendMarker sends a recognisable payload from one task to another's echo
// server and checks it comes back whole.
func sendMarker(ns, to string, marker []byte) error {
	return nettest.Do(ns, func() error {
		c, err := net.DialTimeout("tcp", to, 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		payload := bytes.Repeat(marker, (1<<20)/len(marker)) // 1 MiB: full-size segments
		go c.Write(payload)
		got := make([]byte, len(payload))
		if _, err := io.ReadFull(c, got); err != nil {
			return err
		}
		if !bytes.Equal(got, payload) {
			return io.ErrUnexpectedEOF
		}
		return nil
	})
}

func TestEncryptedOverlay(t *testing.T) {
	e := newEncLab(t)
	h := netlinkIn(t, e.lab.Hosts[0].Name)
	want := netmesh.WireGuardUserspace
	if _, err := h.GenlFamilyGet("wireguard"); err == nil {
		want = netmesh.WireGuardKernel
	}
	if got := e.overlays[0].WireGuardBackend(); got != want {
		t.Fatalf("WireGuard backend %q, want %q on this kernel", got, want)
	}
	t.Logf("WireGuard backend: %s", want)
	// ESP: probed with a test state that is removed at once; none is left
	// either way.
	t.Logf("kernel ESP available: %v", e.overlays[0].ESPAvailable())
	if states, err := h.XfrmStateList(netlink.FAMILY_ALL); err != nil && e.overlays[0].ESPAvailable() || len(states) != 0 {
		t.Fatalf("xfrm states left by the ESP probe: %v %v", states, err)
	}

	subnet := netip.MustParsePrefix("10.20.1.0/24")
	encA := netmesh.OverlayNetwork{ID: "encA", VNI: 5001, Subnet: subnet, Encrypted: true}
	encB := netmesh.OverlayNetwork{ID: "encB", VNI: 5002, Subnet: subnet, Encrypted: true, WireGuardPort: 51900}
	plain := netmesh.OverlayNetwork{ID: "plain", VNI: 5003, Subnet: netip.MustParsePrefix("10.20.3.0/24")}
	a0 := &encTask{host: 0, addr: netip.MustParseAddr("10.20.1.2")}
	a1 := &encTask{host: 1, addr: netip.MustParseAddr("10.20.1.3")}
	a2 := &encTask{host: 2, addr: netip.MustParseAddr("10.20.1.4")}
	b2 := &encTask{host: 2, addr: netip.MustParseAddr("10.20.1.5")}
	b1 := &encTask{host: 1, addr: netip.MustParseAddr("10.20.1.2")} // a0's address, on B
	p0 := &encTask{host: 0, addr: netip.MustParseAddr("10.20.3.2")}
	p1 := &encTask{host: 1, addr: netip.MustParseAddr("10.20.3.3")}
	e.network(t, encA, a0, a1, a2)
	e.network(t, encB, b1, b2)
	e.network(t, plain, p0, p1)

	for _, pair := range [][2]*encTask{{a0, a1}, {a1, a0}, {a0, a2}, {a2, a1}, {b2, b1}} {
		if err := dial(pair[0].ns, pair[1].addr.String()+":9000"); err != nil {
			t.Fatalf("%s -> %s on an encrypted network: %v", pair[0].addr, pair[1].addr, err)
		}
	}
	// Isolation: same subnet, other network.
	// (the other network's addresses do not even resolve)
	if err := dial(a0.ns, b2.addr.String()+":9000"); !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Fatalf("a task on encA dialling one on encB: %v, want no route to host", err)
	}
	if err := dial(b2.ns, a1.addr.String()+":9000"); !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Fatalf("a task on encB dialling one on encA: %v, want no route to host", err)
	}
	// What comes in from an encrypted network, from its tasks (the bridge)
	// or from other nodes (the tunnel), is routed within the network only:
	// the node's routing decision for anything else, such as the underlay,
	// is "unreachable", while the network's own addresses are routed.
	for _, c := range []struct {
		iif      string
		src, dst netip.Addr
		via      string // "" for unreachable
	}{
		{"sbr5001", a0.addr, e.lab.Hosts[1].Addr, ""},
		{"swg5001", a1.addr, e.lab.Hosts[1].Addr, ""},
		{"sbr5001", a0.addr, a1.addr, "swg5001"},
		{"swg5001", a1.addr, a0.addr, "sbr5001"},
	} {
		routes, err := h.RouteGetWithOptions(c.dst.AsSlice(), &netlink.RouteGetOptions{Iif: c.iif, SrcAddr: c.src.AsSlice()})
		if c.via == "" {
			if !errors.Is(err, unix.EHOSTUNREACH) {
				t.Errorf("from %s (%s) to %s: routed %v (%v), want unreachable", c.iif, c.src, c.dst, routes, err)
			}
			continue
		}
		var out string
		if err == nil && len(routes) == 1 {
			if l, lerr := h.LinkByIndex(routes[0].LinkIndex); lerr == nil {
				out = l.Attrs().Name
			}
		}
		if out != c.via {
			t.Errorf("from %s (%s) to %s: routed %v (%v) out of %q, want %s", c.iif, c.src, c.dst, routes, err, out, c.via)
		}
	}
	// MTU: underlay minus WireGuard's 60 bytes.
	if err := nettest.Do(a0.ns, func() error {
		l, err := netlink.LinkByName("eth0")
		if err == nil && l.Attrs().MTU != 1440 {
			t.Errorf("task MTU on an encrypted network %d, want 1440", l.Attrs().MTU)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}

	// On the wire: the plain network's payload is visible (the capture
	// works), the encrypted network's is not, and WireGuard's port is seen.
	marker := []byte("SHOAL-PLAINTEXT-MARKER-7f3a9c")
	frames, err := e.lab.Capture(func() error { return sendMarker(p0.ns, p1.addr.String()+":9000", marker) })
	if err != nil {
		t.Fatal(err)
	}
	if !containsAny(frames, marker) {
		t.Fatalf("control: the marker sent over the plain network is not in the %d captured frames", len(frames))
	}
	frames, err = e.lab.Capture(func() error { return sendMarker(a0.ns, a1.addr.String()+":9000", marker) })
	if err != nil {
		t.Fatal(err)
	}
	if containsAny(frames, marker) {
		t.Fatal("plaintext of an encrypted network seen on the wire")
	}
	wg := 0
	for _, f := range frames {
		if udpPort(f) == 51820+5001%1000 {
			wg++
		}
	}
	if wg == 0 {
		t.Fatalf("no WireGuard packets among %d captured frames", len(frames))
	}
	t.Logf("encrypted transfer: %d frames captured, %d WireGuard, no plaintext", len(frames), wg)

	// Crash and reconcile: a new agent on host 1 removes a dropped
	// network's tunnel, rules and table and keeps the others.
	if err := e.overlays[1].Close(); err != nil {
		t.Fatal(err)
	}
	restarted := &netmesh.Overlay{NetNS: "/var/run/netns/" + e.lab.Hosts[1].Name, LocalAddr: e.lab.Hosts[1].Addr}
	if err := restarted.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { restarted.Close() })
	e.overlays[1] = restarted
	if _, err := restarted.RemoveStale([]netmesh.OverlayNetwork{encA, plain}); err != nil {
		t.Fatal(err)
	}
	h1 := netlinkIn(t, e.lab.Hosts[1].Name)
	if _, err := h1.LinkByName("sbr5002"); err == nil {
		t.Fatal("stale bridge of encB left after RemoveStale")
	}
	rules, _ := h1.RuleList(netlink.FAMILY_V4)
	for _, r := range rules {
		if r.Table == 0x53000000+5002 {
			t.Fatalf("stale policy rule of encB left: %v", r)
		}
	}
	// The new agent applies the desired state again, with a new key that
	// the others learn.
	e.shareKeys(t)
	if err := restarted.EnsureNetwork(encA); err != nil {
		t.Fatal(err)
	}
	eps := []netmesh.RemoteEndpoint{{Addr: a0.addr, Host: e.lab.Hosts[0].Addr}, {Addr: a1.addr, Host: e.lab.Hosts[1].Addr}, {Addr: a2.addr, Host: e.lab.Hosts[2].Addr}}
	if err := restarted.SetEndpoints(encA, eps); err != nil {
		t.Fatal(err)
	}
	if err := dial(a0.ns, a1.addr.String()+":9000"); err != nil {
		t.Fatalf("after the agent's restart: %v", err)
	}

	// A node without a known key: its endpoints are reported, not silently
	// dropped.
	err = e.overlays[0].SetEndpoints(encA, append(eps, netmesh.RemoteEndpoint{Addr: netip.MustParseAddr("10.20.1.9"), Host: netip.MustParseAddr("192.0.2.99")}))
	if err == nil || !strings.Contains(err.Error(), "192.0.2.99") {
		t.Fatalf("endpoint on a node without key: %v", err)
	}
	if err := dial(a0.ns, a2.addr.String()+":9000"); err != nil {
		t.Fatalf("known endpoints broken by an unknown one: %v", err)
	}

	// Remove leaves nothing: no tunnel, no rules.
	if err := e.overlays[0].RemoveNetwork(encA); err != nil {
		t.Fatal(err)
	}
	if _, err := h.LinkByName("swg5001"); err == nil {
		t.Fatal("swg5001 left after RemoveNetwork")
	}
	rules, _ = h.RuleList(netlink.FAMILY_V4)
	for _, r := range rules {
		if r.Table == 0x53000000+5001 {
			t.Fatalf("policy rule left after RemoveNetwork: %v", r)
		}
	}
}

// TestEncryptedKeyRotation replaces a node's key under an open connection:
// the connection goes on.
func TestEncryptedKeyRotation(t *testing.T) {
	e := newEncLab(t)
	n := netmesh.OverlayNetwork{ID: "rot", VNI: 5010, Subnet: netip.MustParsePrefix("10.21.0.0/24"), Encrypted: true}
	a0 := &encTask{host: 0, addr: netip.MustParseAddr("10.21.0.2")}
	a1 := &encTask{host: 1, addr: netip.MustParseAddr("10.21.0.3")}
	e.network(t, n, a0, a1)
	var c net.Conn
	if err := nettest.Do(a0.ns, func() (err error) {
		c, err = net.DialTimeout("tcp", a1.addr.String()+":9000", 2*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip := func(msg string) error {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte(msg)); err != nil {
			return err
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil {
			return err
		}
		if string(got) != msg {
			t.Fatalf("echo %q, want %q", got, msg)
		}
		return nil
	}
	if err := roundTrip("before"); err != nil {
		t.Fatal(err)
	}
	// WireGuard ignores a second handshake from a peer within 20 ms (flood
	// protection), which would cost a 5 s retry here; a rotation every
	// 12 hours never comes that close to the connection's first handshake.
	time.Sleep(100 * time.Millisecond)
	old := e.overlays[1].PublicKey()
	pub, err := e.overlays[1].RotateKey()
	if err != nil {
		t.Fatal(err)
	}
	if pub == old || pub != e.overlays[1].PublicKey() {
		t.Fatal("RotateKey did not change the public key")
	}
	e.shareKeys(t)
	start := time.Now()
	if err := roundTrip("after rotation"); err != nil {
		t.Fatalf("established connection broken by key rotation: %v", err)
	}
	t.Logf("first round trip after rotation: %v", time.Since(start))
	if err := dial(a0.ns, a1.addr.String()+":9000"); err != nil {
		t.Fatalf("new connection after rotation: %v", err)
	}
	// SetKey: a key of the caller's (one it keeps on disk).
	time.Sleep(100 * time.Millisecond)
	mine, _ := netmesh.GenerateWireGuardKey()
	if pub, err := e.overlays[1].SetKey(mine); err != nil || pub != mine.PublicKey() || e.overlays[1].PublicKey() != mine.PublicKey() {
		t.Fatalf("SetKey: %v %v", pub, err)
	}
	if _, err := e.overlays[1].SetKey(netmesh.WireGuardKey{}); err == nil {
		t.Fatal("SetKey took a zero key")
	}
	e.shareKeys(t)
	if err := roundTrip("after SetKey"); err != nil {
		t.Fatalf("established connection broken by SetKey: %v", err)
	}
}

func netlinkIn(t *testing.T, name string) *netlink.Handle {
	t.Helper()
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

func containsAny(frames [][]byte, b []byte) bool {
	for _, f := range frames {
		if bytes.Contains(f, b) {
			return true
		}
	}
	return false
}

// udpPort is the destination port of an Ethernet/IPv4/UDP frame, or 0.
func udpPort(f []byte) int {
	if len(f) < 14+20+8 || f[12] != 0x08 || f[13] != 0x00 || f[14+9] != 17 {
		return 0
	}
	ihl := int(f[14]&0x0f) * 4
	if len(f) < 14+ihl+4 {
		return 0
	}
	return int(f[14+ihl+2])<<8 | int(f[14+ihl+3])
}
