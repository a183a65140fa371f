// Command meshbench measures netmesh on network-namespace test hosts and
// prints: overlay TCP throughput against the underlay (1 and 4 streams),
// encrypted overlay (WireGuard) throughput against the plain overlay,
// routing-mesh throughput against going direct to the same backend (backend
// on the same node, and on another one), HTTP keep-alive requests/s through
// the mesh against direct, the time a routing-mesh change takes with 10 and
// with 1,000 published services of 10 backends (and with 10,000 connections
// tracked on the node), DNS latency inside a task, and the time gossip
// takes to spread an endpoint. Throughput comes from iperf3 and HTTP rates
// from wrk, in separate processes pinned to the two cores (client on 0,
// server on 1), in interleaved rounds, as medians. It needs root, iproute2,
// nftables, iperf3 and wrk (-only rules needs neither).
//
//	go run ./examples/meshbench            # 5 rounds of 3 s per case
//	go run ./examples/meshbench -quick
//	go run ./examples/meshbench -only rules -cpuprofile rules.prof
package main

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/shoalproject/shoal/internal/nettest"
	"github.com/shoalproject/shoal/netmesh"
)

func main() {
	// SIGINT or SIGTERM (a CI time limit) ends the run through ctx, so
	// that the deferred clean-up removes the namespaces it made.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx)
	stop()
	if err != nil {
		log.Fatal(err)
	}
}

// gossipWait bounds each wait on gossip (members joined, an endpoint
// known everywhere): its target is 1 s.
const gossipWait = 30 * time.Second

// waitUntil polls cond every tick until it holds, ctx ends or gossipWait
// passes, and says which.
func waitUntil(ctx context.Context, what string, tick time.Duration, cond func() bool) error {
	deadline := time.Now().Add(gossipWait)
	for !cond() {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not after %v", what, gossipWait)
		}
		time.Sleep(tick)
	}
	return nil
}

var dur time.Duration

func run(ctx context.Context) error {
	quick := flag.Bool("quick", false, "short runs (CI)")
	rounds := flag.Int("rounds", 5, "rounds of throughput runs (medians are reported)")
	flag.DurationVar(&dur, "duration", 3*time.Second, "length of each throughput run")
	serve := flag.String("serve-http", "", "(internal) serve HTTP on this address and do nothing else")
	only := flag.String("only", "", "run one part only: rules (the routing-mesh change)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the rule changes to this file (with -only rules)")
	flag.Parse()
	if *serve != "" {
		return serveHTTP(*serve)
	}
	services := 1000
	if *quick {
		dur, services, *rounds = time.Second, 100, 1
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("meshbench needs root (it makes network namespaces)")
	}
	if *only == "rules" {
		lab, err := nettest.NewLab(1)
		if err != nil {
			return err
		}
		defer lab.Close()
		return ruleChanges(ctx, lab.Hosts[0], services, *cpuProfile)
	} else if *only != "" {
		return fmt.Errorf("-only %q: want rules", *only)
	}
	for _, tool := range []string{"iperf3", "wrk", "taskset"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("meshbench measures throughput with iperf3 and HTTP with wrk: apt-get install iperf3 wrk util-linux (scripts/test.sh does)")
		}
	}
	lab, err := nettest.NewLab(2)
	if err != nil {
		return err
	}
	defer lab.Close()
	h0, h1 := lab.Hosts[0], lab.Hosts[1]
	net1 := netmesh.OverlayNetwork{ID: "bench", VNI: 4200, Subnet: netip.MustParsePrefix("10.20.0.0/16")}
	var overlays []*netmesh.Overlay
	var eps []netmesh.RemoteEndpoint
	for i, h := range lab.Hosts {
		o := &netmesh.Overlay{NetNS: "/var/run/netns/" + h.Name, LocalAddr: h.Addr}
		if err := o.Start(); err != nil {
			return err
		}
		defer o.Close()
		if err := o.EnsureNetwork(net1); err != nil {
			return err
		}
		nodeAddr := netip.AddrFrom4([4]byte{10, 20, 0, byte(10 + i)})
		if err := o.SetNodeAddr(net1, nodeAddr); err != nil {
			return err
		}
		eps = append(eps, netmesh.RemoteEndpoint{Addr: nodeAddr, Host: h.Addr})
		overlays = append(overlays, o)
	}
	// Tasks: t0 on h0, t1 on h1.
	tasks := []string{}
	taskAddrs := []netip.Addr{netip.MustParseAddr("10.20.1.1"), netip.MustParseAddr("10.20.1.2")}
	for i := range 2 {
		ns, err := lab.NewNamespace(fmt.Sprint("t", i))
		if err != nil {
			return err
		}
		if err := overlays[i].Attach(net1, "/var/run/netns/"+ns, "eth0", taskAddrs[i]); err != nil {
			return err
		}
		tasks = append(tasks, ns)
		eps = append(eps, netmesh.RemoteEndpoint{Addr: taskAddrs[i], Host: lab.Hosts[i].Addr})
	}
	for _, o := range overlays {
		if err := o.SetEndpoints(net1, eps); err != nil {
			return err
		}
	}
	// An encrypted network with a task on each node.
	encNet := netmesh.OverlayNetwork{ID: "benchenc", VNI: 4201, Subnet: netip.MustParsePrefix("10.30.0.0/24"), Encrypted: true}
	keys := map[netip.Addr]netmesh.WireGuardKey{}
	for i, o := range overlays {
		keys[lab.Hosts[i].Addr] = o.PublicKey()
	}
	var encTasks []string
	var encEps []netmesh.RemoteEndpoint
	encAddrs := []netip.Addr{netip.MustParseAddr("10.30.0.2"), netip.MustParseAddr("10.30.0.3")}
	for i, o := range overlays {
		if err := o.SetPeerKeys(keys); err != nil {
			return err
		}
		if err := o.EnsureNetwork(encNet); err != nil {
			return err
		}
		ns, err := lab.NewNamespace(fmt.Sprint("e", i))
		if err != nil {
			return err
		}
		if err := o.Attach(encNet, "/var/run/netns/"+ns, "eth0", encAddrs[i]); err != nil {
			return err
		}
		encTasks = append(encTasks, ns)
		encEps = append(encEps, netmesh.RemoteEndpoint{Addr: encAddrs[i], Host: lab.Hosts[i].Addr})
	}
	for _, o := range overlays {
		if err := o.SetEndpoints(encNet, encEps); err != nil {
			return err
		}
	}

	// Throughput: iperf3 servers on h1's underlay address, in t1 and in e1,
	// each its own process, as a user's traffic would be.
	for _, srv := range [][2]string{{h1.Name, h1.Addr.String()}, {tasks[1], taskAddrs[1].String()}, {encTasks[1], encAddrs[1].String()}} {
		stop, err := iperfServer(srv[0], srv[1])
		if err != nil {
			return err
		}
		defer stop()
	}
	// Routing mesh: port 8080 on both nodes leads to t1's iperf3.
	var meshes []*netmesh.RoutingMesh
	for _, h := range lab.Hosts {
		m := &netmesh.RoutingMesh{NetNS: "/var/run/netns/" + h.Name}
		if err := m.Start(ctx); err != nil {
			return err
		}
		defer m.Close()
		if err := m.Set(ctx, netmesh.PublishedPort{ServiceID: "sink", Protocol: netmesh.TCP, Port: 8080, Backends: []netmesh.Backend{{Addr: taskAddrs[1], Port: 5201}}}); err != nil {
			return err
		}
		meshes = append(meshes, m)
	}
	type run struct {
		name        string
		ns, addr    string
		port, conns int
	}
	runs := []run{
		{"underlay 1", h0.Name, h1.Addr.String(), 5201, 1},
		{"overlay 1", tasks[0], taskAddrs[1].String(), 5201, 1},
		{"encrypted 1", encTasks[0], encAddrs[1].String(), 5201, 1},
		{"underlay 4", h0.Name, h1.Addr.String(), 5201, 4},
		{"overlay 4", tasks[0], taskAddrs[1].String(), 5201, 4},
		{"encrypted 4", encTasks[0], encAddrs[1].String(), 5201, 4},
		{"direct local", h1.Name, taskAddrs[1].String(), 5201, 1},
		{"mesh local", h1.Name, h1.Addr.String(), 8080, 1},
		{"direct remote", h0.Name, taskAddrs[1].String(), 5201, 1},
		{"mesh remote", h0.Name, h0.Addr.String(), 8080, 1},
	}
	// Rounds interleave the cases, so a slow spell of the machine hits
	// every case alike; ratios are of medians.
	gbps := map[string][]float64{}
	for range *rounds {
		for _, r := range runs {
			g, err := iperf(ctx, r.ns, r.addr, r.port, r.conns)
			if err != nil {
				return fmt.Errorf("%s: %w", r.name, err)
			}
			gbps[r.name] = append(gbps[r.name], g)
		}
	}
	med := func(name string) float64 { return median(gbps[name]) }
	spread := func(name string) string {
		v := slices.Clone(gbps[name])
		slices.Sort(v)
		return fmt.Sprintf("%.2f..%.2f", v[0], v[len(v)-1])
	}
	fmt.Printf("meshbench: 2 test hosts, iperf3 (separate processes), %d rounds of %v per case, medians (range)\n\n", *rounds, dur)
	fmt.Println("== overlay (VXLAN) TCP throughput / underlay")
	for _, streams := range []int{1, 4} {
		u, o := fmt.Sprint("underlay ", streams), fmt.Sprint("overlay ", streams)
		target := map[int]float64{1: 0.9, 4: 0.7}[streams]
		fmt.Printf("  %d stream(s): underlay %.2f Gbit/s (%s), overlay %.2f Gbit/s (%s), ratio %.2f [target >= %.1f]\n",
			streams, med(u), spread(u), med(o), spread(o), med(o)/med(u), target)
	}
	fmt.Printf("\n== encrypted overlay (WireGuard, %s) TCP throughput / plain overlay\n", overlays[0].WireGuardBackend())
	for _, streams := range []int{1, 4} {
		o, e := fmt.Sprint("overlay ", streams), fmt.Sprint("encrypted ", streams)
		fmt.Printf("  %d stream(s): encrypted %.2f Gbit/s (%s), ratio to plain overlay %.2f, to underlay %.2f\n",
			streams, med(e), spread(e), med(e)/med(o), med(e)/med(fmt.Sprint("underlay ", streams)))
	}
	fmt.Printf("\n== routing mesh (%s) throughput / direct to the same backend, 1 stream\n", meshes[0].Backend())
	fmt.Printf("  backend on the same node: mesh %.2f Gbit/s, direct %.2f Gbit/s, ratio %.2f [target >= 0.9]\n",
		med("mesh local"), med("direct local"), med("mesh local")/med("direct local"))
	fmt.Printf("  backend on another node:  mesh %.2f Gbit/s, direct %.2f Gbit/s, ratio %.2f [target >= 0.8]\n",
		med("mesh remote"), med("direct remote"), med("mesh remote")/med("direct remote"))

	// HTTP keep-alive through the mesh vs direct: wrk against this
	// program's own HTTP server, each a process of its own on its own core.
	stopHTTP, err := httpServer(tasks[1], taskAddrs[1].String()+":80")
	if err != nil {
		return err
	}
	defer stopHTTP()
	for _, m := range meshes {
		m.Set(ctx, netmesh.PublishedPort{ServiceID: "web", Protocol: netmesh.TCP, Port: 8081, Backends: []netmesh.Backend{{Addr: taskAddrs[1], Port: 80}}})
	}
	var direct, mesh []float64
	var directP50, meshP50 []string
	for range *rounds {
		for _, c := range []struct {
			addr string
			rate *[]float64
			p50  *[]string
		}{{taskAddrs[1].String() + ":80", &direct, &directP50}, {h0.Addr.String() + ":8081", &mesh, &meshP50}} {
			r, p50, err := httpRate(ctx, h0.Name, c.addr)
			if err != nil {
				return err
			}
			*c.rate = append(*c.rate, r)
			*c.p50 = append(*c.p50, p50)
		}
	}
	md, mm := median(direct), median(mesh)
	fmt.Printf("\n== HTTP keep-alive requests/s (wrk, 4 connections), backend on another node\n  direct %.0f/s (p50 %s), through the mesh %.0f/s (p50 %s), ratio %.2f [target >= 0.9]\n",
		md, directP50[len(directP50)/2], mm, meshP50[len(meshP50)/2], mm/md)

	// Rule updates.
	if err := ruleChanges(ctx, h0, services, ""); err != nil {
		return err
	}

	// DNS inside a task.
	reg := &netmesh.Registry{}
	reg.SetService(netmesh.ServiceEndpoint{ID: "s", Name: "web", Mode: netmesh.VIP, VIPs: map[string]netip.Addr{"bench": netip.MustParseAddr("10.20.255.1")}})
	d := &netmesh.DNS{Addr: "127.0.0.11:53", Registry: reg, Networks: []string{"bench"}}
	if err := nettest.Do(tasks[0], func() error { return d.Start(ctx) }); err != nil {
		return err
	}
	defer d.Close()
	<-d.Ready()
	var lat []time.Duration
	var conn *dns.Conn
	if err := nettest.Do(tasks[0], func() (err error) { conn, err = dns.Dial("udp", "127.0.0.11:53"); return }); err != nil {
		return err
	}
	defer conn.Close()
	q := new(dns.Msg)
	q.SetQuestion("web.", dns.TypeA)
	for range 2000 {
		t := time.Now()
		if err := conn.WriteMsg(q); err != nil {
			return err
		}
		if _, err := conn.ReadMsg(); err != nil {
			return err
		}
		lat = append(lat, time.Since(t))
	}
	slices.Sort(lat)
	fmt.Printf("\n== DNS inside a task (2,000 queries for a service name)\n  p50 %v, p99 %v [target p99 <= 1 ms]\n", lat[len(lat)/2].Round(time.Microsecond), lat[len(lat)*99/100].Round(time.Microsecond))
	// Gossip: a new endpoint on one node until all 3 know it.
	key := []byte("meshbench-gossip-key-32-bytes!!!")
	var gs []*netmesh.Gossip
	nodeKeys := map[string]crypto.PublicKey{}
	for i := range 3 {
		_, signer, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return err
		}
		g := &netmesh.Gossip{Name: fmt.Sprint("g", i), BindAddr: "127.0.0.1", HostAddr: netip.AddrFrom4([4]byte{192, 0, 2, byte(100 + i)}), Key: key, Signer: signer, Fast: true}
		nodeKeys[g.Name] = signer.Public()
		if err := g.Start(ctx); err != nil {
			return err
		}
		defer g.Close()
		gs = append(gs, g)
	}
	first, err := gs[0].Addr()
	if err != nil {
		return err
	}
	for _, g := range gs {
		if err := g.SetNodeKeys(nodeKeys); err != nil {
			return err
		}
	}
	for _, g := range gs[1:] {
		if _, err := g.Join(ctx, []string{first}); err != nil {
			return err
		}
	}
	if err := waitUntil(ctx, "3 gossip members", 5*time.Millisecond, func() bool { return gs[2].Members() >= 3 }); err != nil {
		return err
	}
	var conv []time.Duration
	for i := range 10 {
		addr := netip.AddrFrom4([4]byte{10, 40, 0, byte(1 + i)})
		t := time.Now()
		gs[i%3].SetLocalEndpoints("bench", []netip.Addr{addr})
		known := func() bool {
			for _, g := range gs {
				if !slices.ContainsFunc(g.Endpoints("bench"), func(e netmesh.RemoteEndpoint) bool { return e.Addr == addr }) {
					return false
				}
			}
			return true
		}
		if err := waitUntil(ctx, fmt.Sprintf("endpoint %s on all 3 gossip nodes", addr), time.Millisecond, known); err != nil {
			return err
		}
		conv = append(conv, time.Since(t))
	}
	slices.Sort(conv)
	fmt.Printf("\n== gossip (memberlist, encrypted) on loopback: a new endpoint reaches all 3 nodes\n  median %v, max %v [target <= 1 s]\n", conv[len(conv)/2].Round(time.Millisecond), conv[len(conv)-1].Round(time.Millisecond))
	return nil
}

// iperfServer runs an iperf3 server in a namespace, bound to addr, until
// the returned stop is called.
func iperfServer(ns, addr string) (stop func(), err error) {
	cmd := exec.Command("ip", "netns", "exec", ns, "iperf3", "-s", "-B", addr, "-p", "5201")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stop = func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	}
	// Wait until it listens.
	for range 100 {
		if nettest.Do(ns, func() error {
			c, err := net.DialTimeout("tcp", net.JoinHostPort(addr, "5201"), 100*time.Millisecond)
			if err == nil {
				c.Close()
			}
			return err
		}) == nil {
			return stop, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	return nil, fmt.Errorf("iperf3 server on %s in %s did not start", addr, ns)
}

// iperf runs an iperf3 client in a namespace for dur over conns streams and
// returns the Gbit/s the server received.
func iperf(ctx context.Context, ns, addr string, port, conns int) (float64, error) {
	secs := fmt.Sprintf("%.1f", dur.Seconds())
	var out []byte
	var err error
	for try := 0; try < 3; try++ { // the server takes one test at a time and may still be closing the last
		out, err = exec.CommandContext(ctx, "ip", "netns", "exec", ns, "iperf3", "-c", addr, "-p", fmt.Sprint(port),
			"-t", secs, "-P", fmt.Sprint(conns), "-J", "-A", "0,1").Output()
		if err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if jerr := json.Unmarshal(out, &res); jerr != nil || err != nil || res.Error != "" {
		return 0, fmt.Errorf("iperf3 to %s:%d from %s: %v %v %s", addr, port, ns, err, jerr, res.Error)
	}
	return res.End.SumReceived.BitsPerSecond / 1e9, nil
}

func median(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}

// httpServer runs this program as an HTTP server (-serve-http) in a
// namespace, on core 1, until the returned stop is called.
func httpServer(ns, addr string) (stop func(), err error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("ip", "netns", "exec", ns, "taskset", "-c", "1", self, "-serve-http", addr)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stop = func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	}
	for range 100 {
		if nettest.Do(ns, func() error {
			c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
			if err == nil {
				c.Close()
			}
			return err
		}) == nil {
			return stop, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	return nil, fmt.Errorf("HTTP server on %s in %s did not start", addr, ns)
}

func serveHTTP(addr string) error {
	return http.ListenAndServe(addr, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }))
}

// httpRate runs wrk (one thread, 4 keep-alive connections, core 0) from a
// namespace for dur and returns requests/s and the median latency.
func httpRate(ctx context.Context, ns, addr string) (float64, string, error) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "taskset", "-c", "0", "wrk", "-t1", "-c4",
		fmt.Sprintf("-d%ds", max(1, int(dur.Seconds()))), "--latency", "http://"+addr+"/").CombinedOutput()
	if err != nil {
		return 0, "", fmt.Errorf("wrk %s: %v: %s", addr, err, out)
	}
	var rate float64
	p50 := "?"
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == "Requests/sec:" {
			rate, _ = strconv.ParseFloat(f[1], 64)
		}
		if len(f) == 2 && f[0] == "50%" {
			p50 = f[1]
		}
	}
	if rate == 0 {
		return 0, "", fmt.Errorf("wrk %s: no rate in %s", addr, out)
	}
	return rate, p50, nil
}

// ruleChanges measures a routing-mesh change (all 10 backends of one
// service replaced) with 10 and with n published services, and with n
// services on a node that tracks 10,000 connections of other services, as
// the median of 20; with a profile path, it writes a CPU profile of 200
// more changes with n services.
func ruleChanges(ctx context.Context, h *nettest.Host, n int, profile string) error {
	fmt.Println("\n== routing-mesh change (one backend set of one service), median of 20")
	for _, c := range []struct{ services, tracked int }{{10, 0}, {n, 0}, {n, 10000}} {
		m := &netmesh.RoutingMesh{NetNS: "/var/run/netns/" + h.Name, Table: "bench-rules"}
		if err := m.Start(ctx); err != nil {
			return err
		}
		backends := func(shift int) []netmesh.Backend {
			var b []netmesh.Backend
			for j := range 10 {
				b = append(b, netmesh.Backend{Addr: netip.AddrFrom4([4]byte{10, 30, byte(j), byte(1 + shift)}), Port: 80})
			}
			return b
		}
		t0 := time.Now()
		for s := range c.services {
			if err := m.Set(ctx, netmesh.PublishedPort{ServiceID: fmt.Sprint(s), Protocol: netmesh.TCP, Port: uint16(20000 + s), Backends: backends(0)}); err != nil {
				return err
			}
		}
		install := time.Since(t0)
		if err := trackConnections(h, c.tracked); err != nil {
			return err
		}
		change := func(i int) (time.Duration, error) {
			t := time.Now()
			err := m.Set(ctx, netmesh.PublishedPort{ServiceID: "0", Protocol: netmesh.TCP, Port: 20000 + uint16(i%c.services), Backends: backends(1 + i%2)})
			return time.Since(t), err
		}
		var lat []time.Duration
		for i := range 20 {
			d, err := change(i)
			if err != nil {
				return err
			}
			lat = append(lat, d)
		}
		slices.Sort(lat)
		conns := ""
		if c.tracked > 0 {
			conns = fmt.Sprintf(", %d connections tracked", c.tracked)
		}
		fmt.Printf("  %4d services x 10 backends%s (installed in %v): change takes %v (min %v, max %v) [target <= 10 ms, independent of the count]\n",
			c.services, conns, install.Round(time.Millisecond), lat[len(lat)/2].Round(10*time.Microsecond), lat[0].Round(10*time.Microsecond), lat[len(lat)-1].Round(10*time.Microsecond))
		if profile != "" && c.services == n && c.tracked == 0 {
			f, err := os.Create(profile)
			if err != nil {
				return err
			}
			if err := pprof.StartCPUProfile(f); err != nil {
				return err
			}
			t := time.Now()
			for i := range 200 {
				if _, err := change(i); err != nil {
					return err
				}
			}
			pprof.StopCPUProfile()
			f.Close()
			fmt.Printf("  profiled 200 changes: %v each on average\n", (time.Since(t) / 200).Round(10*time.Microsecond))
		}
		m.Close()
		if err := trackConnections(h, 0); err != nil {
			return err
		}
	}
	return nil
}

// trackConnections makes the host's conntrack table hold n established
// TCP connections of another published port (40000), as a busy node's
// does; 0 empties it.
func trackConnections(h *nettest.Host, n int) error {
	ns, err := netns.GetFromName(h.Name)
	if err != nil {
		return err
	}
	defer ns.Close()
	nl, err := netlink.NewHandleAt(ns, unix.NETLINK_NETFILTER)
	if err != nil {
		return err
	}
	defer nl.Close()
	if n == 0 {
		return nl.ConntrackTableFlush(netlink.ConntrackTable)
	}
	for i := range n {
		client := net.IPv4(192, 0, 2, byte(100+i/50000))
		port := uint16(1024 + i%50000)
		f := &netlink.ConntrackFlow{FamilyType: unix.AF_INET, TimeOut: 600,
			Forward:   netlink.IPTuple{SrcIP: client, DstIP: h.Addr.AsSlice(), Protocol: unix.IPPROTO_TCP, SrcPort: port, DstPort: 40000},
			Reverse:   netlink.IPTuple{SrcIP: net.IPv4(10, 31, byte(i%7), 9), DstIP: client, Protocol: unix.IPPROTO_TCP, SrcPort: 80, DstPort: port},
			ProtoInfo: &netlink.ProtoInfoTCP{State: 3}} // established
		if err := nl.ConntrackCreate(netlink.ConntrackTable, unix.AF_INET, f); err != nil {
			return fmt.Errorf("conntrack entry %d: %w", i, err)
		}
	}
	return nil
}
