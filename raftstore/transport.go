package raftstore

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// MemNetwork connects in-memory transports, for tests and simulations of
// many members in one process. Partitions cut links in both directions.
type MemNetwork struct {
	mu    sync.Mutex
	nodes map[string]*memTransport
	cut   map[[2]string]bool
}

// memTransport leaves the network when closed, so a member restarted at the
// same address gets a fresh transport.
type memTransport struct {
	*raft.InmemTransport
	net *MemNetwork
}

func (t *memTransport) Close() error {
	t.net.mu.Lock()
	defer t.net.mu.Unlock()
	if t.net.nodes[string(t.LocalAddr())] == t {
		delete(t.net.nodes, string(t.LocalAddr()))
	}
	t.DisconnectAll()
	for _, o := range t.net.nodes {
		o.Disconnect(t.LocalAddr())
	}
	return nil
}

// NewMemNetwork returns an empty network.
func NewMemNetwork() *MemNetwork {
	return &MemNetwork{nodes: map[string]*memTransport{}, cut: map[[2]string]bool{}}
}

// Transport returns the transport of the member at addr, making it on first
// use and linking it to every member it is not cut off from.
func (n *MemNetwork) Transport(addr string) raft.Transport {
	n.mu.Lock()
	defer n.mu.Unlock()
	if t, ok := n.nodes[addr]; ok {
		return t
	}
	_, it := raft.NewInmemTransportWithTimeout(raft.ServerAddress(addr), 500*time.Millisecond)
	t := &memTransport{InmemTransport: it, net: n}
	n.nodes[addr] = t
	n.relink()
	return t
}

// Partition cuts every link between the two groups of addresses.
func (n *MemNetwork) Partition(a, b []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, x := range a {
		for _, y := range b {
			n.cut[[2]string{x, y}], n.cut[[2]string{y, x}] = true, true
		}
	}
	n.relink()
}

// Isolate cuts addr off from every other member.
func (n *MemNetwork) Isolate(addr string) {
	n.mu.Lock()
	var others []string
	for a := range n.nodes {
		if a != addr {
			others = append(others, a)
		}
	}
	n.mu.Unlock()
	n.Partition([]string{addr}, others)
}

// Heal restores every link.
func (n *MemNetwork) Heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	clear(n.cut)
	n.relink()
}

func (n *MemNetwork) relink() {
	for a, ta := range n.nodes {
		ta.DisconnectAll()
		for b, tb := range n.nodes {
			if a != b && !n.cut[[2]string{a, b}] {
				ta.Connect(raft.ServerAddress(b), tb.InmemTransport)
			}
		}
	}
}

// TLSStreamLayer carries Raft over TLS connections: the listener side
// accepts with Config, the dialing side dials with it. Both sides should
// require and verify certificates (mutual TLS); that is the Config's job.
// Any raft.StreamLayer works in its place, for example one that shares a
// multiplexed management port.
type TLSStreamLayer struct {
	ln     net.Listener
	config *tls.Config
}

var _ raft.StreamLayer = (*TLSStreamLayer)(nil)

// NewTLSStreamLayer wraps a plain listener. config must hold the member's
// certificate and the CA pool to verify peers with.
func NewTLSStreamLayer(ln net.Listener, config *tls.Config) *TLSStreamLayer {
	return &TLSStreamLayer{ln: tls.NewListener(ln, config), config: config}
}

// Accept waits for the next connection and completes its handshake.
func (t *TLSStreamLayer) Accept() (net.Conn, error) {
	for {
		c, err := t.ln.Accept()
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = c.(*tls.Conn).HandshakeContext(ctx)
		cancel()
		if err == nil {
			return c, nil
		}
		c.Close() // a failed handshake is the peer's problem, not the listener's
	}
}

// Close closes the listener.
func (t *TLSStreamLayer) Close() error { return t.ln.Close() }

// Addr is the listening address.
func (t *TLSStreamLayer) Addr() net.Addr { return t.ln.Addr() }

// Dial opens a TLS connection to a member.
func (t *TLSStreamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: t.config}
	return d.Dial("tcp", string(addr))
}

// NewNetworkTransport makes a Raft transport over a stream layer.
func NewNetworkTransport(stream raft.StreamLayer, logger *slog.Logger) *raft.NetworkTransport {
	return raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  stream,
		MaxPool: 8,
		Timeout: 10 * time.Second,
		Logger:  newHCLogger(logger, "raft-net"),
	})
}

// commitGuard wraps the transport of a member whose leader appends return
// before they are synced (see WAL.StoreLogs): the commit index it sends
// never passes the leader's durable log, so no follower applies an entry
// that a power loss on the leader could still take back.
type commitGuard struct {
	raft.Transport
	durable func() uint64
}

// commitGuardPreVote keeps raft's pre-vote when the wrapped transport has it
// (raft looks for the method on the transport it is given).
type commitGuardPreVote struct {
	*commitGuard
	pv raft.WithPreVote
}

// A commitGuard has no Close: raft closes a transport that has one when
// it shuts down, and Store.RecoverAlone shuts raft down and starts it
// again on the same transport. Store.Close closes the transport.
var _ raft.WithPreVote = commitGuardPreVote{}

func guardCommits(t raft.Transport, durable func() uint64) raft.Transport {
	g := &commitGuard{Transport: t, durable: durable}
	if pv, ok := t.(raft.WithPreVote); ok {
		return commitGuardPreVote{commitGuard: g, pv: pv}
	}
	return g
}

func (g *commitGuard) clamp(args *raft.AppendEntriesRequest) {
	if d := g.durable(); args.LeaderCommitIndex > d {
		args.LeaderCommitIndex = d
	}
}

func (g *commitGuard) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	g.clamp(args)
	return g.Transport.AppendEntries(id, target, args, resp)
}

func (g *commitGuard) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	p, err := g.Transport.AppendEntriesPipeline(id, target)
	if err != nil {
		return nil, err
	}
	return &guardedPipeline{AppendPipeline: drainPipeline(p), g: g}, nil
}

func (g commitGuardPreVote) RequestPreVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	return g.pv.RequestPreVote(id, target, args, resp)
}

type guardedPipeline struct {
	raft.AppendPipeline
	g *commitGuard
}

func (p *guardedPipeline) AppendEntries(args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	p.g.clamp(args)
	return p.AppendPipeline.AppendEntries(args, resp)
}
