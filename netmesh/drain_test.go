package netmesh_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/nettest"
	"github.com/shoalproject/shoal/internal/waitfor"
	"github.com/shoalproject/shoal/netmesh"
)

// drainLab is a node (h0) with two backends on an overlay network, a
// routing mesh publishing them on 8080, and a task on the same network
// whose ServiceLB balances a VIP over them; clients are another host (h1,
// through the mesh) and the task (through the VIP).
type drainLab struct {
	lab      *nettest.Lab
	mesh     *netmesh.RoutingMesh
	lb       *netmesh.ServiceLB
	client   string // the task's namespace
	backends []netmesh.Backend
	vip      netip.Addr
}

func newDrainLab(t *testing.T) *drainLab {
	t.Helper()
	ctx := context.Background()
	lab := nettest.New(t, 2)
	h0 := lab.Hosts[0]
	ns0 := "/var/run/netns/" + h0.Name
	o := &netmesh.Overlay{NetNS: ns0, LocalAddr: h0.Addr}
	if err := o.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	n := netmesh.OverlayNetwork{ID: "drain", VNI: 4320, Subnet: netip.MustParsePrefix("10.63.0.0/24")}
	if err := o.EnsureNetwork(n); err != nil {
		t.Fatal(err)
	}
	if err := o.SetNodeAddr(n, netip.MustParseAddr("10.63.0.1")); err != nil {
		t.Fatal(err)
	}
	d := &drainLab{lab: lab, vip: netip.MustParseAddr("10.63.0.250")}
	for i := range 2 {
		ns, _ := lab.NewNamespace(fmt.Sprint("drain", i))
		a := netip.AddrFrom4([4]byte{10, 63, 0, byte(10 + i)})
		if err := o.Attach(n, "/var/run/netns/"+ns, "eth0", a); err != nil {
			t.Fatal(err)
		}
		serveHTTP(t, ns, a.String()+":80", fmt.Sprint("backend-", i))
		d.backends = append(d.backends, netmesh.Backend{Addr: a, Port: 80})
	}
	d.client, _ = lab.NewNamespace("drainclient")
	if err := o.Attach(n, "/var/run/netns/"+d.client, "eth0", netip.MustParseAddr("10.63.0.20")); err != nil {
		t.Fatal(err)
	}
	d.mesh = &netmesh.RoutingMesh{NetNS: ns0}
	if err := d.mesh.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.mesh.Close() })
	d.lb = &netmesh.ServiceLB{NetNS: "/var/run/netns/" + d.client}
	if err := d.lb.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.lb.Close() })
	return d
}

// set gives both balancers the same backends.
func (d *drainLab) set(t *testing.T, backends ...netmesh.Backend) {
	t.Helper()
	ctx := context.Background()
	if err := d.mesh.Set(ctx, netmesh.PublishedPort{ServiceID: "web", Protocol: netmesh.TCP, Port: 8080, Backends: backends}); err != nil {
		t.Fatal(err)
	}
	if err := d.lb.Set(ctx, netmesh.VIPService{ServiceID: "web", VIP: d.vip, Protocol: netmesh.TCP, Port: 80, Backends: backends}); err != nil {
		t.Fatal(err)
	}
}

// paths are the two ways to the service: the mesh from another host, the
// VIP from a task.
func (d *drainLab) paths() map[string][2]string {
	return map[string][2]string{
		"mesh": {d.lab.Hosts[1].Name, fmt.Sprintf("http://%s:8080/", d.lab.Hosts[0].Addr)},
		"vip":  {d.client, fmt.Sprintf("http://%s:80/", d.vip)},
	}
}

// A backend taken out is out for every connection opened after Set
// returns: Set reports when the kernel has the new set, one transaction.
func TestDrainNewConnectionsNeverReachARemovedBackend(t *testing.T) {
	d := newDrainLab(t)
	for round := range 5 {
		d.set(t, d.backends...)
		out := round % 2
		d.set(t, d.backends[1-out])
		for name, p := range d.paths() {
			for range 20 {
				body, err := get(p[0], p[1])
				if err != nil {
					t.Fatalf("round %d, %s: %v", round, name, err)
				}
				if body == fmt.Sprint("backend-", out) {
					t.Fatalf("round %d, %s: a connection opened after Set reached the removed backend-%d", round, name, out)
				}
			}
		}
	}
}

// keepAlive is one HTTP/1.1 connection that asks again and again.
type keepAlive struct {
	c  net.Conn
	br *bufio.Reader
}

func dialKeepAlive(t *testing.T, ns, url string) *keepAlive {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	var c net.Conn
	if err := nettest.Do(ns, func() (err error) { c, err = net.DialTimeout("tcp", req.URL.Host, 2*time.Second); return }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &keepAlive{c: c, br: bufio.NewReader(c)}
}

func (k *keepAlive) ask() (string, error) { return k.request(false) }

// askLast asks with "Connection: close": the server closes first.
func (k *keepAlive) askLast() (string, error) { return k.request(true) }

func (k *keepAlive) request(closing bool) (string, error) {
	req, _ := http.NewRequest("GET", "http://service/", nil)
	req.Close = closing
	k.c.SetDeadline(time.Now().Add(2 * time.Second))
	if err := req.Write(k.c); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(k.br, req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// A Draining backend gets no new connections, while its established ones
// go on; left out later, what is left of them is reset at once. With every
// backend draining, new connections are refused and the old ones still
// answered.
func TestDrainingKeepsEstablishedConnections(t *testing.T) {
	d := newDrainLab(t)
	d.set(t, d.backends...)
	for name, p := range d.paths() {
		// A connection, and the backend it went to.
		k := dialKeepAlive(t, p[0], p[1])
		first, err := k.ask()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var x, other netmesh.Backend
		for i, b := range d.backends {
			if fmt.Sprint("backend-", i) == first {
				x = b
			} else {
				other = b
			}
		}
		// And one to the other backend, which must outlive x's removal.
		var k2 *keepAlive
		for range 100 {
			k := dialKeepAlive(t, p[0], p[1])
			if body, err := k.ask(); err == nil && body != first {
				k2 = k
				break
			}
			k.c.Close()
		}
		if k2 == nil {
			t.Fatalf("%s: 100 connections, none to the other backend", name)
		}
		drainingX := x
		drainingX.Draining = true
		d.set(t, drainingX, other)
		for range 5 {
			if body, err := k.ask(); err != nil || body != first {
				t.Fatalf("%s: the established connection to draining %s: %q %v", name, first, body, err)
			}
		}
		for range 20 {
			if body, err := get(p[0], p[1]); err != nil || body == first {
				t.Fatalf("%s: a new connection while %s drains: %q %v", name, first, body, err)
			}
		}
		// Every backend draining: new connections refused, old ones on.
		drainingOther := other
		drainingOther.Draining = true
		d.set(t, drainingX, drainingOther)
		t0 := time.Now()
		if _, err := get(p[0], p[1]); err == nil || time.Since(t0) > time.Second {
			t.Fatalf("%s: a new connection with every backend draining: %v after %v, want a prompt refusal", name, err, time.Since(t0))
		}
		if body, err := k.ask(); err != nil || body != first {
			t.Fatalf("%s: the established connection with every backend draining: %q %v", name, body, err)
		}
		// Left out: what is left is cut at once.
		d.set(t, other)
		t0 = time.Now()
		if body, err := k.ask(); err == nil || time.Since(t0) > time.Second {
			t.Fatalf("%s: the connection to %s after it was left out: %q %v after %v, want a prompt failure", name, first, body, err, time.Since(t0))
		}
		if body, err := k2.ask(); err != nil || body == first {
			t.Fatalf("%s: the connection to the other backend after %s was left out: %q %v", name, first, body, err)
		}
		d.set(t, d.backends...)
	}
}

// A client that reuses its local port while the conntrack entry of its
// last connection (to a backend now removed) is still in TIME_WAIT gets a
// new entry with the same original tuple, DNATed to a live backend. The
// flush of the removed backend's connections, which listed the old entry
// just before, must not take the new one with it: that connection's
// answers would be dropped and its client would wait until its deadline.
// (The kernel often gives the new entry the old one's memory, and with it
// the same CTA_ID: a deletion by the original tuple and ID cut it in about
// half the rounds.)
func TestDrainFlushSparesANewConnectionOnAnOldTuple(t *testing.T) {
	d := newDrainLab(t)
	client, node := d.lab.Hosts[1], d.lab.Hosts[0]
	for round := range 6 {
		// Below the ephemeral range (32768 on): no other socket takes it.
		from := netip.AddrPortFrom(client.Addr, uint16(30001+round))
		gone, kept := d.backends[round%2], d.backends[1-round%2]
		// The old connection, to the backend about to go, closed by the
		// server first (Connection: close; the client reads to its FIN
		// before closing): its entry on the node goes to TIME_WAIT, and
		// the client's port is free again.
		d.set(t, gone)
		old, err := dialFrom(client.Name, from, node.Addr.String()+":8080")
		if err != nil {
			t.Fatal(err)
		}
		if body, err := (&keepAlive{c: old, br: bufio.NewReader(old)}).askLast(); err != nil || body != fmt.Sprint("backend-", round%2) {
			t.Fatalf("round %d, first connection: %q %v", round, body, err)
		}
		if _, err := io.Copy(io.Discard, old); err != nil {
			t.Fatalf("round %d, reading to the server's FIN: %v", round, err)
		}
		old.Close()
		timeWait := fmt.Sprintf("TIME_WAIT src=%s dst=%s sport=%d dport=8080", client.Addr, node.Addr, from.Port())
		waitfor.True(t, "the old connection's entry in TIME_WAIT", func() bool {
			return strings.Contains(conntrackTable(node.Name), timeWait)
		})

		// The backend goes; between the flush's listing and its
		// deletions the client connects again from the same port (to
		// the one backend left in the rules) and keeps the connection.
		var fresh net.Conn
		var freshErr error
		d.mesh.SetAfterDump(func() { fresh, freshErr = dialFrom(client.Name, from, node.Addr.String()+":8080") })
		err = d.mesh.Set(context.Background(), netmesh.PublishedPort{ServiceID: "web", Protocol: netmesh.TCP, Port: 8080, Backends: []netmesh.Backend{kept}})
		d.mesh.SetAfterDump(nil)
		if err != nil {
			t.Fatal(err)
		}
		if freshErr != nil {
			t.Fatalf("round %d: connecting again from %s during the flush: %v", round, from, freshErr)
		}
		// The new connection's entry is there, DNATed to the backend
		// left, and the connection is answered.
		want := fmt.Sprintf("sport=%d dport=8080 src=%s", from.Port(), kept.Addr)
		if ct := conntrackTable(node.Name); !strings.Contains(ct, want) {
			t.Fatalf("round %d: the new connection's conntrack entry (%q) is gone after the flush of %s:\n%s", round, want, gone.Addr, ct)
		}
		body, err := (&keepAlive{c: fresh, br: bufio.NewReader(fresh)}).ask()
		fresh.Close()
		if err != nil || body != fmt.Sprint("backend-", 1-round%2) {
			t.Fatalf("round %d: the new connection after the flush: %q %v", round, body, err)
		}
	}
}

// dialFrom connects from ns to addr from the local address from
// (SO_REUSEADDR: a port whose last connection the server closed).
func dialFrom(ns string, from netip.AddrPort, addr string) (net.Conn, error) {
	var c net.Conn
	err := nettest.Do(ns, func() (err error) {
		dl := net.Dialer{Timeout: 2 * time.Second, LocalAddr: net.TCPAddrFromAddrPort(from),
			Control: func(_, _ string, rc syscall.RawConn) error {
				var serr error
				rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1) })
				return serr
			}}
		c, err = dl.Dial("tcp", addr)
		return err
	})
	return c, err
}

// conntrackTable is the conntrack table of namespace ns, as
// /proc/net/nf_conntrack writes it.
func conntrackTable(ns string) string {
	var ct []byte
	nettest.Do(ns, func() (err error) { ct, err = os.ReadFile("/proc/thread-self/net/nf_conntrack"); return })
	return string(ct)
}
