package netmesh_test

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

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

func dial(ns, addr string) error {
	return nettest.Do(ns, func() error {
		c, err := net.DialTimeout("tcp", addr, 700*time.Millisecond)
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
	if err := dial(a0.ns, b2.addr.String()+":9000"); err == nil {
		t.Fatal("a task on network A reached one on network B")
	}
	if err := dial(b2.ns, a3.addr.String()+":9000"); err == nil {
		t.Fatal("a task on network B reached one on network A (same host)")
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
	// Removing an endpoint takes it off the other nodes: a0 can no longer
	// reach a1 once h0 forgets it.
	if err := overlays[lab.Hosts[0]].SetEndpoints(netA, []netmesh.RemoteEndpoint{{Addr: a3.addr, Host: a3.host.Addr}}); err != nil {
		t.Fatal(err)
	}
	if err := dial(a0.ns, a1.addr.String()+":9000"); err == nil {
		t.Fatal("reached an endpoint that was removed")
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
