package netmesh_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/shoalproject/shoal/internal/nettest"
	"github.com/shoalproject/shoal/netmesh"
)

func serveHTTP(t *testing.T, ns string, addr, name string) {
	t.Helper()
	var ln net.Listener
	if err := nettest.Do(ns, func() (err error) { ln, err = net.Listen("tcp", addr); return }); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, name) })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

func serveUDP(t *testing.T, ns string, addr, name string) {
	t.Helper()
	var pc net.PacketConn
	if err := nettest.Do(ns, func() (err error) { pc, err = net.ListenPacket("udp", addr); return }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 64)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo([]byte(name), from)
		}
	}()
}

// get fetches a URL from inside a namespace on a new connection. It dials
// itself: http.Transport would dial from another goroutine, outside the
// namespace.
func get(ns, url string) (string, error) {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return "", err
	}
	var conn net.Conn
	if err := nettest.Do(ns, func() (err error) {
		conn, err = net.DialTimeout("tcp", req.URL.Host, 2*time.Second)
		return err
	}); err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	req.Close = true
	if err := req.Write(conn); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestRoutingMeshAcrossHosts(t *testing.T) {
	lab := nettest.New(t, 3)
	ctx := context.Background()
	ingress := netmesh.OverlayNetwork{ID: "ingress", VNI: 4096, Subnet: netip.MustParsePrefix("10.255.0.0/16")}
	var eps []netmesh.RemoteEndpoint
	overlays := []*netmesh.Overlay{}
	meshes := []*netmesh.RoutingMesh{}
	var meshLogs []*bytes.Buffer
	for i, h := range lab.Hosts {
		o := &netmesh.Overlay{NetNS: "/var/run/netns/" + h.Name, LocalAddr: h.Addr}
		if err := o.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { o.Close() })
		if err := o.EnsureNetwork(ingress); err != nil {
			t.Fatal(err)
		}
		nodeAddr := netip.AddrFrom4([4]byte{10, 255, 0, byte(10 + i)})
		if err := o.SetNodeAddr(ingress, nodeAddr); err != nil {
			t.Fatal(err)
		}
		eps = append(eps, netmesh.RemoteEndpoint{Addr: nodeAddr, Host: h.Addr})
		overlays = append(overlays, o)
		var logs bytes.Buffer
		m := &netmesh.RoutingMesh{NetNS: "/var/run/netns/" + h.Name, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
		if err := m.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		if m.Backend() != netmesh.BackendNFTables {
			t.Fatalf("backend %q, want nftables", m.Backend())
		}
		// The IPVS probe: the kernel's IPVS family decides what is logged.
		_, ipvsErr := netlink.GenlFamilyGet("IPVS")
		wantLog := fmt.Sprintf("backend=nftables kernel_ipvs=%v", ipvsErr == nil)
		if !strings.Contains(logs.String(), wantLog) {
			t.Fatalf("mesh log %q lacks %q", logs.String(), wantLog)
		}
		meshes = append(meshes, m)
		meshLogs = append(meshLogs, &logs)
	}
	// Two backends, on h1 and h2.
	var backends []netmesh.Backend
	for i, hi := range []int{1, 2} {
		ns, err := lab.NewNamespace(fmt.Sprint("be", i))
		if err != nil {
			t.Fatal(err)
		}
		addr := netip.AddrFrom4([4]byte{10, 255, 1, byte(1 + i)})
		if err := overlays[hi].Attach(ingress, "/var/run/netns/"+ns, "eth0", addr); err != nil {
			t.Fatal(err)
		}
		serveHTTP(t, ns, addr.String()+":80", fmt.Sprint("backend-", i))
		serveUDP(t, ns, addr.String()+":53", fmt.Sprint("backend-", i))
		backends = append(backends, netmesh.Backend{Addr: addr, Port: 80})
		eps = append(eps, netmesh.RemoteEndpoint{Addr: addr, Host: lab.Hosts[hi].Addr})
	}
	for _, o := range overlays {
		if err := o.SetEndpoints(ingress, eps); err != nil {
			t.Fatal(err)
		}
	}
	udpBackends := []netmesh.Backend{{Addr: backends[0].Addr, Port: 53}, {Addr: backends[1].Addr, Port: 53}}
	for _, m := range meshes {
		if err := m.Set(ctx, netmesh.PublishedPort{ServiceID: "web", Protocol: netmesh.TCP, Port: 8080, Backends: backends}); err != nil {
			t.Fatal(err)
		}
		if err := m.Set(ctx, netmesh.PublishedPort{ServiceID: "dns", Protocol: netmesh.UDP, Port: 5353, Backends: udpBackends}); err != nil {
			t.Fatal(err)
		}
	}
	// From h0, through every node's published port: answers from both
	// backends (the node h0 itself, and h1 and h2 across the wire).
	client := lab.Hosts[0].Name
	for _, h := range lab.Hosts {
		seen := map[string]int{}
		for range 30 {
			body, err := get(client, fmt.Sprintf("http://%s:8080/", h.Addr))
			if err != nil {
				t.Fatalf("via %s: %v", h.Addr, err)
			}
			seen[body]++
		}
		if len(seen) != 2 {
			t.Fatalf("via %s: answers %v, want both backends", h.Addr, seen)
		}
	}
	// UDP through the mesh.
	if err := nettest.Do(client, func() error {
		c, err := net.Dial("udp", lab.Hosts[1].Addr.String()+":5353")
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
		t.Fatalf("udp through the mesh: %v", err)
	}
	// Internal load balancing: a task on the network reaches the service
	// by its VIP, balanced over both backends, from its own namespace.
	clientTask, err := lab.NewNamespace("client")
	if err != nil {
		t.Fatal(err)
	}
	clientAddr := netip.MustParseAddr("10.255.2.1")
	if err := overlays[0].Attach(ingress, "/var/run/netns/"+clientTask, "eth0", clientAddr); err != nil {
		t.Fatal(err)
	}
	eps = append(eps, netmesh.RemoteEndpoint{Addr: clientAddr, Host: lab.Hosts[0].Addr})
	for _, o := range overlays {
		if err := o.SetEndpoints(ingress, eps); err != nil {
			t.Fatal(err)
		}
	}
	lb := &netmesh.ServiceLB{NetNS: "/var/run/netns/" + clientTask}
	if err := lb.Start(ctx); err != nil {
		t.Fatal(err)
	}
	vip := netip.MustParseAddr("10.255.255.1")
	if err := lb.Set(ctx, netmesh.VIPService{ServiceID: "web", VIP: vip, Protocol: netmesh.TCP, Port: 80, Backends: backends}); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for range 30 {
		body, err := get(clientTask, "http://10.255.255.1:80/")
		if err != nil {
			t.Fatalf("VIP from a task: %v", err)
		}
		seen[body]++
	}
	if len(seen) != 2 {
		t.Fatalf("VIP answers %v, want both backends", seen)
	}
	lb.Set(ctx, netmesh.VIPService{ServiceID: "web", VIP: vip, Protocol: netmesh.TCP, Port: 80, Backends: backends[:1]})
	for range 10 {
		if body, err := get(clientTask, "http://10.255.255.1:80/"); err != nil || body != "backend-0" {
			t.Fatalf("VIP after removing backend-1: %q %v", body, err)
		}
	}
	if err := lb.Remove(ctx, vip, netmesh.TCP, 80); err != nil {
		t.Fatal(err)
	}
	if _, err := get(clientTask, "http://10.255.255.1:80/"); err == nil {
		t.Fatal("VIP answered after its service was removed")
	}
	lb.Close()

	// An established connection to a backend that is taken out does not
	// hang: its conntrack entry goes, and its next request fails at once.
	var keep net.Conn
	if err := nettest.Do(client, func() (err error) {
		keep, err = net.DialTimeout("tcp", lab.Hosts[2].Addr.String()+":8080", 2*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer keep.Close()
	br := bufio.NewReader(keep)
	req, _ := http.NewRequest("GET", "http://mesh/", nil)
	ask := func() (string, error) {
		keep.SetDeadline(time.Now().Add(2 * time.Second))
		if err := req.Write(keep); err != nil {
			return "", err
		}
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	first, err := ask()
	if err != nil {
		t.Fatal(err)
	}
	var others []netmesh.Backend
	for i, b := range backends {
		if fmt.Sprint("backend-", i) != first {
			others = append(others, b)
		}
	}
	meshes[2].Set(ctx, netmesh.PublishedPort{ServiceID: "web", Protocol: netmesh.TCP, Port: 8080, Backends: others})
	t0 := time.Now()
	if body, err := ask(); err == nil || time.Since(t0) > time.Second {
		t.Fatalf("connection to removed %s: answered %q, err %v after %v; want a prompt failure", first, body, err, time.Since(t0))
	}
	// The mesh says which connections it cut: this one, live, named
	// first, before the closed ones of the earlier requests (a
	// connection cut by mistake is otherwise invisible).
	var cutBackend netip.Addr
	for i, b := range backends {
		if fmt.Sprint("backend-", i) == first {
			cutBackend = b.Addr
		}
	}
	cutLine := "live=1 count="
	firstCut := fmt.Sprintf(`connections="%s->%s:80`, keep.LocalAddr(), cutBackend)
	if log := meshLogs[2].String(); !strings.Contains(log, "level=INFO msg=\"netmesh: connections to removed backends reset\"") || !strings.Contains(log, cutLine) || !strings.Contains(log, firstCut) {
		t.Fatalf("mesh log does not name the live connection it cut first (%q, %q):\n%s", cutLine, firstCut, log)
	}
	// Both back, through the netlink fast path (an existing service): the
	// numgen map spreads over both again.
	meshes[2].Set(ctx, netmesh.PublishedPort{ServiceID: "web", Protocol: netmesh.TCP, Port: 8080, Backends: backends})
	spread := map[string]int{}
	for range 30 {
		body, err := get(client, fmt.Sprintf("http://%s:8080/", lab.Hosts[2].Addr))
		if err != nil {
			t.Fatalf("after the fast-path update: %v", err)
		}
		spread[body]++
	}
	if len(spread) != 2 {
		t.Fatalf("after the fast-path update answers %v, want both backends", spread)
	}

	// A backend taken out is out at once.
	for _, m := range meshes {
		m.Set(ctx, netmesh.PublishedPort{ServiceID: "web", Protocol: netmesh.TCP, Port: 8080, Backends: backends[1:]})
	}
	for range 15 {
		if body, err := get(client, fmt.Sprintf("http://%s:8080/", lab.Hosts[2].Addr)); err != nil || body != "backend-1" {
			t.Fatalf("after removing backend-0: %q %v", body, err)
		}
	}
	// Host mode: published on h1 only, to its local task's gateway address
	// (as Docker does), and the task sees the client's own address (no
	// masquerade); the replies leave through the gateway network, the
	// task's default route.
	var seenMu sync.Mutex
	var seenFrom string
	hostNS, _ := lab.NewNamespace("hosttask")
	gw := &netmesh.Gateway{NetNS: "/var/run/netns/" + lab.Hosts[1].Name}
	if err := gw.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	hostTaskAddr := netip.MustParseAddr("172.18.0.7")
	if err := gw.Attach("/var/run/netns/"+hostNS, "eth1", hostTaskAddr); err != nil {
		t.Fatal(err)
	}
	var hostLn net.Listener
	if err := nettest.Do(hostNS, func() (err error) { hostLn, err = net.Listen("tcp", hostTaskAddr.String()+":80"); return }); err != nil {
		t.Fatal(err)
	}
	hostSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seenMu.Lock()
		seenFrom, _, _ = net.SplitHostPort(r.RemoteAddr)
		seenMu.Unlock()
		io.WriteString(w, "host-task")
	})}
	go hostSrv.Serve(hostLn)
	defer hostSrv.Close()
	if err := meshes[1].Set(ctx, netmesh.PublishedPort{ServiceID: "hm", Protocol: netmesh.TCP, Port: 9090, HostMode: true,
		Backends: []netmesh.Backend{{Addr: hostTaskAddr, Port: 80}}}); err != nil {
		t.Fatal(err)
	}
	if body, err := get(client, fmt.Sprintf("http://%s:9090/", lab.Hosts[1].Addr)); err != nil || body != "host-task" {
		t.Fatalf("host-mode port on its node: %q %v", body, err)
	}
	seenMu.Lock()
	from := seenFrom
	seenMu.Unlock()
	if from != lab.Hosts[0].Addr.String() {
		t.Fatalf("host-mode task saw the client as %s, want %s (not masqueraded)", from, lab.Hosts[0].Addr)
	}
	if _, err := get(client, fmt.Sprintf("http://%s:9090/", lab.Hosts[0].Addr)); err == nil {
		t.Fatal("host-mode port answered on a node without the task")
	}

	// No backend: refused, not hanging.
	meshes[1].Set(ctx, netmesh.PublishedPort{ServiceID: "web", Protocol: netmesh.TCP, Port: 8080})
	t0 = time.Now()
	if _, err := get(client, fmt.Sprintf("http://%s:8080/", lab.Hosts[1].Addr)); err == nil || time.Since(t0) > time.Second {
		t.Fatalf("no backends: err %v after %v, want a quick refusal", err, time.Since(t0))
	}
	// Unpublished: nothing listens on the node itself.
	meshes[2].Remove(ctx, netmesh.TCP, 8080)
	if _, err := get(client, fmt.Sprintf("http://%s:8080/", lab.Hosts[2].Addr)); err == nil {
		t.Fatal("answered on an unpublished port")
	}
}
