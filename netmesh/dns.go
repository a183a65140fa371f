package netmesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
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

// ServiceEndpoint is what DNS knows of a service.
type ServiceEndpoint struct {
	ID      string
	Name    string
	Aliases []string
	Mode    EndpointMode
	// VIPs is the service's virtual IP on each of its networks.
	VIPs map[string]netip.Addr
	// Tasks are the service's task endpoints.
	Tasks []TaskEndpoint
}

// TaskEndpoint is one task of a service.
type TaskEndpoint struct {
	ID string
	// Addrs is the task's address on each of its networks.
	Addrs map[string]netip.Addr
	// Healthy tasks are answered; the others are left out.
	Healthy bool
}

// Registry holds the service endpoints of a node's networks; the DNS servers
// of all tasks on the node answer from it. It is safe for concurrent use.
type Registry struct {
	mu       sync.RWMutex
	services map[string]ServiceEndpoint
}

// SetService adds or replaces a service.
func (r *Registry) SetService(s ServiceEndpoint) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.services == nil {
		r.services = map[string]ServiceEndpoint{}
	}
	r.services[s.ID] = s
}

// RemoveService forgets a service.
func (r *Registry) RemoveService(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.services, id)
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
		if !s.matches(name) {
			continue
		}
		for _, n := range networks {
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

func (s *ServiceEndpoint) matches(name string) bool {
	if strings.EqualFold(s.Name, name) {
		return true
	}
	for _, a := range s.Aliases {
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
	// Logger receives the server's logs; nil discards.
	Logger *slog.Logger

	mu      sync.Mutex
	udp     *dns.Server
	tcp     *dns.Server
	udpAddr net.Addr
	ready   chan struct{}
	closed  bool
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
	pc, err := net.ListenPacket("udp", d.Addr)
	if err != nil {
		return fmt.Errorf("netmesh dns: %w", err)
	}
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		pc.Close()
		return fmt.Errorf("netmesh dns: %w", err)
	}
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
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	addrs, cluster := d.Registry.Lookup(d.Networks, q.Name)
	if !cluster {
		w.WriteMsg(d.forward(req))
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
	w.WriteMsg(m)
}

func (d *DNS) forward(req *dns.Msg) *dns.Msg {
	c := &dns.Client{Timeout: 2 * time.Second}
	for _, up := range d.Upstreams {
		resp, _, err := c.Exchange(req, up)
		if err == nil {
			return resp
		}
		d.logger().Debug("netmesh dns: upstream failed", "upstream", up, "err", err)
	}
	m := new(dns.Msg)
	m.SetRcode(req, dns.RcodeServerFailure)
	return m
}

func (d *DNS) logger() *slog.Logger {
	if d.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return d.Logger
}
