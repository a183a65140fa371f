package netmesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

// EndpointMode is how a service name resolves.
type EndpointMode string

// VIP answers with the service's virtual IP; DNSRR with its healthy tasks'
// addresses, shuffled.
const (
	VIP   EndpointMode = "vip"
	DNSRR EndpointMode = "dnsrr"
)

// ServiceEndpoint is what DNS knows of a service. Networks are named by
// their IDs everywhere (VIPs, task addresses, a DNS server's Networks);
// NetworkNames gives the names that reverse lookups answer with.
type ServiceEndpoint struct {
	ID   string
	Name string
	// Aliases are other names of the service on every network it is on.
	Aliases []string
	// NetworkAliases are other names of the service on one network each,
	// by network ID (a Docker service's aliases are given per network):
	// an alias on network A does not resolve for a task on network B.
	NetworkAliases map[string][]string
	Mode           EndpointMode
	// VIPs is the service's virtual IP on each of its networks, by network
	// ID.
	VIPs map[string]netip.Addr
	// NetworkNames is the name of each of the service's networks, by
	// network ID, for reverse lookups (VIP -> SERVICE.NETWORK., task ->
	// TASKNAME.NETWORK.). A network missing here is named by its ID.
	NetworkNames map[string]string
	// Tasks are the service's task endpoints.
	Tasks []TaskEndpoint
}

// TaskEndpoint is one task of a service.
type TaskEndpoint struct {
	ID string
	// Name is the task's name as Docker names a task's container:
	// SERVICE.SLOT.TASKID (replicated) or SERVICE.NODEID.TASKID (global).
	// A reverse lookup of one of the task's addresses answers
	// NAME.NETWORK.; empty means SERVICE.TASKID.
	Name string
	// Addrs is the task's address on each of its networks, by network ID.
	Addrs map[string]netip.Addr
	// Healthy tasks are answered; the others are left out of forward
	// lookups (a reverse lookup names any task that holds the address).
	Healthy bool
}

// Registry holds the service endpoints of a node's networks; the DNS servers
// of all tasks on the node answer from it. It is safe for concurrent use.
type Registry struct {
	mu       sync.RWMutex
	services map[string]ServiceEndpoint
	// reverse indexes the services' VIPs and task addresses, for PTR
	// queries.
	reverse map[netip.Addr][]reverseRecord
}

// reverseRecord names an address on one network.
type reverseRecord struct {
	service string // ID, to drop the record with its service
	network string // ID, to scope the answer to the asker's networks
	name    string // fully qualified
	vip     bool
}

// SetService adds or replaces a service.
func (r *Registry) SetService(s ServiceEndpoint) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.services == nil {
		r.services = map[string]ServiceEndpoint{}
		r.reverse = map[netip.Addr][]reverseRecord{}
	}
	r.unindex(s.ID)
	r.services[s.ID] = s
	netName := func(id string) string {
		if n := s.NetworkNames[id]; n != "" {
			return n
		}
		return id
	}
	for n, vip := range s.VIPs {
		if vip.IsValid() {
			r.reverse[vip] = append(r.reverse[vip], reverseRecord{service: s.ID, network: n, name: dns.Fqdn(s.Name + "." + netName(n)), vip: true})
		}
	}
	for _, t := range s.Tasks {
		name := t.Name
		if name == "" {
			name = s.Name + "." + t.ID
		}
		for n, a := range t.Addrs {
			if a.IsValid() {
				r.reverse[a] = append(r.reverse[a], reverseRecord{service: s.ID, network: n, name: dns.Fqdn(name + "." + netName(n))})
			}
		}
	}
}

// unindex drops a service's reverse records; r.mu is held.
func (r *Registry) unindex(id string) {
	old, ok := r.services[id]
	if !ok {
		return
	}
	drop := func(a netip.Addr) {
		recs := slices.DeleteFunc(r.reverse[a], func(rec reverseRecord) bool { return rec.service == id })
		if len(recs) == 0 {
			delete(r.reverse, a)
		} else {
			r.reverse[a] = recs
		}
	}
	for _, vip := range old.VIPs {
		drop(vip)
	}
	for _, t := range old.Tasks {
		for _, a := range t.Addrs {
			drop(a)
		}
	}
}

// RemoveService forgets a service.
func (r *Registry) RemoveService(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unindex(id)
	delete(r.services, id)
}

// Reverse names an address for a task on the given networks, as a PTR
// record answers it: a task address gives TASKNAME.NETWORK., a VIP
// SERVICE.NETWORK. (both fully qualified). Only networks the asker is on
// are considered; ok is false when the address is not a cluster address
// there.
func (r *Registry) Reverse(networks []string, addr netip.Addr) (name string, vip, ok bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	best := -1
	recs := r.reverse[addr.Unmap()]
	for i, rec := range recs {
		// Of several (an address passing from one task to the next),
		// the least name, so every query answers alike.
		if slices.Contains(networks, rec.network) && (best < 0 || rec.name < recs[best].name) {
			best = i
		}
	}
	if best < 0 {
		return "", false, false
	}
	return recs[best].name, recs[best].vip, true
}

// Lookup resolves a name for a task on the given networks: a service name
// or alias gives its VIP (vip mode) or healthy task addresses (dnsrr);
// "tasks.NAME" gives the healthy task addresses. Only networks the asker is
// on are considered. ok is false when the name is not a cluster name.
func (r *Registry) Lookup(networks []string, name string) (addrs []netip.Addr, ok bool) {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	tasksOnly := false
	if rest, found := strings.CutPrefix(name, "tasks."); found {
		name, tasksOnly = rest, true
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, s := range r.services {
		for _, n := range networks {
			if !s.matches(name, n) {
				continue
			}
			vip, onNet := s.VIPs[n]
			var taskAddrs []netip.Addr
			for _, t := range s.Tasks {
				if a, has := t.Addrs[n]; has {
					onNet = true
					if t.Healthy {
						taskAddrs = append(taskAddrs, a)
					}
				}
			}
			if !onNet {
				continue
			}
			ok = true
			if s.Mode == DNSRR || tasksOnly || !vip.IsValid() {
				addrs = append(addrs, taskAddrs...)
			} else {
				addrs = append(addrs, vip)
			}
		}
	}
	return addrs, ok
}

// matches reports whether name is the service's on network.
func (s *ServiceEndpoint) matches(name, network string) bool {
	if strings.EqualFold(s.Name, name) {
		return true
	}
	for _, a := range s.Aliases {
		if strings.EqualFold(a, name) {
			return true
		}
	}
	for _, a := range s.NetworkAliases[network] {
		if strings.EqualFold(a, name) {
			return true
		}
	}
	return false
}

// DNS is the resolver a task sees at 127.0.0.11: cluster names from the
// Registry, scoped to the task's networks; everything else forwarded to the
// upstream resolvers.
type DNS struct {
	// Addr is where to listen, UDP and TCP ("127.0.0.11:53" in a task's
	// namespace; any address in tests).
	Addr string
	// Registry holds the cluster's names; required.
	Registry *Registry
	// Networks are the networks of the task this server answers for.
	Networks []string
	// Upstreams are resolvers ("192.0.2.53:53") for other names; empty
	// means answering SERVFAIL for them.
	Upstreams []string
	// MaxForwards bounds the queries forwarded to the upstreams at once;
	// a query beyond it is answered SERVFAIL at once and counted
	// (DNSStats.Overloaded). Zero means DefaultDNSMaxForwards.
	MaxForwards int
	// Logger receives the server's logs; nil discards.
	Logger *slog.Logger

	mu      sync.Mutex
	udp     *dns.Server
	tcp     *dns.Server
	udpAddr net.Addr
	ready   chan struct{}
	closed  bool
	fwd     chan struct{} // a token per forwarded query in flight
	stats   dnsCounters
}

// DefaultDNSMaxForwards is how many queries a DNS server forwards at once
// when MaxForwards is zero. Each holds a socket until the upstream answers
// or its 2 s pass, and every task of a node has its own server.
const DefaultDNSMaxForwards = 64

// DNSStats counts what a DNS server did since Start.
type DNSStats struct {
	// Answered counts queries answered from the Registry (names, PTRs,
	// and tasks.NAME that is not there).
	Answered uint64
	// Forwarded counts queries sent to the upstreams; ForwardFailed those
	// no upstream answered (SERVFAIL).
	Forwarded     uint64
	ForwardFailed uint64
	// Overloaded counts queries answered SERVFAIL at once because
	// MaxForwards queries were in flight.
	Overloaded uint64
	// Truncated counts answers cut to the client's size (TC set, so the
	// client asks again over TCP).
	Truncated uint64
}

type dnsCounters struct {
	answered, forwarded, forwardFailed, overloaded, truncated atomic.Uint64
}

// Stats returns the server's counters.
func (d *DNS) Stats() DNSStats {
	return DNSStats{
		Answered:      d.stats.answered.Load(),
		Forwarded:     d.stats.forwarded.Load(),
		ForwardFailed: d.stats.forwardFailed.Load(),
		Overloaded:    d.stats.overloaded.Load(),
		Truncated:     d.stats.truncated.Load(),
	}
}

// TTLs: VIPs are stable for the life of a service; task addresses change.
const (
	vipTTL  = 600
	taskTTL = 0
)

// Start listens on Addr over UDP and TCP. Listening happens in the caller's
// network namespace, so call it from a goroutine locked in the task's.
func (d *DNS) Start(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return fmt.Errorf("netmesh dns: %w", net.ErrClosed)
	}
	if d.udp != nil {
		return nil
	}
	if d.Registry == nil {
		return errors.New("netmesh dns: Registry is required")
	}
	pc, ln, err := listenUDPAndTCP(d.Addr)
	if err != nil {
		return fmt.Errorf("netmesh dns: %w", err)
	}
	n := d.MaxForwards
	if n <= 0 {
		n = DefaultDNSMaxForwards
	}
	d.fwd = make(chan struct{}, n)
	h := dns.HandlerFunc(d.serve)
	d.udp = &dns.Server{PacketConn: pc, Handler: h}
	d.tcp = &dns.Server{Listener: ln, Handler: h}
	d.udpAddr = pc.LocalAddr()
	d.ready = make(chan struct{})
	started := make(chan struct{}, 2)
	d.udp.NotifyStartedFunc = func() { started <- struct{}{} }
	d.tcp.NotifyStartedFunc = func() { started <- struct{}{} }
	go d.udp.ActivateAndServe()
	go d.tcp.ActivateAndServe()
	go func() { <-started; <-started; close(d.ready) }()
	return nil
}

// listenUDPAndTCP listens on addr over UDP and TCP, on the same port. With
// port 0, the port the system picks for UDP may be taken for TCP (by a
// connection's local end): then another is tried.
func listenUDPAndTCP(addr string) (net.PacketConn, net.Listener, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, err
	}
	for try := 0; ; try++ {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, err
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		if port != "0" || try == 10 || !errors.Is(err, syscall.EADDRINUSE) {
			return nil, nil, err
		}
	}
}

// Ready is closed once both listeners serve.
func (d *DNS) Ready() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ready == nil {
		d.ready = make(chan struct{})
	}
	return d.ready
}

// LocalAddr is the UDP address the server answers on.
func (d *DNS) LocalAddr() net.Addr {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.udpAddr
}

// Close stops the server. A second Close returns an error wrapping
// net.ErrClosed.
func (d *DNS) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return fmt.Errorf("netmesh dns: %w", net.ErrClosed)
	}
	d.closed = true
	var err error
	if d.udp != nil {
		err = errors.Join(d.udp.Shutdown(), d.tcp.Shutdown())
	}
	return err
}

func (d *DNS) serve(w dns.ResponseWriter, req *dns.Msg) {
	if len(req.Question) != 1 {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeFormatError)
		d.reply(w, req, m)
		return
	}
	q := req.Question[0]
	if q.Qtype == dns.TypePTR {
		if m := d.reverse(req); m != nil {
			d.stats.answered.Add(1)
			d.reply(w, req, m)
			return
		}
		d.reply(w, req, d.forward(w, req))
		return
	}
	addrs, cluster := d.Registry.Lookup(d.Networks, q.Name)
	if !cluster {
		if isTasksName(q.Name) {
			// tasks.NAME is a cluster name whatever NAME is: no service of
			// that name on the asker's networks is an answer, and asking
			// the upstreams would tell them the task's service names.
			m := new(dns.Msg)
			m.SetRcode(req, dns.RcodeNameError)
			m.Authoritative = true
			d.stats.answered.Add(1)
			d.reply(w, req, m)
			return
		}
		d.reply(w, req, d.forward(w, req))
		return
	}
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if len(addrs) == 0 {
		m.SetRcode(req, dns.RcodeNameError) // the service has no healthy task
	}
	if q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY {
		ttl := uint32(vipTTL)
		if len(addrs) != 1 || strings.HasPrefix(strings.ToLower(q.Name), "tasks.") {
			ttl = taskTTL
		}
		rand.Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
		for _, a := range addrs {
			if a.Is4() {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl}, A: a.AsSlice()})
			}
		}
	}
	d.stats.answered.Add(1)
	d.reply(w, req, m)
}

// isTasksName reports whether name is tasks.NAME with NAME one label, as
// service names are (tasks.example.org is a name like any other).
func isTasksName(name string) bool {
	rest, ok := strings.CutPrefix(strings.ToLower(strings.TrimSuffix(name, ".")), "tasks.")
	return ok && rest != "" && !strings.Contains(rest, ".")
}

// reverse answers a PTR query for a VIP or task address on the asker's
// networks, as Docker answers it for a task (TASKNAME.NETWORK.) and, where
// Docker has no record and forwards, for a VIP (SERVICE.NETWORK.). nil
// means the query is not for such an address: it is forwarded.
func (d *DNS) reverse(req *dns.Msg) *dns.Msg {
	q := req.Question[0]
	addr, ok := reverseAddr(q.Name)
	if !ok {
		return nil
	}
	name, vip, ok := d.Registry.Reverse(d.Networks, addr)
	if !ok {
		return nil
	}
	ttl := uint32(taskTTL)
	if vip {
		ttl = vipTTL
	}
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	m.Answer = []dns.RR{&dns.PTR{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: ttl}, Ptr: name}}
	return m
}

// reverseAddr parses an IPv4 reverse name (d.c.b.a.in-addr.arpa.).
func reverseAddr(name string) (netip.Addr, bool) {
	rest, ok := strings.CutSuffix(strings.ToLower(dns.Fqdn(name)), ".in-addr.arpa.")
	if !ok {
		return netip.Addr{}, false
	}
	labels := strings.Split(rest, ".")
	if len(labels) != 4 {
		return netip.Addr{}, false
	}
	slices.Reverse(labels)
	a, err := netip.ParseAddr(strings.Join(labels, "."))
	return a, err == nil && a.Is4()
}

// reply sends m cut to what the client can take: over UDP 512 bytes, or
// the size its EDNS0 record offers; over TCP 64 KiB. A cut answer has TC
// set, and the client asks again over TCP.
func (d *DNS) reply(w dns.ResponseWriter, req, m *dns.Msg) {
	size := dns.MinMsgSize
	opt := req.IsEdns0()
	if opt != nil {
		size = max(int(opt.UDPSize()), dns.MinMsgSize)
		if m.IsEdns0() == nil {
			m.SetEdns0(dns.DefaultMsgSize, opt.Do())
		}
	}
	if _, tcp := w.LocalAddr().(*net.TCPAddr); tcp {
		size = dns.MaxMsgSize
	}
	tc := m.Truncated
	m.Truncate(size)
	if m.Truncated && !tc {
		d.stats.truncated.Add(1)
	}
	if err := w.WriteMsg(m); err != nil {
		d.logger().Debug("netmesh dns: reply", "err", err)
	}
}

// forward asks the upstreams, over the client's transport, with at most
// MaxForwards queries in flight.
func (d *DNS) forward(w dns.ResponseWriter, req *dns.Msg) *dns.Msg {
	fail := func() *dns.Msg {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeServerFailure)
		return m
	}
	select {
	case d.fwd <- struct{}{}:
		defer func() { <-d.fwd }()
	default:
		d.stats.overloaded.Add(1)
		return fail()
	}
	d.stats.forwarded.Add(1)
	proto := "udp"
	if _, tcp := w.LocalAddr().(*net.TCPAddr); tcp {
		proto = "tcp"
	}
	// The read buffer takes any answer, and EDNS0 offers the upstreams
	// at least 4 KiB, as a forwarding resolver offers its own buffer;
	// reply cuts the answer to the client's size.
	c := &dns.Client{Net: proto, Timeout: 2 * time.Second, UDPSize: dns.MaxMsgSize}
	q := req
	if opt := req.IsEdns0(); opt != nil && opt.UDPSize() < dns.DefaultMsgSize {
		q = req.Copy()
		q.IsEdns0().SetUDPSize(dns.DefaultMsgSize)
	}
	for _, up := range d.Upstreams {
		resp, _, err := c.Exchange(q, up)
		if err == nil {
			return resp
		}
		d.logger().Debug("netmesh dns: upstream failed", "upstream", up, "err", err)
	}
	d.stats.forwardFailed.Add(1)
	return fail()
}

func (d *DNS) logger() *slog.Logger {
	if d.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return d.Logger
}
