package netmesh_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/nettest"
	"github.com/shoalproject/shoal/netmesh"
)

// A VIP of every port (Port 0), as Docker's VIPs: any port of the VIP goes
// to the same port of a backend, over TCP and UDP; a VIP with a port of its
// own goes first; draining and removal behave as for a VIP of one port.
func TestServiceLBEveryPort(t *testing.T) {
	ctx := context.Background()
	lab := nettest.New(t, 1)
	h0 := lab.Hosts[0]
	o := &netmesh.Overlay{NetNS: "/var/run/netns/" + h0.Name, LocalAddr: h0.Addr}
	if err := o.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	n := netmesh.OverlayNetwork{ID: "every", VNI: 4330, Subnet: netip.MustParsePrefix("10.64.0.0/24")}
	if err := o.EnsureNetwork(n); err != nil {
		t.Fatal(err)
	}
	var backends []netmesh.Backend // port 0: every port
	for i := range 2 {
		ns, err := lab.NewNamespace(fmt.Sprint("every", i))
		if err != nil {
			t.Fatal(err)
		}
		a := netip.AddrFrom4([4]byte{10, 64, 0, byte(10 + i)})
		if err := o.Attach(n, "/var/run/netns/"+ns, "eth0", a); err != nil {
			t.Fatal(err)
		}
		for _, port := range []int{80, 8081} {
			serveHTTP(t, ns, fmt.Sprintf("%s:%d", a, port), fmt.Sprintf("backend-%d:%d", i, port))
		}
		serveUDP(t, ns, a.String()+":5353", fmt.Sprint("backend-", i))
		backends = append(backends, netmesh.Backend{Addr: a})
	}
	client, _ := lab.NewNamespace("everyclient")
	if err := o.Attach(n, "/var/run/netns/"+client, "eth0", netip.MustParseAddr("10.64.0.20")); err != nil {
		t.Fatal(err)
	}
	lb := &netmesh.ServiceLB{NetNS: "/var/run/netns/" + client}
	if err := lb.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lb.Close() })
	vip := netip.MustParseAddr("10.64.0.250")
	set := func(p netmesh.Protocol, bs ...netmesh.Backend) {
		t.Helper()
		if err := lb.Set(ctx, netmesh.VIPService{ServiceID: "web", VIP: vip, Protocol: p, Backends: bs}); err != nil {
			t.Fatal(err)
		}
	}
	set(netmesh.TCP, backends...)
	set(netmesh.UDP, backends...)

	for _, port := range []int{80, 8081} {
		seen := map[string]int{}
		for range 30 {
			body, err := get(client, fmt.Sprintf("http://%s:%d/", vip, port))
			if err != nil {
				t.Fatalf("VIP port %d: %v", port, err)
			}
			if !strings.HasSuffix(body, fmt.Sprint(":", port)) {
				t.Fatalf("VIP port %d answered by %q: the port was not kept", port, body)
			}
			seen[body]++
		}
		if len(seen) != 2 {
			t.Fatalf("VIP port %d: answers %v, want both backends", port, seen)
		}
	}
	if err := nettest.Do(client, func() error {
		c, err := net.Dial("udp", vip.String()+":5353")
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		c.Write([]byte("q"))
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		if err == nil && !strings.HasPrefix(string(buf[:n]), "backend-") {
			err = fmt.Errorf("udp answer %q", buf[:n])
		}
		return err
	}); err != nil {
		t.Fatalf("UDP to the VIP: %v", err)
	}

	// A VIP of one port is looked up first.
	if err := lb.Set(ctx, netmesh.VIPService{ServiceID: "web", VIP: vip, Protocol: netmesh.TCP, Port: 8081,
		Backends: []netmesh.Backend{{Addr: backends[0].Addr, Port: 80}}}); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if body, err := get(client, fmt.Sprintf("http://%s:8081/", vip)); err != nil || body != "backend-0:80" {
			t.Fatalf("VIP port 8081 with an entry of its own: %q %v", body, err)
		}
	}
	if err := lb.Remove(ctx, vip, netmesh.TCP, 8081); err != nil {
		t.Fatal(err)
	}

	// Draining: the established connection goes on, new ones go elsewhere;
	// left out, the connection is cut at once.
	k := dialKeepAlive(t, client, fmt.Sprintf("http://%s:8081/", vip))
	first, err := k.ask()
	if err != nil {
		t.Fatal(err)
	}
	x, other := backends[0], backends[1]
	if first == "backend-1:8081" {
		x, other = other, x
	}
	drainingX := x
	drainingX.Draining = true
	set(netmesh.TCP, drainingX, other)
	for range 5 {
		if body, err := k.ask(); err != nil || body != first {
			t.Fatalf("the established connection to draining %s: %q %v", first, body, err)
		}
	}
	for range 15 {
		if body, err := get(client, fmt.Sprintf("http://%s:8081/", vip)); err != nil || body == first {
			t.Fatalf("a new connection while %s drains: %q %v", first, body, err)
		}
	}
	set(netmesh.TCP, other)
	t0 := time.Now()
	if body, err := k.ask(); err == nil || time.Since(t0) > time.Second {
		t.Fatalf("the connection to %s after it was left out: %q %v after %v, want a prompt failure", first, body, err, time.Since(t0))
	}

	// Removed: nothing answers at the VIP.
	if err := lb.Remove(ctx, vip, netmesh.TCP, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := get(client, fmt.Sprintf("http://%s:80/", vip)); err == nil {
		t.Fatal("VIP answered after its every-port service was removed")
	}

	// Ports must agree: every port with a backend port, one port with a
	// backend of port 0.
	for name, s := range map[string]netmesh.VIPService{
		"every port, backend port 80": {ServiceID: "s", VIP: vip, Protocol: netmesh.TCP, Backends: []netmesh.Backend{{Addr: backends[0].Addr, Port: 80}}},
		"port 80, backend port 0":     {ServiceID: "s", VIP: vip, Protocol: netmesh.TCP, Port: 80, Backends: []netmesh.Backend{{Addr: backends[0].Addr}}},
	} {
		if err := lb.Set(ctx, s); err == nil || !strings.Contains(err.Error(), "netmesh") {
			t.Errorf("%s: %v, want an error", name, err)
		}
	}
}
