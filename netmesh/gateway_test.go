package netmesh_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/nettest"
	"github.com/shoalproject/shoal/netmesh"
)

// whoami answers each connection with the address it came from.
func whoami(t *testing.T, ns, addr string) {
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
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			io.WriteString(c, host)
			c.Close()
		}
	}()
}

// askWho asks a whoami server who is calling. Its timeout outlasts a lost
// first SYN.
func askWho(ns, addr string) (string, error) { return askWhoWithin(ns, addr, 5*time.Second) }

// askWhoWithin is askWho with a timeout of its own: a bounded attempt, for
// checks where a packet is dropped and nothing comes back.
func askWhoWithin(ns, addr string, timeout time.Duration) (string, error) {
	var out string
	err := nettest.Do(ns, func() error {
		c, err := net.DialTimeout("tcp", addr, timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		b, err := io.ReadAll(c)
		out = string(b)
		return err
	})
	return out, err
}

func TestGatewayNetwork(t *testing.T) {
	ctx := context.Background()
	lab := nettest.New(t, 2)
	h0, h1 := lab.Hosts[0], lab.Hosts[1]
	gw := &netmesh.Gateway{NetNS: "/var/run/netns/" + h0.Name}
	if err := gw.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	// Start is idempotent, also for a new agent after a crash.
	again := &netmesh.Gateway{NetNS: "/var/run/netns/" + h0.Name}
	if err := again.Start(ctx); err != nil {
		t.Fatalf("second Start: %v", err)
	}
	again.Close()

	t1, _ := lab.NewNamespace("gw1")
	t2, _ := lab.NewNamespace("gw2")
	a1, a2 := netip.MustParseAddr("172.18.0.2"), netip.MustParseAddr("172.18.0.3")
	for _, x := range []struct {
		ns   string
		addr netip.Addr
	}{{t1, a1}, {t2, a2}} {
		if err := gw.Attach("/var/run/netns/"+x.ns, "eth1", x.addr); err != nil {
			t.Fatal(err)
		}
		if err := gw.Attach("/var/run/netns/"+x.ns, "eth1", x.addr); err != nil {
			t.Fatalf("second Attach: %v", err)
		}
		fastARP(t, x.ns, "eth1")
	}
	if err := gw.Attach("/var/run/netns/"+t1, "eth2", netip.MustParseAddr("10.1.0.1")); err == nil || !strings.Contains(err.Error(), "172.18.0.0/16") {
		t.Fatalf("address outside the subnet: %v", err)
	}

	// Out: a task reaches another host, which sees the node's address.
	whoami(t, h1.Name, h1.Addr.String()+":7000")
	from, err := askWho(t1, h1.Addr.String()+":7000")
	if err != nil {
		t.Fatalf("task -> outside through the gateway: %v", err)
	}
	if from != h0.Addr.String() {
		t.Fatalf("outside saw the task as %s, want the node's %s (masqueraded)", from, h0.Addr)
	}
	// The node itself is reachable at the gateway address.
	whoami(t, h0.Name, gw.Addr().String()+":7001")
	if from, err := askWho(t1, gw.Addr().String()+":7001"); err != nil || from != a1.String() {
		t.Fatalf("task -> its node: %q %v", from, err)
	}

	// Tasks do not reach each other through the gateway network: their
	// ports are isolated, so another task's address does not even resolve.
	whoami(t, t2, a2.String()+":7002")
	if _, err := askWho(t1, a2.String()+":7002"); !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Fatalf("a task dialling another through the gateway network: %v, want no route to host", err)
	}
	// Not even when the tasks route to each other through the node (as a
	// task with its own routes could): the node does not forward between
	// its gateway network's ports.
	for _, r := range [][2]string{{t1, a2.String()}, {t2, a1.String()}} {
		if out, err := exec.Command("ip", "-n", r[0], "route", "add", r[1]+"/32", "via", gw.Addr().String()).CombinedOutput(); err != nil {
			t.Fatalf("route in %s: %v %s", r[0], err, out)
		}
	}
	if _, err := askWhoWithin(t1, a2.String()+":7002", 700*time.Millisecond); err == nil {
		t.Fatal("a task reached another task routed through the node's gateway address")
	}
	// Nor an overlay network through the node, even where the node has an
	// address on it.
	o := &netmesh.Overlay{NetNS: "/var/run/netns/" + h0.Name, LocalAddr: h0.Addr}
	if err := o.Start(); err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	ov := netmesh.OverlayNetwork{ID: "ov", VNI: 4300, Subnet: netip.MustParsePrefix("10.40.0.0/24")}
	if err := o.EnsureNetwork(ov); err != nil {
		t.Fatal(err)
	}
	if err := o.SetNodeAddr(ov, netip.MustParseAddr("10.40.0.254")); err != nil {
		t.Fatal(err)
	}
	t3, _ := lab.NewNamespace("ov3")
	if err := o.Attach(ov, "/var/run/netns/"+t3, "eth0", netip.MustParseAddr("10.40.0.3")); err != nil {
		t.Fatal(err)
	}
	if err := gw.Attach("/var/run/netns/"+t3, "eth1", netip.MustParseAddr("172.18.0.4")); err != nil {
		t.Fatal(err)
	}
	whoami(t, t3, "10.40.0.3:7003")
	if _, err := askWhoWithin(t1, "10.40.0.3:7003", 700*time.Millisecond); err == nil {
		t.Fatal("a task off the overlay network reached it through the node")
	}
	if from, err := askWho(h0.Name, "10.40.0.3:7003"); err != nil || from != "10.40.0.254" {
		t.Fatalf("control: the node reaches the overlay task: %q %v", from, err)
	}

	// Detach and Remove leave nothing.
	if err := gw.Detach("/var/run/netns/" + t1); err != nil {
		t.Fatal(err)
	}
	if _, err := askWho(t1, h1.Addr.String()+":7000"); !errors.Is(err, syscall.ENETUNREACH) {
		t.Fatalf("out after Detach: %v, want network unreachable (no way out left)", err)
	}
	if err := gw.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if out, _ := exec.Command("ip", "-n", h0.Name, "link", "show", "shoal_gwbridge").CombinedOutput(); !strings.Contains(string(out), "does not exist") {
		t.Fatalf("bridge left after Remove: %s", out)
	}
	if out, _ := exec.Command("ip", "netns", "exec", h0.Name, "nft", "list", "tables").CombinedOutput(); strings.Contains(string(out), "shoal-gw") {
		t.Fatalf("nft table left after Remove: %s", out)
	}
}
