package swarm

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shoalproject/shoal/swarm/ca"
)

// The management port's protocols, told apart by TLS ALPN: one port per
// manager (2377 by default, as Docker's), every connection mutual TLS
// except joining, which a node does before it has a certificate.
const (
	// ProtoRaft carries Raft between managers.
	ProtoRaft = "shoal-raft/1"
	// ProtoAPI carries the node and control API: JSON over HTTP/2.
	ProtoAPI = "h2"
	// ProtoJoin is how a node without a certificate gets one: the server
	// authenticates (the joiner pins the CA by its token's digest), the
	// client proves itself with the join token. The connection speaks
	// HTTP/1.1.
	ProtoJoin = ca.JoinALPN
)

// DefaultManagementPort is the management port, as Docker's.
const DefaultManagementPort = 2377

// DefaultHandshakeTimeout bounds a TLS handshake on the management port:
// a client that connects and says nothing is dropped then, and it never
// holds up anyone else (handshakes run off the accept loop).
const DefaultHandshakeTimeout = 5 * time.Second

// maxPendingConns bounds the handshakes under way at once; connections
// beyond it are closed at once rather than queued without limit.
const maxPendingConns = 1024

// PortConfig is what a management port serves.
type PortConfig struct {
	// Listener is the port's TCP listener; required. The port owns it.
	Listener net.Listener
	// TLS returns the config for mutually authenticated connections (Raft
	// and the API): it must require and verify client certificates. It is
	// called for every connection, so a renewed certificate takes effect
	// at once.
	TLS func() *tls.Config
	// JoinTLS returns the config for joining nodes (no client
	// certificate); nil refuses joins.
	JoinTLS func() *tls.Config
	// AuthorizeRaft decides whether a verified peer may carry Raft: a
	// manager in the Raft configuration.
	AuthorizeRaft func(tls.ConnectionState) error
	// API serves the node and control API; Join serves joining.
	API, Join http.Handler
	// HandshakeTimeout; 0 means DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// Logger; nil discards.
	Logger *slog.Logger
}

// Port is a running management port.
type Port struct {
	cfg    PortConfig
	raft   *chanListener
	api    *chanListener
	join   *chanListener
	apiSrv *http.Server
	jnSrv  *http.Server
	slots  chan struct{}
	wg     sync.WaitGroup
	once   sync.Once

	connMu    sync.Mutex
	raftConns map[net.Conn]struct{} // handed to Raft: closed with the port
	closing   bool
}

// ServePort starts serving a management port.
func ServePort(cfg PortConfig) (*Port, error) {
	if cfg.Listener == nil || cfg.TLS == nil || cfg.API == nil || cfg.AuthorizeRaft == nil {
		return nil, errors.New("swarm: management port needs Listener, TLS, AuthorizeRaft and API")
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	addr := cfg.Listener.Addr()
	p := &Port{cfg: cfg, raft: newChanListener(addr), api: newChanListener(addr), join: newChanListener(addr),
		slots: make(chan struct{}, maxPendingConns)}
	p.apiSrv = &http.Server{Handler: cfg.API, ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
		// Serve sets up HTTP/2 for connections that negotiated h2.
		TLSConfig: &tls.Config{NextProtos: []string{ProtoAPI}}, ReadHeaderTimeout: 10 * time.Second}
	join := cfg.Join
	if join == nil {
		join = http.NotFoundHandler()
	}
	p.jnSrv = &http.Server{Handler: http.MaxBytesHandler(join, 1<<20), ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second, ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug)}
	p.wg.Add(3)
	go func() { defer p.wg.Done(); p.apiSrv.Serve(p.api) }()
	go func() { defer p.wg.Done(); p.jnSrv.Serve(p.join) }()
	go func() { defer p.wg.Done(); p.accept() }()
	return p, nil
}

// Addr is the port's address.
func (p *Port) Addr() net.Addr { return p.cfg.Listener.Addr() }

// RaftLayer returns the port's Raft side as a raft.StreamLayer: it accepts
// the Raft connections of verified managers and dials others with dial.
func (p *Port) RaftLayer(advertise string, dial func() *tls.Config) raft.StreamLayer {
	return &raftLayer{l: p.raft, advertise: advertise, dial: dial}
}

func (p *Port) accept() {
	for {
		c, err := p.cfg.Listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			p.cfg.Logger.Warn("swarm: management port accept", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		select {
		case p.slots <- struct{}{}:
		default:
			c.Close() // too many handshakes under way
			continue
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer func() { <-p.slots }()
			p.route(c)
		}()
	}
}

// route finishes a connection's TLS handshake (within the timeout) and
// hands it to Raft, the API or joining by its negotiated protocol.
func (p *Port) route(c net.Conn) {
	joining := false
	conf := &tls.Config{GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if slices.Contains(hello.SupportedProtos, ProtoJoin) {
			if p.cfg.JoinTLS == nil {
				return nil, errors.New("swarm: this port does not take joins")
			}
			jc := p.cfg.JoinTLS().Clone()
			jc.NextProtos = []string{ProtoJoin}
			jc.ClientAuth = tls.NoClientCert
			joining = true
			return jc, nil
		}
		sc := p.cfg.TLS().Clone()
		sc.NextProtos = []string{ProtoRaft, ProtoAPI}
		if sc.ClientAuth != tls.RequireAndVerifyClientCert {
			return nil, errors.New("swarm: management port misconfigured: client certificates not required")
		}
		return sc, nil
	}}
	tc := tls.Server(c, conf)
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.HandshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		p.cfg.Logger.Debug("swarm: management port handshake", "remote", c.RemoteAddr(), "err", err)
		c.Close()
		return
	}
	st := tc.ConnectionState()
	var dst *chanListener
	switch {
	case joining:
		// net/http serves HTTP/1.1 on a *tls.Conn only if it negotiated
		// nothing else: hand it over as a plain connection (the
		// handshake is done; the join call needs no client identity).
		if !p.join.put(plainConn{tc}) {
			tc.Close()
		}
		return
	case st.NegotiatedProtocol == ProtoRaft:
		if err := p.cfg.AuthorizeRaft(st); err != nil {
			p.cfg.Logger.Warn("swarm: Raft connection refused", "remote", c.RemoteAddr(), "err", err)
			tc.Close()
			return
		}
		// Raft's transport does not close the connections it accepted
		// when it shuts down: the port does.
		p.connMu.Lock()
		if p.closing {
			p.connMu.Unlock()
			tc.Close()
			return
		}
		if p.raftConns == nil {
			p.raftConns = map[net.Conn]struct{}{}
		}
		p.raftConns[tc] = struct{}{}
		p.connMu.Unlock()
		dst = p.raft
	case st.NegotiatedProtocol == ProtoAPI:
		dst = p.api
	default:
		// A client that negotiated nothing we speak.
		tc.Close()
		return
	}
	if !dst.put(tc) {
		tc.Close()
	}
}

// Close stops the port: the listener, every server, and pending
// connections.
func (p *Port) Close() error {
	var err error
	p.once.Do(func() {
		err = p.cfg.Listener.Close()
		p.connMu.Lock()
		p.closing = true
		for c := range p.raftConns {
			c.Close()
		}
		p.raftConns = nil
		p.connMu.Unlock()
		p.raft.Close()
		p.api.Close()
		p.join.Close()
		p.apiSrv.Close()
		p.jnSrv.Close()
		p.wg.Wait()
	})
	return err
}

// plainConn hides that a connection is TLS from net/http.
type plainConn struct{ net.Conn }

// chanListener is a net.Listener fed with connections routed to it.
type chanListener struct {
	addr   net.Addr
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *chanListener) put(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.closed:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// raftLayer is the port's Raft side.
type raftLayer struct {
	l         *chanListener
	advertise string
	dial      func() *tls.Config
}

var _ raft.StreamLayer = (*raftLayer)(nil)

func (r *raftLayer) Accept() (net.Conn, error) { return r.l.Accept() }
func (r *raftLayer) Close() error              { return r.l.Close() }

func (r *raftLayer) Addr() net.Addr {
	if a, err := net.ResolveTCPAddr("tcp", r.advertise); err == nil {
		return a
	}
	return r.l.Addr()
}

func (r *raftLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	conf := r.dial().Clone()
	conf.NextProtos = []string{ProtoRaft}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: conf}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", string(address))
	if err != nil {
		return nil, err
	}
	if got := c.(*tls.Conn).ConnectionState().NegotiatedProtocol; got != ProtoRaft {
		c.Close()
		return nil, fmt.Errorf("swarm: %s does not speak Raft (negotiated %q)", address, got)
	}
	return c, nil
}
