package netagent_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/shoalproject/shoal/internal/nettest"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/netagent"
)

// doIn runs fn on a thread inside the namespace at path (a task's, under
// an agent's StateDir, or a lab host's under /var/run/netns).
func doIn(path string, fn func() error) error {
	if !strings.Contains(path, "/") {
		path = "/var/run/netns/" + path
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		target, err := netns.GetFromPath(path)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		err = fn()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// serve answers HTTP on addr in a namespace with name, and echoes on
// addr's host and port 9000.
func serve(t testing.TB, ns, addr, name string) {
	t.Helper()
	var ln net.Listener
	if err := doIn(ns, func() (err error) { ln, err = net.Listen("tcp", addr); return }); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, name) })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

func echo(t testing.TB, ns, addr string) {
	t.Helper()
	var ln net.Listener
	if err := doIn(ns, func() (err error) { ln, err = net.Listen("tcp", addr); return }); err != nil {
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

// get fetches a URL from inside a namespace on a new connection.
func get(ns, url string) (string, error) {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return "", err
	}
	var conn net.Conn
	if err := doIn(ns, func() (err error) {
		conn, err = net.DialTimeout("tcp", req.URL.Host, 3*time.Second)
		return err
	}); err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(3 * time.Second))
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

// spread fetches url n times and counts the answers.
func spread(t testing.TB, ns, url string, n int) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for range n {
		body, err := get(ns, url)
		if err != nil {
			t.Fatalf("%s from %s: %v", url, ns, err)
		}
		seen[body]++
	}
	return seen
}

// keepAlive is one HTTP/1.1 connection that asks again and again.
type keepAlive struct {
	c  net.Conn
	br *bufio.Reader
}

func dialKeepAlive(t testing.TB, ns, hostport string) *keepAlive {
	t.Helper()
	var c net.Conn
	if err := doIn(ns, func() (err error) { c, err = net.DialTimeout("tcp", hostport, 3*time.Second); return }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &keepAlive{c: c, br: bufio.NewReader(c)}
}

func (k *keepAlive) ask() (string, error) {
	req, _ := http.NewRequest("GET", "http://service/", nil)
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

// lookup asks the task's resolver (127.0.0.11, from inside its namespace)
// for name's A records; rcode is the answer's code.
func lookup(ns, name string) (addrs []string, rcode int, err error) {
	err = doIn(ns, func() error {
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(name), dns.TypeA)
		resp, _, err := (&dns.Client{Timeout: 3 * time.Second}).Exchange(m, "127.0.0.11:53")
		if err != nil {
			return err
		}
		rcode = resp.Rcode
		for _, rr := range resp.Answer {
			if a, ok := rr.(*dns.A); ok {
				addrs = append(addrs, a.A.String())
			}
		}
		return nil
	})
	slices.Sort(addrs)
	return addrs, rcode, err
}

// upstream is a resolver in the test's own namespace, where the agents
// forward from: it knows example.org.
func upstream(t testing.TB) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if q := r.Question[0]; q.Name == "example.org." && q.Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(203, 0, 113, 7)})
		} else {
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

// links lists a namespace's links with their IPv4 addresses.
func links(t testing.TB, ns string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	if err := doIn(ns, func() error {
		ls, err := netlink.LinkList()
		if err != nil {
			return err
		}
		for _, l := range ls {
			addrs, _ := netlink.AddrList(l, unix.AF_INET)
			var as []string
			for _, a := range addrs {
				as = append(as, a.IP.String())
			}
			out[l.Attrs().Name] = as
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// logBuf is a concurrency-safe log sink.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// newAgent starts an agent for a lab host with its own StateDir. Cleanup
// closes it and removes every task namespace left under the StateDir
// (before the directory goes), also when the test failed.
func newAgent(t testing.TB, h *nettest.Host, id, dir string, ups []string, logs io.Writer, opts ...func(*netagent.Agent)) *netagent.Agent {
	t.Helper()
	if logs == nil {
		logs = io.Discard
	}
	a := &netagent.Agent{NodeID: id, DataAddr: h.Addr, NetNS: "/var/run/netns/" + h.Name, StateDir: dir, Upstreams: ups,
		KeyRotation: -1, Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	for _, o := range opts {
		o(a)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := a.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			t.Logf("close agent %s: %v", id, err)
		}
	})
	return a
}

// stateDir is a StateDir whose task namespaces are unmounted at cleanup,
// whatever the agents did.
func stateDir(t testing.TB, name string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	t.Cleanup(func() {
		entries, _ := os.ReadDir(filepath.Join(dir, "netns"))
		for _, e := range entries {
			p := filepath.Join(dir, "netns", e.Name())
			for unix.Unmount(p, unix.MNT_DETACH) == nil {
			}
		}
	})
	return dir
}

// viewBuilder makes NetworkViews by hand.
type viewBuilder struct {
	nets     []*api.Network
	nodes    []*api.NodeEndpoint
	services []*api.ServiceEndpoints
}

func network(id string, vni uint32, subnet string) *api.Network {
	return &api.Network{Meta: api.Meta{ID: id}, Spec: api.NetworkSpec{Annotations: api.Annotations{Name: id}}, VNI: vni,
		IPAM: &api.IPAMConfig{Subnet: subnet}}
}

func (b *viewBuilder) view() *api.NetworkView {
	v := &api.NetworkView{Networks: b.nets, Nodes: b.nodes}
	for _, s := range b.services {
		c := *s
		c.Tasks = nil
		for _, te := range s.Tasks {
			tc := *te
			c.Tasks = append(c.Tasks, &tc)
		}
		v.Services = append(v.Services, &c)
	}
	return v
}

func (b *viewBuilder) service(id string) *api.ServiceEndpoints {
	for _, s := range b.services {
		if s.ID == id {
			return s
		}
	}
	return nil
}

// task is the api.Task of a task endpoint of the builder's view (the
// networks it is on, with addresses as CIDR strings).
func (b *viewBuilder) task(id string) *api.Task {
	for _, s := range b.services {
		for _, te := range s.Tasks {
			if te.ID != id {
				continue
			}
			t := &api.Task{Meta: api.Meta{ID: id}, ServiceID: s.ID, NodeID: te.NodeID}
			for _, n := range b.nets {
				if a, ok := te.Addrs[n.ID]; ok {
					bits := netip.MustParsePrefix(n.IPAM.Subnet).Bits()
					t.Networks = append(t.Networks, api.NetworkAttachment{NetworkID: n.ID, Addresses: []string{fmt.Sprintf("%s/%d", a, bits)}})
				}
			}
			return t
		}
	}
	panic("no task " + id)
}

func apply(t testing.TB, v *api.NetworkView, agents ...*netagent.Agent) {
	t.Helper()
	for _, a := range agents {
		if err := a.Apply(context.Background(), v); err != nil {
			t.Fatalf("apply on %s: %v", a.NodeID, err)
		}
	}
}
