package netmesh

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/shoalproject/shoal/internal/nettest"
)

func registry() *Registry {
	r := &Registry{}
	a := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	r.SetService(ServiceEndpoint{ID: "s1", Name: "web", Aliases: []string{"www"}, Mode: VIP,
		VIPs: map[string]netip.Addr{"front": a("10.0.0.2")},
		Tasks: []TaskEndpoint{
			{ID: "t1", Addrs: map[string]netip.Addr{"front": a("10.0.0.5")}, Healthy: true},
			{ID: "t2", Addrs: map[string]netip.Addr{"front": a("10.0.0.6")}, Healthy: true},
			{ID: "t3", Addrs: map[string]netip.Addr{"front": a("10.0.0.7")}, Healthy: false},
		}})
	r.SetService(ServiceEndpoint{ID: "s2", Name: "db", Mode: DNSRR,
		Tasks: []TaskEndpoint{
			{ID: "d1", Addrs: map[string]netip.Addr{"back": a("10.0.1.5")}, Healthy: true},
			{ID: "d2", Addrs: map[string]netip.Addr{"back": a("10.0.1.6")}, Healthy: true},
		}})
	return r
}

func strs(addrs []netip.Addr) []string {
	var out []string
	for _, a := range addrs {
		out = append(out, a.String())
	}
	slices.Sort(out)
	return out
}

func TestRegistryLookup(t *testing.T) {
	r := registry()
	cases := []struct {
		nets []string
		name string
		want []string
		ok   bool
	}{
		{[]string{"front"}, "web", []string{"10.0.0.2"}, true},
		{[]string{"front"}, "WWW.", []string{"10.0.0.2"}, true},
		{[]string{"front"}, "tasks.web", []string{"10.0.0.5", "10.0.0.6"}, true},
		{[]string{"back"}, "web", nil, false}, // not on a shared network
		{[]string{"front"}, "db", nil, false}, // other network
		{[]string{"back"}, "db", []string{"10.0.1.5", "10.0.1.6"}, true},
		{[]string{"front", "back"}, "db", []string{"10.0.1.5", "10.0.1.6"}, true},
		{[]string{"front"}, "example.org", nil, false},
	}
	for _, c := range cases {
		got, ok := r.Lookup(c.nets, c.name)
		if ok != c.ok || !slices.Equal(strs(got), c.want) {
			t.Errorf("Lookup(%v, %q) = %v %v, want %v %v", c.nets, c.name, strs(got), ok, c.want, c.ok)
		}
	}
	r.RemoveService("s2")
	if _, ok := r.Lookup([]string{"back"}, "db"); ok {
		t.Fatal("removed service still resolves")
	}
}

// startDNS runs a server on loopback; upstream is another one answering
// every name with 192.0.2.99.
func startDNS(t *testing.T, nets []string) *DNS {
	t.Helper()
	up := &dns.Server{Addr: "127.0.0.1:0", Net: "udp", Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP("192.0.2.99")})
		w.WriteMsg(m)
	})}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up.PacketConn = pc
	go up.ActivateAndServe()
	t.Cleanup(func() { up.Shutdown() })
	d := &DNS{Addr: "127.0.0.1:0", Registry: registry(), Networks: nets, Upstreams: []string{pc.LocalAddr().String()}}
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-d.Ready()
	t.Cleanup(func() { d.Close() })
	return d
}

func query(t *testing.T, d *DNS, name string, proto string) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: proto}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	resp, _, err := c.Exchange(m, d.LocalAddr().String())
	if err != nil {
		t.Fatalf("query %s: %v", name, err)
	}
	return resp
}

func answers(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		out = append(out, rr.(*dns.A).A.String())
	}
	slices.Sort(out)
	return out
}

func TestDNSServerAnswersAndForwards(t *testing.T) {
	d := startDNS(t, []string{"front"})
	if got := answers(query(t, d, "web", "udp")); !slices.Equal(got, []string{"10.0.0.2"}) {
		t.Fatalf("web: %v", got)
	}
	if got := answers(query(t, d, "tasks.web", "tcp")); !slices.Equal(got, []string{"10.0.0.5", "10.0.0.6"}) {
		t.Fatalf("tasks.web over TCP: %v", got)
	}
	// db is on a network this task is not on: not a cluster name here, so
	// it is forwarded like any other name.
	if got := answers(query(t, d, "db", "udp")); !slices.Equal(got, []string{"192.0.2.99"}) {
		t.Fatalf("db from front: %v", got)
	}
	if got := answers(query(t, d, "example.org", "udp")); !slices.Equal(got, []string{"192.0.2.99"}) {
		t.Fatalf("forwarded: %v", got)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second close: %v", err)
	}
}

func TestDNSNoHealthyTaskIsNXDomain(t *testing.T) {
	d := startDNS(t, []string{"front"})
	d.Registry.SetService(ServiceEndpoint{ID: "s3", Name: "sick", Mode: DNSRR,
		Tasks: []TaskEndpoint{{ID: "x", Addrs: map[string]netip.Addr{"front": netip.MustParseAddr("10.0.0.9")}, Healthy: false}}})
	if m := query(t, d, "sick", "udp"); m.Rcode != dns.RcodeNameError || len(m.Answer) != 0 {
		t.Fatalf("unhealthy-only service: rcode %d answers %v", m.Rcode, m.Answer)
	}
}

// TestDNSInsideTaskNamespace serves at 127.0.0.11:53 inside a namespace, as
// each task gets it, and resolves from there.
func TestDNSInsideTaskNamespace(t *testing.T) {
	lab := nettest.New(t, 1)
	ns, err := lab.NewNamespace("task")
	if err != nil {
		t.Fatal(err)
	}
	d := &DNS{Addr: "127.0.0.11:53", Registry: registry(), Networks: []string{"front"}}
	if err := nettest.Do(ns, func() error { return d.Start(context.Background()) }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	<-d.Ready()
	var got []string
	err = nettest.Do(ns, func() error {
		m := new(dns.Msg)
		m.SetQuestion("web.", dns.TypeA)
		resp, _, err := (&dns.Client{}).Exchange(m, "127.0.0.11:53")
		if err == nil {
			got = answers(resp)
		}
		return err
	})
	if err != nil || !slices.Equal(got, []string{"10.0.0.2"}) {
		t.Fatalf("web from inside the task: %v %v", got, err)
	}
	// Outside the namespace nothing listens at 127.0.0.11: the query is
	// refused (an ICMP port unreachable), not merely unanswered.
	c := &dns.Client{Timeout: 5 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion("web.", dns.TypeA)
	if _, _, err := c.Exchange(m, "127.0.0.11:53"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("query at 127.0.0.11 outside the task's namespace: %v, want connection refused", err)
	}
}

// Answers carry the TTLs meant for them: a VIP is stable (600 s), task
// addresses change (0); several task addresses come in a random order, so
// clients that take the first spread over the tasks.
func TestDNSTTLsAndOrder(t *testing.T) {
	d := startDNS(t, []string{"front", "back"})
	for name, want := range map[string]uint32{"web": 600, "tasks.web": 0, "db": 0} {
		m := query(t, d, name, "udp")
		if len(m.Answer) == 0 {
			t.Fatalf("%s: no answer", name)
		}
		for _, rr := range m.Answer {
			if rr.Header().Ttl != want {
				t.Errorf("%s: TTL %d, want %d", name, rr.Header().Ttl, want)
			}
		}
	}
	firsts := map[string]int{}
	for range 40 {
		firsts[query(t, d, "tasks.web", "udp").Answer[0].(*dns.A).A.String()]++
	}
	if len(firsts) != 2 {
		t.Fatalf("first address of tasks.web over 40 queries: %v, want both tasks", firsts)
	}
}
