package netagent_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/shoalproject/shoal/internal/nettest"
	"github.com/shoalproject/shoal/internal/waitfor"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/netagent"
)

// cluster is three lab hosts, each a node with its agent, and the view
// the managers would send them:
//
//	ingress  10.255.0.0/16  nodes .0.10-12
//	front    10.0.1.0/24    web.1 (n1) .11, web.2 (n2) .12, client.1 (n0) .20; VIPs web .2, client .3
//	back     10.0.2.0/24    internal; db.1 (n1) .10, VIP .2
//	secret   10.0.3.0/24    encrypted; vault.1 (n0) .10, vault.2 (n2) .11
//
// web publishes 8080 -> 80 (ingress mode, also on ingress 10.255.1.11-12);
// edge, a task on no network (n1), publishes 9090 -> 80 in host mode.
type cluster struct {
	lab    *nettest.Lab
	agents []*netagent.Agent
	b      *viewBuilder
	ns     map[string]string // task -> namespace path
}

func newCluster(t *testing.T) *cluster {
	lab := nettest.New(t, 3)
	up := upstream(t)
	c := &cluster{lab: lab, b: &viewBuilder{}, ns: map[string]string{}}
	for i, h := range lab.Hosts {
		c.agents = append(c.agents, newAgent(t, h, fmt.Sprint("n", i), stateDir(t, fmt.Sprint("n", i)), []string{up}, nil))
	}
	ingress := network("ingress", 4096, "10.255.0.0/16")
	ingress.Spec.Ingress = true
	back := network("back", 4098, "10.0.2.0/24")
	back.Spec.Internal = true
	secret := network("secret", 4099, "10.0.3.0/24")
	secret.Spec.Encrypted = true
	c.b.nets = []*api.Network{ingress, network("front", 4097, "10.0.1.0/24"), back, secret}
	for i, h := range lab.Hosts {
		c.b.nodes = append(c.b.nodes, &api.NodeEndpoint{ID: fmt.Sprint("n", i), DataAddr: h.Addr.String(), WireGuardKey: c.agents[i].PublicKey(),
			Attachments: []api.NetworkAttachment{{NetworkID: "ingress", Addresses: []string{fmt.Sprintf("10.255.0.%d/16", 10+i)}}}})
	}
	te := func(id, node string, ready bool, addrs ...string) *api.TaskEndpoint {
		m := map[string]string{}
		for i := 0; i < len(addrs); i += 2 {
			m[addrs[i]] = addrs[i+1]
		}
		return &api.TaskEndpoint{ID: id, Name: id + ".x", NodeID: node, Addrs: m, Ready: ready}
	}
	c.b.services = []*api.ServiceEndpoints{
		{ID: "web", Name: "web", VirtualIPs: []api.VirtualIP{{NetworkID: "front", Addr: "10.0.1.2/24"}, {NetworkID: "ingress", Addr: "10.255.0.2/16"}},
			Ports: []api.PortConfig{{Protocol: api.TCP, TargetPort: 80, PublishedPort: 8080}},
			Tasks: []*api.TaskEndpoint{te("web.1", "n1", true, "front", "10.0.1.11", "ingress", "10.255.1.11"),
				te("web.2", "n2", true, "front", "10.0.1.12", "ingress", "10.255.1.12")}},
		{ID: "client", Name: "client", VirtualIPs: []api.VirtualIP{{NetworkID: "front", Addr: "10.0.1.3/24"}},
			Tasks: []*api.TaskEndpoint{te("client.1", "n0", true, "front", "10.0.1.20")}},
		{ID: "db", Name: "db", VirtualIPs: []api.VirtualIP{{NetworkID: "back", Addr: "10.0.2.2/24"}}, Aliases: map[string][]string{"back": {"database"}},
			Tasks: []*api.TaskEndpoint{te("db.1", "n1", true, "back", "10.0.2.10")}},
		{ID: "vault", Name: "vault", Mode: api.EndpointDNSRR,
			Tasks: []*api.TaskEndpoint{te("vault.1", "n0", true, "secret", "10.0.3.10"), te("vault.2", "n2", true, "secret", "10.0.3.11")}},
		{ID: "edge", Name: "edge", Ports: []api.PortConfig{{TargetPort: 80, PublishedPort: 9090, PublishMode: api.PublishHost}},
			Tasks: []*api.TaskEndpoint{te("edge.1", "n1", true)}},
	}
	c.apply(t)
	for _, id := range []string{"web.1", "web.2", "client.1", "db.1", "vault.1", "vault.2", "edge.1"} {
		c.wire(t, id)
	}
	// The host-mode port needs edge.1's gateway address: the next Apply
	// (after TaskNetwork, as a worker's would be) has it.
	c.apply(t)
	return c
}

func (c *cluster) agent(node string) *netagent.Agent {
	for _, a := range c.agents {
		if a.NodeID == node {
			return a
		}
	}
	panic(node)
}

func (c *cluster) apply(t *testing.T) { t.Helper(); apply(t, c.b.view(), c.agents...) }

// wire gives a task its network on its node and starts its servers: HTTP
// on port 80 and 8081 answering its name, an echo on 9000.
func (c *cluster) wire(t *testing.T, id string) {
	t.Helper()
	task := c.b.task(id)
	ns, resolv, err := c.agent(task.NodeID).TaskNetwork(context.Background(), task)
	if err != nil {
		t.Fatalf("TaskNetwork(%s): %v", id, err)
	}
	if b, err := os.ReadFile(resolv); err != nil || string(b) != netagent.DefaultResolvConf {
		t.Fatalf("%s: resolv.conf %q %v", id, b, err)
	}
	c.ns[id] = ns
	serve(t, ns, ":80", id)
	serve(t, ns, ":8081", id+":8081")
	echo(t, ns, ":9000")
}

func TestAgentCluster(t *testing.T) {
	c := newCluster(t)
	client := c.ns["client.1"]
	h := c.lab.Hosts
	// n1 publishes 8080 (ingress) and 9090 (host mode, its edge.1) and is
	// on ingress, front and back; n0 only publishes 8080.
	if st := c.agent("n1").Stats(); st.Applies != 2 || st.ApplyErrors != 0 || st.PublishedPorts != 2 || st.MeshRuleChanges < 2 || st.Networks != 3 || st.Tasks != 3 {
		t.Errorf("n1 stats %+v", st)
	}
	if st := c.agent("n0").Stats(); st.PublishedPorts != 1 || st.MeshRuleChanges != 1 {
		t.Errorf("n0 stats %+v", st)
	}

	t.Run("names", func(t *testing.T) {
		for name, want := range map[string]string{"web": "10.0.1.2", "tasks.web": "10.0.1.11 10.0.1.12", "client": "10.0.1.3",
			"example.org": "203.0.113.7"} {
			got, _, err := lookup(client, name)
			if err != nil || strings.Join(got, " ") != want {
				t.Errorf("%s from client.1: %v %v, want %s", name, got, err, want)
			}
		}
		// db and its alias are on back, which client.1 is not on: not
		// cluster names there (forwarded, unknown upstream).
		for _, name := range []string{"db", "database", "tasks.db", "vault"} {
			if got, rcode, err := lookup(client, name); err != nil || len(got) != 0 || rcode != dns.RcodeNameError {
				t.Errorf("%s from client.1 (another network): %v rcode %d %v, want NXDOMAIN", name, got, rcode, err)
			}
		}
		// web.1 is on front and ingress: names resolve on front only
		// (ingress carries the mesh, no names).
		if got, _, err := lookup(c.ns["web.1"], "tasks.web"); err != nil || strings.Join(got, " ") != "10.0.1.11 10.0.1.12" {
			t.Errorf("tasks.web from web.1: %v %v, want the front addresses only", got, err)
		}
		if got, _, err := lookup(c.ns["web.1"], "web"); err != nil || strings.Join(got, " ") != "10.0.1.2" {
			t.Errorf("web from web.1: %v %v, want front's VIP only", got, err)
		}
		if got, _, err := lookup(c.ns["web.1"], "database"); err != nil || len(got) != 0 {
			t.Errorf("database from web.1 (front, not back): %v %v", got, err)
		}
		if got, _, err := lookup(c.ns["db.1"], "database"); err != nil || strings.Join(got, " ") != "10.0.2.2" {
			t.Errorf("database (alias) from db.1: %v %v", got, err)
		}
		if got, _, err := lookup(c.ns["vault.1"], "vault"); err != nil || strings.Join(got, " ") != "10.0.3.10 10.0.3.11" {
			t.Errorf("vault (dnsrr) from vault.1: %v %v", got, err)
		}
		// A task on no network has DNS too: forwarding only.
		if got, _, err := lookup(c.ns["edge.1"], "example.org"); err != nil || strings.Join(got, " ") != "203.0.113.7" {
			t.Errorf("example.org from edge.1: %v %v", got, err)
		}
		if got, _, err := lookup(c.ns["edge.1"], "web"); err != nil || len(got) != 0 {
			t.Errorf("web from edge.1 (no network): %v %v", got, err)
		}
	})

	t.Run("vip", func(t *testing.T) {
		// By name, as a program would: resolve, then connect. Every port
		// of the VIP is balanced over both tasks, across hosts.
		got, _, err := lookup(client, "web")
		if err != nil || len(got) != 1 {
			t.Fatalf("web: %v %v", got, err)
		}
		for _, port := range []string{"80", "8081"} {
			seen := spread(t, client, "http://"+got[0]+":"+port+"/", 30)
			if len(seen) != 2 {
				t.Fatalf("VIP port %s from client.1: %v, want both tasks", port, seen)
			}
		}
		// Tasks reach each other directly across hosts as well.
		if body, err := get(client, "http://10.0.1.12:80/"); err != nil || body != "web.2" {
			t.Fatalf("client.1 -> web.2 directly: %q %v", body, err)
		}
	})

	t.Run("internal", func(t *testing.T) {
		// db.1 is on internal networks only: no gateway, no way out.
		ls := links(t, c.ns["db.1"])
		if _, ok := ls["eth0"]; !ok || len(ls) != 2 {
			t.Fatalf("db.1 links %v, want lo and eth0 only", ls)
		}
		if ls := links(t, client); len(ls["eth1"]) != 1 || !strings.HasPrefix(ls["eth1"][0], "172.18.") {
			t.Fatalf("client.1's gateway link: %v", ls)
		}
	})

	t.Run("published", func(t *testing.T) {
		// From host 0 (no web task there), to every host's port.
		for _, hh := range h {
			seen := spread(t, h[0].Name, fmt.Sprintf("http://%s:8080/", hh.Addr), 30)
			if len(seen) != 2 || seen["web.1"] == 0 || seen["web.2"] == 0 {
				t.Fatalf("published 8080 via %s: %v, want both tasks", hh.Addr, seen)
			}
		}
		// Host mode: only on edge.1's node.
		if body, err := get(h[0].Name, fmt.Sprintf("http://%s:9090/", h[1].Addr)); err != nil || body != "edge.1" {
			t.Fatalf("host-mode 9090 on edge.1's node: %q %v", body, err)
		}
		for _, hh := range []*nettest.Host{h[0], h[2]} {
			if body, err := get(h[0].Name, fmt.Sprintf("http://%s:9090/", hh.Addr)); err == nil {
				t.Fatalf("host-mode 9090 answered on %s without the task: %q", hh.Addr, body)
			}
		}
	})

	t.Run("firewall", func(t *testing.T) {
		// VXLAN and the encrypted network's WireGuard port from the other
		// nodes only.
		out, err := h[0].Command(context.Background(), "nft", "list", "table", "inet", "shoal-input").CombinedOutput()
		if err != nil {
			t.Fatalf("nft: %v %s", err, out)
		}
		for _, want := range []string{h[1].Addr.String(), h[2].Addr.String(), "udp dport 4789 goto peers_only", "udp dport 51919 goto peers_only"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("node firewall lacks %q:\n%s", want, out)
			}
		}
		if strings.Contains(string(out), h[0].Addr.String()) {
			t.Errorf("node firewall lists the node itself as a peer:\n%s", out)
		}
	})

	t.Run("encrypted", func(t *testing.T) {
		marker := []byte("SHOAL-NETAGENT-PLAINTEXT-5b1e")
		send := func(from, to string) error {
			return doIn(c.ns[from], func() error {
				conn, err := net.DialTimeout("tcp", to+":9000", 5*time.Second)
				if err != nil {
					return err
				}
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(5 * time.Second))
				payload := bytes.Repeat(marker, (256<<10)/len(marker))
				go conn.Write(payload)
				_, err = io.ReadFull(conn, make([]byte, len(payload)))
				return err
			})
		}
		contains := func(frames [][]byte) bool {
			for _, f := range frames {
				if bytes.Contains(f, marker) {
					return true
				}
			}
			return false
		}
		// Control: over front (VXLAN, plain), the marker is seen.
		frames, err := c.lab.Capture(func() error { return send("client.1", "10.0.1.11") })
		if err != nil || !contains(frames) {
			t.Fatalf("control over a plain network: %v, marker seen %v in %d frames", err, contains(frames), len(frames))
		}
		frames, err = c.lab.Capture(func() error { return send("vault.1", "10.0.3.11") })
		if err != nil {
			t.Fatalf("vault.1 -> vault.2 on the encrypted network: %v", err)
		}
		if contains(frames) {
			t.Fatal("plaintext of the encrypted network on the wire")
		}
		wg := 0
		for _, f := range frames {
			if udpDstPort(f) == 51820+4099%1000 {
				wg++
			}
		}
		if wg == 0 {
			t.Fatalf("no WireGuard packets among %d captured frames", len(frames))
		}
		t.Logf("encrypted: %d frames captured, %d WireGuard, no plaintext", len(frames), wg)
	})

	t.Run("draining", func(t *testing.T) {
		vip := "10.0.1.2:80"
		k := dialKeepAlive(t, client, vip)
		first, err := k.ask()
		if err != nil {
			t.Fatal(err)
		}
		other := map[string]string{"web.1": "web.2", "web.2": "web.1"}[first]
		web := c.b.service("web")
		for _, te := range web.Tasks {
			if te.ID == first {
				te.Ready = false
			}
		}
		c.apply(t)
		for range 5 {
			if body, err := k.ask(); err != nil || body != first {
				t.Fatalf("the established connection to draining %s: %q %v", first, body, err)
			}
		}
		for range 20 {
			if body, err := get(client, "http://"+vip+"/"); err != nil || body != other {
				t.Fatalf("a new connection while %s drains: %q %v", first, body, err)
			}
			if body, err := get(h[0].Name, fmt.Sprintf("http://%s:8080/", h[0].Addr)); err != nil || body != other {
				t.Fatalf("a new published connection while %s drains: %q %v", first, body, err)
			}
		}
		if got, _, _ := lookup(client, "tasks.web"); len(got) != 1 {
			t.Fatalf("tasks.web while one drains: %v", got)
		}
		// What ends a stopping task's linger: its clients' connections.
		// The keep-alive counts; a connection from inside the task (a
		// probe on loopback) does not; one more client counts until it
		// closes.
		a := c.agent(c.b.task(first).NodeID)
		conns := func(want int) func() bool {
			return func() bool {
				n, err := a.ClientConnections(context.Background(), first)
				return err == nil && n == want
			}
		}
		describe := func() string { n, err := a.ClientConnections(context.Background(), first); return fmt.Sprint(n, err) }
		waitfor.True(t, "the keep-alive counted as the draining task's one client", conns(1), describe)
		var probe net.Conn
		if err := doIn(c.ns[first], func() (err error) { probe, err = net.DialTimeout("tcp", "127.0.0.1:80", 3*time.Second); return }); err != nil {
			t.Fatal(err)
		}
		defer probe.Close()
		addr := map[string]string{"web.1": "10.0.1.11:80", "web.2": "10.0.1.12:80"}[first]
		k2 := dialKeepAlive(t, client, addr)
		waitfor.True(t, "a second client counted, not the probe", conns(2), describe)
		k2.c.Close()
		waitfor.True(t, "the second client gone once it closed", conns(1), describe)
		if n, err := a.ClientConnections(context.Background(), "no-such-task"); err != nil || n != 0 {
			t.Fatalf("an unknown task's connections: %d %v", n, err)
		}
		// Gone from the view: out, its connection cut at once.
		web.Tasks = []*api.TaskEndpoint{web.Tasks[0], web.Tasks[1]}
		if web.Tasks[0].ID == first {
			web.Tasks = web.Tasks[1:]
		} else {
			web.Tasks = web.Tasks[:1]
		}
		c.apply(t)
		t0 := time.Now()
		if body, err := k.ask(); err == nil || time.Since(t0) > time.Second {
			t.Fatalf("the connection to %s after its removal: %q %v after %v, want a prompt failure", first, body, err, time.Since(t0))
		}
		for range 10 {
			if body, err := get(client, "http://"+vip+"/"); err != nil || body != other {
				t.Fatalf("after %s's removal: %q %v", first, body, err)
			}
		}
		c.releaseAndCheck(t, first)
	})
}

// releaseAndCheck releases a task (gone from the view) on its node and
// checks nothing of it is left: namespace, files, host links; and that its
// node dropped the networks no other task there needs.
func (c *cluster) releaseAndCheck(t *testing.T, id string) {
	t.Helper()
	var node *netagent.Agent
	var host *nettest.Host
	for i, a := range c.agents {
		for _, tid := range a.Tasks() {
			if tid == id {
				node, host = a, c.lab.Hosts[i]
			}
		}
	}
	if node == nil {
		t.Fatalf("no node holds %s", id)
	}
	before := links(t, host.Name)
	if err := node.ReleaseTask(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	if err := node.ReleaseTask(context.Background(), id); err != nil {
		t.Fatalf("second ReleaseTask: %v", err)
	}
	for _, p := range []string{node.NetNSPath(id), node.ResolvConfPath(id)} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s left after ReleaseTask: %v", p, err)
		}
	}
	after := links(t, host.Name)
	gone := 0
	for name := range before {
		if _, ok := after[name]; !ok && strings.HasPrefix(name, "sve") {
			gone++
		}
	}
	// front, ingress and the gateway.
	if gone != 3 {
		t.Errorf("%d of the task's host links removed, want 3: before %v after %v", gone, keys(before), keys(after))
	}
	if _, ok := after["sbr4097"]; ok {
		t.Errorf("front's bridge left on %s with no task on front", node.NodeID)
	}
	if _, ok := after["sbr4096"]; !ok {
		t.Errorf("ingress's bridge removed on %s", node.NodeID)
	}
}

func keys(m map[string][]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// udpDstPort is the destination port of an Ethernet/IPv4/UDP frame, or 0.
func udpDstPort(f []byte) int {
	if len(f) < 14+20+8 || f[12] != 0x08 || f[13] != 0x00 || f[14+9] != 17 {
		return 0
	}
	ihl := int(f[14]&0x0f) * 4
	if len(f) < 14+ihl+4 {
		return 0
	}
	return int(f[14+ihl+2])<<8 | int(f[14+ihl+3])
}
