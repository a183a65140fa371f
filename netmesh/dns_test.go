package netmesh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
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

// An alias given on one network answers there only: a task on the
// service's other network, or on both, gets the alias's addresses on the
// network that has it; a name every network knows (Aliases) answers on
// each.
func TestRegistryAliasesPerNetwork(t *testing.T) {
	r := &Registry{}
	a := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	r.SetService(ServiceEndpoint{ID: "s", Name: "db", Mode: VIP, Aliases: []string{"everywhere"},
		NetworkAliases: map[string][]string{"back": {"database"}, "audit": {"ledger"}},
		VIPs:           map[string]netip.Addr{"back": a("10.0.1.2"), "audit": a("10.0.2.2")}})
	for _, c := range []struct {
		nets []string
		name string
		want []string
		ok   bool
	}{
		{[]string{"back"}, "database", []string{"10.0.1.2"}, true},
		{[]string{"audit"}, "database", nil, false},
		{[]string{"audit"}, "ledger", []string{"10.0.2.2"}, true},
		{[]string{"back"}, "ledger", nil, false},
		{[]string{"back", "audit"}, "database", []string{"10.0.1.2"}, true},
		{[]string{"back", "audit"}, "db", []string{"10.0.1.2", "10.0.2.2"}, true},
		{[]string{"audit"}, "everywhere", []string{"10.0.2.2"}, true},
		{[]string{"front"}, "database", nil, false},
	} {
		got, ok := r.Lookup(c.nets, c.name)
		if ok != c.ok || !slices.Equal(strs(got), c.want) {
			t.Errorf("Lookup(%v, %q) = %v %v, want %v %v", c.nets, c.name, strs(got), ok, c.want, c.ok)
		}
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

// upstream is a resolver for tests: it counts the questions it gets,
// answers A queries with 192.0.2.99 (or, for "many.example.", 100
// addresses, whatever the client's size), PTR queries with
// "upstream.example.", and holds every query while hold is set.
type upstream struct {
	addr string
	mu   sync.Mutex
	got  []string
	hold chan struct{} // closed to let held queries go
}

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{}
	pc, ln, err := listenUDPAndTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.addr = pc.LocalAddr().String()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		q := r.Question[0]
		u.mu.Lock()
		u.got = append(u.got, q.Name)
		hold := u.hold
		u.mu.Unlock()
		if hold != nil {
			<-hold
		}
		m := new(dns.Msg)
		m.SetReply(r)
		switch {
		case q.Qtype == dns.TypePTR:
			m.Answer = append(m.Answer, &dns.PTR{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: 60}, Ptr: "upstream.example."})
		case q.Name == "many.example.":
			for i := range 100 {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, byte(i))})
			}
		default:
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP("192.0.2.99")})
		}
		w.WriteMsg(m)
	})
	udp := &dns.Server{PacketConn: pc, Handler: h}
	tcp := &dns.Server{Listener: ln, Handler: h}
	go udp.ActivateAndServe()
	go tcp.ActivateAndServe()
	t.Cleanup(func() {
		u.release()
		udp.Shutdown()
		tcp.Shutdown()
	})
	return u
}

func (u *upstream) questions() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.got)
}

func (u *upstream) holdQueries() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.hold = make(chan struct{})
}

func (u *upstream) release() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.hold != nil {
		close(u.hold)
		u.hold = nil
	}
}

func startDNSWith(t *testing.T, d *DNS) *DNS {
	t.Helper()
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-d.Ready()
	t.Cleanup(func() { d.Close() })
	return d
}

func ask(t *testing.T, d *DNS, m *dns.Msg, proto string) *dns.Msg {
	t.Helper()
	resp, _, err := (&dns.Client{Net: proto, UDPSize: dns.MaxMsgSize}).Exchange(m, d.LocalAddr().String())
	if err != nil {
		t.Fatalf("query %s: %v", m.Question[0].Name, err)
	}
	return resp
}

func ptrQuery(t *testing.T, d *DNS, addr string) *dns.Msg {
	t.Helper()
	name, err := dns.ReverseAddr(addr)
	if err != nil {
		t.Fatal(err)
	}
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypePTR)
	return ask(t, d, m, "udp")
}

func ptrOf(m *dns.Msg) string {
	if len(m.Answer) != 1 {
		return fmt.Sprintf("rcode %s, %d answers", dns.RcodeToString[m.Rcode], len(m.Answer))
	}
	return m.Answer[0].(*dns.PTR).Ptr
}

// Reverse lookups answer as Docker does for a task's address (the task's
// name, then the network's name), and SERVICE.NETWORK. for a VIP, only on
// the asker's networks; other addresses go to the upstreams.
func TestDNSReverseLookups(t *testing.T) {
	up := startUpstream(t)
	a := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	reg := &Registry{}
	reg.SetService(ServiceEndpoint{ID: "s1", Name: "web", Mode: VIP,
		VIPs:         map[string]netip.Addr{"n1": a("10.0.0.2"), "n2": a("10.0.2.2")},
		NetworkNames: map[string]string{"n1": "front", "n2": "side"},
		Tasks: []TaskEndpoint{
			{ID: "t1", Name: "web.1.t1", Addrs: map[string]netip.Addr{"n1": a("10.0.0.5"), "n2": a("10.0.2.5")}, Healthy: true},
			{ID: "t3", Name: "web.2.t3", Addrs: map[string]netip.Addr{"n1": a("10.0.0.7")}, Healthy: false},
			{ID: "t4", Addrs: map[string]netip.Addr{"n1": a("10.0.0.8")}, Healthy: true},
		}})
	reg.SetService(ServiceEndpoint{ID: "s2", Name: "db", Mode: DNSRR,
		Tasks: []TaskEndpoint{{ID: "d1", Name: "db.1.d1", Addrs: map[string]netip.Addr{"n3": a("10.0.1.5")}, Healthy: true}}})
	d := startDNSWith(t, &DNS{Addr: "127.0.0.1:0", Registry: reg, Networks: []string{"n1"}, Upstreams: []string{up.addr}})
	for addr, want := range map[string]string{
		"10.0.0.5":  "web.1.t1.front.",
		"10.0.0.7":  "web.2.t3.front.",   // unhealthy: out of forward lookups, still named
		"10.0.0.8":  "web.t4.front.",     // no task name given
		"10.0.0.2":  "web.front.",        // the VIP
		"10.0.2.5":  "upstream.example.", // the task's address on a network this task is not on
		"10.0.1.5":  "upstream.example.", // another network's task
		"10.0.0.99": "upstream.example.",
	} {
		if got := ptrOf(ptrQuery(t, d, addr)); got != want {
			t.Errorf("PTR %s = %s, want %s", addr, got, want)
		}
	}
	if m := ptrQuery(t, d, "10.0.0.5"); !m.Authoritative || m.Answer[0].Header().Ttl != 0 {
		t.Errorf("task PTR: authoritative %v, TTL %d", m.Authoritative, m.Answer[0].Header().Ttl)
	}
	if got := len(up.questions()); got != 3 {
		t.Errorf("upstream asked %d questions (%v), want the 3 for addresses not on the task's networks", got, up.questions())
	}
	// A task on both networks finds the name on either.
	d2 := startDNSWith(t, &DNS{Addr: "127.0.0.1:0", Registry: reg, Networks: []string{"n2", "n1"}})
	if got := ptrOf(ptrQuery(t, d2, "10.0.2.5")); got != "web.1.t1.side." {
		t.Errorf("PTR on the second network: %s", got)
	}
	// The records follow the services: replaced, then removed.
	reg.SetService(ServiceEndpoint{ID: "s1", Name: "web", Mode: VIP, VIPs: map[string]netip.Addr{"n1": a("10.0.0.2")},
		Tasks: []TaskEndpoint{{ID: "t9", Name: "web.1.t9", Addrs: map[string]netip.Addr{"n1": a("10.0.0.9")}, Healthy: true}}})
	if got := ptrOf(ptrQuery(t, d, "10.0.0.9")); got != "web.1.t9.n1." {
		t.Errorf("PTR of a new task on an unnamed network: %s", got)
	}
	if got := ptrOf(ptrQuery(t, d, "10.0.0.5")); got != "upstream.example." {
		t.Errorf("PTR of a replaced task: %s", got)
	}
	reg.RemoveService("s1")
	if _, _, ok := reg.Reverse([]string{"n1"}, a("10.0.0.2")); ok {
		t.Error("a removed service's VIP still has a name")
	}
	if len(reg.reverse) != 1 {
		t.Errorf("reverse index after removal: %v", reg.reverse)
	}
	// A reverse name that is no IPv4 address is forwarded.
	m := new(dns.Msg)
	m.SetQuestion("web.in-addr.arpa.", dns.TypePTR)
	if got := ptrOf(ask(t, d, m, "udp")); got != "upstream.example." {
		t.Errorf("PTR of a bad reverse name: %s", got)
	}
}

// tasks.NAME is answered here, NXDOMAIN when no such service is on the
// asker's networks: the upstreams never hear of it. Other names, including
// tasks.example.org, still go there.
func TestDNSTasksNameNeverForwarded(t *testing.T) {
	up := startUpstream(t)
	d := startDNSWith(t, &DNS{Addr: "127.0.0.1:0", Registry: registry(), Networks: []string{"front"}, Upstreams: []string{up.addr}})
	for _, name := range []string{"tasks.nosuch", "TASKS.nosuch.", "tasks.db"} { // db is on another network
		m := query(t, d, name, "udp")
		if m.Rcode != dns.RcodeNameError || !m.Authoritative {
			t.Errorf("%s: rcode %s authoritative %v, want a local NXDOMAIN", name, dns.RcodeToString[m.Rcode], m.Authoritative)
		}
	}
	if got := answers(query(t, d, "tasks.example.org", "udp")); !slices.Equal(got, []string{"192.0.2.99"}) {
		t.Errorf("tasks.example.org: %v", got)
	}
	if got := answers(query(t, d, "nosuch", "udp")); !slices.Equal(got, []string{"192.0.2.99"}) {
		t.Errorf("nosuch: %v", got)
	}
	if got := up.questions(); !slices.Equal(got, []string{"tasks.example.org.", "nosuch."}) {
		t.Errorf("upstream heard %v", got)
	}
	if s := d.Stats(); s.Answered != 3 || s.Forwarded != 2 {
		t.Errorf("stats %+v", s)
	}
}

// Answers fit the client: 512 bytes over UDP, the EDNS0 size when the
// query offers one, all over TCP; a cut answer has TC set.
func TestDNSTruncatesToTheClientsSize(t *testing.T) {
	up := startUpstream(t)
	reg := registry()
	var tasks []TaskEndpoint
	for i := range 100 {
		tasks = append(tasks, TaskEndpoint{ID: fmt.Sprint("b", i), Addrs: map[string]netip.Addr{"front": netip.AddrFrom4([4]byte{10, 0, 3, byte(i)})}, Healthy: true})
	}
	reg.SetService(ServiceEndpoint{ID: "big", Name: "big", Mode: DNSRR, Tasks: tasks})
	d := startDNSWith(t, &DNS{Addr: "127.0.0.1:0", Registry: reg, Networks: []string{"front"}, Upstreams: []string{up.addr}})
	for _, name := range []string{"big.", "tasks.big.", "many.example."} { // local and forwarded
		// Over UDP without EDNS0, read raw: whatever the server sends.
		q := new(dns.Msg)
		q.SetQuestion(name, dns.TypeA)
		raw := udpExchange(t, d, q)
		if len(raw) > dns.MinMsgSize {
			t.Errorf("%s over UDP: %d bytes, want at most 512", name, len(raw))
		}
		m := new(dns.Msg)
		if err := m.Unpack(raw); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !m.Truncated || len(m.Answer) == 0 || len(m.Answer) >= 100 {
			t.Errorf("%s over UDP: TC %v, %d answers; want TC and some", name, m.Truncated, len(m.Answer))
		}
		// With EDNS0 offering 4096 bytes, all fit.
		q.SetEdns0(4096, false)
		raw = udpExchange(t, d, q)
		if err := m.Unpack(raw); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if m.Truncated || len(m.Answer) != 100 || m.IsEdns0() == nil {
			t.Errorf("%s with EDNS0 4096: TC %v, %d answers, OPT %v", name, m.Truncated, len(m.Answer), m.IsEdns0())
		}
		// With EDNS0 offering 1232 bytes, cut to that.
		q.SetEdns0(1232, false)
		if raw = udpExchange(t, d, q); len(raw) > 1232 {
			t.Errorf("%s with EDNS0 1232: %d bytes", name, len(raw))
		}
		// The retry over TCP gets everything.
		q = new(dns.Msg)
		q.SetQuestion(name, dns.TypeA)
		if m := ask(t, d, q, "tcp"); m.Truncated || len(m.Answer) != 100 {
			t.Errorf("%s over TCP: TC %v, %d answers", name, m.Truncated, len(m.Answer))
		}
	}
	if s := d.Stats(); s.Truncated != 6 {
		t.Errorf("stats %+v, want 6 truncated", s)
	}
}

func udpExchange(t *testing.T, d *DNS, q *dns.Msg) []byte {
	t.Helper()
	b, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("udp", d.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65536)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("%s: %v", q.Question[0].Name, err)
	}
	return buf[:n]
}

// Forwarded queries in flight are bounded per server: beyond MaxForwards
// a query is answered SERVFAIL at once, and counted; local names are still
// answered; the held queries are answered once the upstream is.
func TestDNSBoundsForwardedQueries(t *testing.T) {
	up := startUpstream(t)
	up.holdQueries()
	d := startDNSWith(t, &DNS{Addr: "127.0.0.1:0", Registry: registry(), Networks: []string{"front"}, Upstreams: []string{up.addr}, MaxForwards: 2})
	held := make(chan *dns.Msg, 2)
	for i := range 2 {
		go func() {
			m := new(dns.Msg)
			m.SetQuestion(fmt.Sprintf("slow%d.example.", i), dns.TypeA)
			resp, _, err := (&dns.Client{Timeout: 10 * time.Second}).Exchange(m, d.LocalAddr().String())
			if err != nil {
				resp = nil
			}
			held <- resp
		}()
	}
	waitForDNS(t, func() bool { return len(up.questions()) == 2 })
	t0 := time.Now()
	m := query(t, d, "third.example", "udp")
	if m.Rcode != dns.RcodeServerFailure || time.Since(t0) > time.Second {
		t.Fatalf("third forwarded query: rcode %s after %v, want SERVFAIL at once", dns.RcodeToString[m.Rcode], time.Since(t0))
	}
	if got := answers(query(t, d, "web", "udp")); !slices.Equal(got, []string{"10.0.0.2"}) {
		t.Fatalf("a cluster name while the forwards are full: %v", got)
	}
	if s := d.Stats(); s.Overloaded != 1 || s.Forwarded != 2 {
		t.Fatalf("stats %+v", s)
	}
	if got := len(up.questions()); got != 2 {
		t.Fatalf("upstream got %d questions, want 2", got)
	}
	up.release()
	for range 2 {
		if m := <-held; m == nil || len(m.Answer) != 1 {
			t.Fatalf("held query: %v", m)
		}
	}
	// The slots are free again.
	if got := answers(query(t, d, "later.example", "udp")); !slices.Equal(got, []string{"192.0.2.99"}) {
		t.Fatalf("after the held queries: %v", got)
	}
}

func waitForDNS(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
	}
}
