// Command meshbench measures netmesh on network-namespace test hosts and
// prints: overlay TCP throughput against the underlay (1 and 4 streams),
// routing-mesh throughput against going direct to the same backend (backend
// on the same node, and on another one), HTTP keep-alive requests/s through
// the mesh against direct, the time a routing-mesh change takes with 10 and
// with 1,000 published services of 10 backends, and DNS latency inside a
// task. It needs root, iproute2 and nftables.
//
//	go run ./examples/meshbench            # 3 s per throughput run
//	go run ./examples/meshbench -quick
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/shoalproject/shoal/internal/nettest"
	"github.com/shoalproject/shoal/netmesh"
)

func main() {
	if err := run(context.Background()); err != nil {
		log.Fatal(err)
	}
}

var dur time.Duration

func run(ctx context.Context) error {
	quick := flag.Bool("quick", false, "short runs (CI)")
	flag.DurationVar(&dur, "duration", 3*time.Second, "length of each throughput run")
	flag.Parse()
	services := 1000
	if *quick {
		dur, services = 500*time.Millisecond, 100
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("meshbench needs root (it makes network namespaces)")
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
	// Sinks: on h1's underlay address, and in t1.
	if err := sink(h1.Name, h1.Addr.String()+":5001"); err != nil {
		return err
	}
	if err := sink(tasks[1], taskAddrs[1].String()+":5001"); err != nil {
		return err
	}
	fmt.Printf("meshbench: 2 test hosts, %v per throughput run\n\n", dur)
	fmt.Println("== overlay (VXLAN) TCP throughput / underlay")
	for _, streams := range []int{1, 4} {
		under := throughput(h0.Name, h1.Addr.String()+":5001", streams)
		over := throughput(tasks[0], taskAddrs[1].String()+":5001", streams)
		target := 0.9
		if streams == 4 {
			target = 0.7
		}
		fmt.Printf("  %d stream(s): underlay %.2f Gbit/s, overlay %.2f Gbit/s, ratio %.2f [target >= %.1f]\n", streams, under, over, over/under, target)
	}

	// Routing mesh: port 8080 on both nodes leads to t1:5001.
	ctx2 := ctx
	var meshes []*netmesh.RoutingMesh
	for _, h := range lab.Hosts {
		m := &netmesh.RoutingMesh{NetNS: "/var/run/netns/" + h.Name}
		if err := m.Start(ctx2); err != nil {
			return err
		}
		defer m.Close()
		if err := m.Set(ctx2, netmesh.PublishedPort{ServiceID: "sink", Protocol: netmesh.TCP, Port: 8080, Backends: []netmesh.Backend{{Addr: taskAddrs[1], Port: 5001}}}); err != nil {
			return err
		}
		meshes = append(meshes, m)
	}
	fmt.Printf("\n== routing mesh (%s) throughput / direct to the same backend, 1 stream\n", meshes[0].Backend())
	local := throughput(h1.Name, h1.Addr.String()+":8080", 1) / throughput(h1.Name, taskAddrs[1].String()+":5001", 1)
	remote := throughput(h0.Name, h0.Addr.String()+":8080", 1) / throughput(h0.Name, taskAddrs[1].String()+":5001", 1)
	fmt.Printf("  backend on the same node: ratio %.2f [target >= 0.9]\n  backend on another node:  ratio %.2f [target >= 0.8]\n", local, remote)

	// HTTP keep-alive through the mesh vs direct.
	if err := httpServer(tasks[1], taskAddrs[1].String()+":80"); err != nil {
		return err
	}
	for _, m := range meshes {
		m.Set(ctx2, netmesh.PublishedPort{ServiceID: "web", Protocol: netmesh.TCP, Port: 8081, Backends: []netmesh.Backend{{Addr: taskAddrs[1], Port: 80}}})
	}
	direct := httpRate(h0.Name, taskAddrs[1].String()+":80")
	mesh := httpRate(h0.Name, h0.Addr.String()+":8081")
	fmt.Printf("\n== HTTP keep-alive requests/s, 4 connections, backend on another node\n  direct %.0f/s, through the mesh %.0f/s, ratio %.2f [target >= 0.9]\n", direct, mesh, mesh/direct)

	// Rule updates.
	fmt.Println("\n== routing-mesh change (one backend of one service), median of 20")
	for _, n := range []int{10, services} {
		m := &netmesh.RoutingMesh{NetNS: "/var/run/netns/" + h0.Name, Table: "bench-rules"}
		if err := m.Start(ctx2); err != nil {
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
		for s := range n {
			if err := m.Set(ctx2, netmesh.PublishedPort{ServiceID: fmt.Sprint(s), Protocol: netmesh.TCP, Port: uint16(20000 + s), Backends: backends(0)}); err != nil {
				return err
			}
		}
		install := time.Since(t0)
		var lat []time.Duration
		for i := range 20 {
			t := time.Now()
			if err := m.Set(ctx2, netmesh.PublishedPort{ServiceID: "0", Protocol: netmesh.TCP, Port: 20000 + uint16(i%n), Backends: backends(1 + i%2)}); err != nil {
				return err
			}
			lat = append(lat, time.Since(t))
		}
		slices.Sort(lat)
		fmt.Printf("  %4d services x 10 backends (installed in %v): change takes %v [target <= 10 ms, independent of the count]\n", n, install.Round(time.Millisecond), lat[len(lat)/2].Round(10*time.Microsecond))
		m.Close()
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
	for i := range 3 {
		g := &netmesh.Gossip{Name: fmt.Sprint("g", i), BindAddr: "127.0.0.1", HostAddr: netip.AddrFrom4([4]byte{192, 0, 2, byte(100 + i)}), Key: key, Fast: true}
		if err := g.Start(ctx); err != nil {
			return err
		}
		defer g.Close()
		gs = append(gs, g)
	}
	for _, g := range gs[1:] {
		if _, err := g.Join(ctx, []string{gs[0].Addr()}); err != nil {
			return err
		}
	}
	for gs[2].Members() < 3 {
		time.Sleep(5 * time.Millisecond)
	}
	var conv []time.Duration
	for i := range 10 {
		addr := netip.AddrFrom4([4]byte{10, 40, 0, byte(1 + i)})
		t := time.Now()
		gs[i%3].SetLocalEndpoints("bench", []netip.Addr{addr})
		for {
			all := true
			for _, g := range gs {
				if !slices.ContainsFunc(g.Endpoints("bench"), func(e netmesh.RemoteEndpoint) bool { return e.Addr == addr }) {
					all = false
				}
			}
			if all {
				break
			}
			time.Sleep(time.Millisecond)
		}
		conv = append(conv, time.Since(t))
	}
	slices.Sort(conv)
	fmt.Printf("\n== gossip (memberlist, encrypted) on loopback: a new endpoint reaches all 3 nodes\n  median %v, max %v [target <= 1 s]\n", conv[len(conv)/2].Round(time.Millisecond), conv[len(conv)-1].Round(time.Millisecond))
	fmt.Println("\nnot measured yet: encrypted overlay (not built)")
	return nil
}

// sink accepts connections in a namespace and discards what they send.
func sink(ns, addr string) error {
	var ln net.Listener
	if err := nettest.Do(ns, func() (err error) { ln, err = net.Listen("tcp", addr); return }); err != nil {
		return err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	return nil
}

// throughput sends from a namespace to addr over n connections for dur and
// returns Gbit/s.
func throughput(ns, addr string, n int) float64 {
	conns := make([]net.Conn, 0, n)
	for range n {
		var c net.Conn
		if err := nettest.Do(ns, func() (err error) { c, err = net.DialTimeout("tcp", addr, 2*time.Second); return }); err != nil {
			log.Fatalf("dial %s from %s: %v", addr, ns, err)
		}
		conns = append(conns, c)
	}
	var total atomic.Int64
	var wg sync.WaitGroup
	deadline := time.Now().Add(dur)
	buf := make([]byte, 128<<10)
	for _, c := range conns {
		wg.Go(func() {
			defer c.Close()
			for time.Now().Before(deadline) {
				k, err := c.Write(buf)
				total.Add(int64(k))
				if err != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	return float64(total.Load()) * 8 / dur.Seconds() / 1e9
}

func httpServer(ns, addr string) error {
	var ln net.Listener
	if err := nettest.Do(ns, func() (err error) { ln, err = net.Listen("tcp", addr); return }); err != nil {
		return err
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }))
	return nil
}

// httpRate runs 4 keep-alive connections of sequential requests for dur.
func httpRate(ns, addr string) float64 {
	var total atomic.Int64
	var wg sync.WaitGroup
	deadline := time.Now().Add(dur)
	for range 4 {
		var c net.Conn
		if err := nettest.Do(ns, func() (err error) { c, err = net.DialTimeout("tcp", addr, 2*time.Second); return }); err != nil {
			log.Fatalf("dial %s: %v", addr, err)
		}
		wg.Go(func() {
			defer c.Close()
			br := bufio.NewReader(c)
			req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
			for time.Now().Before(deadline) {
				if err := req.Write(c); err != nil {
					return
				}
				resp, err := http.ReadResponse(br, req)
				if err != nil {
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				total.Add(1)
			}
		})
	}
	wg.Wait()
	return float64(total.Load()) / dur.Seconds()
}
