package netmesh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Gossip spreads where task endpoints live among the nodes of a cluster
// (hashicorp/memberlist, encrypted with the cluster's key): each node
// announces its own endpoints per network with its underlay address, learns
// everybody else's, and forgets those of nodes that leave or die. The
// overlay is programmed from Endpoints.
type Gossip struct {
	// Name is this node's unique name in the cluster.
	Name string
	// BindAddr and BindPort are where gossip listens (7946 by default,
	// 0 picks a free port).
	BindAddr string
	BindPort int
	// HostAddr is this node's underlay address, the one VXLAN uses.
	HostAddr netip.Addr
	// Key encrypts gossip: 16, 24 or 32 bytes, the same on every node.
	Key []byte
	// Fast tunes probing and gossip for a LAN of few nodes (seconds to
	// detect a dead node instead of tens).
	Fast bool
	// OnChange is called after the known endpoints change; it must not
	// block for long.
	OnChange func()
	// Logger receives the gossip's logs; nil discards.
	Logger *slog.Logger

	mu     sync.Mutex
	ml     *memberlist.Memberlist
	queue  *memberlist.TransmitLimitedQueue
	states map[string]*gossipState // by node name
	own    *gossipState
}

// DefaultGossipPort is Docker Swarm's gossip port.
const DefaultGossipPort = 7946

type gossipState struct {
	Node      string                  `json:"node"`
	Version   uint64                  `json:"version"`
	Host      netip.Addr              `json:"host"`
	Endpoints map[string][]netip.Addr `json:"endpoints"`
}

// Start begins gossiping (alone until Join).
func (g *Gossip) Start(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ml != nil {
		return nil
	}
	switch len(g.Key) {
	case 16, 24, 32:
	default:
		return fmt.Errorf("netmesh: gossip key must be 16, 24 or 32 bytes, got %d", len(g.Key))
	}
	if g.Name == "" || !g.HostAddr.IsValid() {
		return errors.New("netmesh: gossip needs Name and HostAddr")
	}
	cfg := memberlist.DefaultLANConfig()
	if g.Fast {
		cfg.ProbeInterval, cfg.ProbeTimeout = 200*time.Millisecond, 100*time.Millisecond
		cfg.GossipInterval, cfg.PushPullInterval = 50*time.Millisecond, 2*time.Second
		cfg.SuspicionMult, cfg.TCPTimeout = 2, time.Second
	}
	cfg.Name = g.Name
	cfg.BindAddr = g.BindAddr
	if cfg.BindAddr == "" {
		cfg.BindAddr = "0.0.0.0"
	}
	cfg.BindPort, cfg.AdvertisePort = g.BindPort, g.BindPort
	cfg.SecretKey = g.Key
	cfg.Delegate = gossipDelegate{g}
	cfg.Events = gossipEvents{g}
	cfg.LogOutput = nil
	cfg.Logger = log.New(io.Discard, "", 0)
	if g.Logger != nil {
		cfg.Logger = slog.NewLogLogger(g.Logger.Handler(), slog.LevelDebug)
	}
	g.own = &gossipState{Node: g.Name, Version: 1, Host: g.HostAddr, Endpoints: map[string][]netip.Addr{}}
	g.states = map[string]*gossipState{g.Name: g.own}
	ml, err := memberlist.Create(cfg)
	if err != nil {
		return fmt.Errorf("netmesh: gossip: %w", err)
	}
	g.ml = ml
	g.queue = &memberlist.TransmitLimitedQueue{NumNodes: ml.NumMembers, RetransmitMult: 3}
	return nil
}

// Addr is where this node gossips ("host:port"), for others to Join.
func (g *Gossip) Addr() string {
	n := g.ml.LocalNode()
	return net.JoinHostPort(n.Addr.String(), fmt.Sprint(n.Port))
}

// Join contacts known nodes; it returns how many answered.
func (g *Gossip) Join(ctx context.Context, peers []string) (int, error) {
	return g.ml.Join(peers)
}

// SetLocalEndpoints announces this node's task addresses on a network.
func (g *Gossip) SetLocalEndpoints(network string, addrs []netip.Addr) {
	g.mu.Lock()
	own := &gossipState{Node: g.Name, Version: g.own.Version + 1, Host: g.HostAddr, Endpoints: map[string][]netip.Addr{}}
	for n, a := range g.own.Endpoints {
		own.Endpoints[n] = a
	}
	if len(addrs) == 0 {
		delete(own.Endpoints, network)
	} else {
		own.Endpoints[network] = append([]netip.Addr(nil), addrs...)
	}
	g.own, g.states[g.Name] = own, own
	msg, _ := json.Marshal(own)
	g.mu.Unlock()
	g.queue.QueueBroadcast(stateBroadcast{node: g.Name, msg: msg})
	g.changed()
}

// Endpoints lists the endpoints of a network on every node, this one
// included, sorted.
func (g *Gossip) Endpoints(network string) []RemoteEndpoint {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []RemoteEndpoint
	for _, st := range g.states {
		for _, a := range st.Endpoints[network] {
			out = append(out, RemoteEndpoint{Addr: a, Host: st.Host})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr.Less(out[j].Addr) })
	return out
}

// Members is the number of nodes this node knows alive.
func (g *Gossip) Members() int { return g.ml.NumMembers() }

// Leave tells the others this node goes, then stops.
func (g *Gossip) Leave(ctx context.Context) error {
	timeout := time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	err := g.ml.Leave(timeout)
	return errors.Join(err, g.ml.Shutdown())
}

// Close stops at once, as a crash would (others find out by probing).
func (g *Gossip) Close() error { return g.ml.Shutdown() }

func (g *Gossip) merge(st *gossipState) bool {
	if st == nil || st.Node == "" || st.Node == g.Name {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if cur, ok := g.states[st.Node]; ok && cur.Version >= st.Version {
		return false
	}
	if g.ml != nil && !g.alive(st.Node) {
		return false // a late message about a node already gone
	}
	g.states[st.Node] = st
	return true
}

func (g *Gossip) alive(name string) bool {
	for _, m := range g.ml.Members() {
		if m.Name == name {
			return true
		}
	}
	return false
}

func (g *Gossip) changed() {
	if g.OnChange != nil {
		g.OnChange()
	}
}

type gossipDelegate struct{ g *Gossip }

func (d gossipDelegate) NodeMeta(limit int) []byte { return nil }

func (d gossipDelegate) NotifyMsg(b []byte) {
	var st gossipState
	if json.Unmarshal(b, &st) == nil && d.g.merge(&st) {
		d.g.queue.QueueBroadcast(stateBroadcast{node: st.Node, msg: append([]byte(nil), b...)})
		d.g.changed()
	}
}

func (d gossipDelegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.g.queue.GetBroadcasts(overhead, limit)
}

func (d gossipDelegate) LocalState(join bool) []byte {
	d.g.mu.Lock()
	defer d.g.mu.Unlock()
	all := make([]*gossipState, 0, len(d.g.states))
	for _, st := range d.g.states {
		all = append(all, st)
	}
	b, _ := json.Marshal(all)
	return b
}

func (d gossipDelegate) MergeRemoteState(buf []byte, join bool) {
	var all []*gossipState
	if json.Unmarshal(buf, &all) != nil {
		return
	}
	changed := false
	for _, st := range all {
		changed = d.g.merge(st) || changed
	}
	if changed {
		d.g.changed()
	}
}

type gossipEvents struct{ g *Gossip }

func (e gossipEvents) NotifyJoin(*memberlist.Node)   {}
func (e gossipEvents) NotifyUpdate(*memberlist.Node) {}

// NotifyLeave drops a node that left or died, with its endpoints.
func (e gossipEvents) NotifyLeave(n *memberlist.Node) {
	e.g.mu.Lock()
	_, had := e.g.states[n.Name]
	delete(e.g.states, n.Name)
	e.g.mu.Unlock()
	if had {
		e.g.changed()
	}
}

// stateBroadcast carries one node's record; a newer one replaces it in the
// queue.
type stateBroadcast struct {
	node string
	msg  []byte
}

func (b stateBroadcast) Invalidates(other memberlist.Broadcast) bool {
	o, ok := other.(stateBroadcast)
	return ok && o.node == b.node
}
func (b stateBroadcast) Message() []byte { return b.msg }
func (b stateBroadcast) Finished()       {}
