package netmesh

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
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
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Gossip spreads where task endpoints live among the nodes of a cluster
// (hashicorp/memberlist, encrypted with the cluster's key): each node
// announces its own endpoints per network with its underlay address, learns
// everybody else's, and forgets those of nodes that leave or die. The
// overlay is programmed from Endpoints.
//
// Trust: every node can read and write gossip (they share the key), so the
// key alone would let any node speak for another and send its tasks'
// traffic elsewhere. Each node therefore signs its own record (Signer), and
// a record is accepted only with a valid signature by the key the managers
// gave for the node it describes (SetNodeKeys). Signed records may be
// relayed by any node, as gossip does; memberlist does not say who sent a
// message, so the signature is what proves a record's author. A record
// that arrives before its node's key is held (the latest per node) and
// checked when the key comes.
//
// Versions: a record carries its node's Generation and a version counting
// its changes in that run; a higher generation wins whatever the version,
// so a restarted node's records replace those of its earlier run still
// held or in flight.
type Gossip struct {
	// Name is this node's unique name in the cluster.
	Name string
	// BindAddr and BindPort are where gossip listens (7946 by default,
	// 0 picks a free port).
	BindAddr string
	BindPort int
	// HostAddr is this node's underlay address, the one VXLAN uses.
	HostAddr netip.Addr
	// Key encrypts gossip at Start: 16, 24 or 32 bytes, the same on every
	// node. RotateKey replaces it while running.
	Key []byte
	// Signer signs this node's records: an ed25519 or ECDSA private key
	// whose public key the other nodes get through SetNodeKeys (from the
	// managers). Required.
	Signer crypto.Signer
	// Generation tells this run of the node from its earlier ones: records
	// of a higher generation win whatever their version. Zero means the
	// time of Start in nanoseconds since 1970, which grows from one run to
	// the next unless the clock is set back across a restart (give a
	// counter kept on disk then).
	Generation uint64
	// KeyGracePeriod is how long RotateKey keeps the replaced key to read
	// what nodes not yet rotated send; zero means DefaultKeyGracePeriod.
	KeyGracePeriod time.Duration
	// Fast tunes probing and gossip for a LAN of few nodes (seconds to
	// detect a dead node instead of tens).
	Fast bool
	// OnChange is called after the known endpoints change, from a
	// goroutine of the Gossip's (one call at a time; changes during a call
	// bring one more call). It may call the Gossip's methods.
	OnChange func()
	// Logger receives the gossip's logs; nil discards.
	Logger *slog.Logger

	startMu  sync.Mutex // one Start at a time
	mu       sync.Mutex
	ml       *memberlist.Memberlist
	keyring  *memberlist.Keyring
	queue    *memberlist.TransmitLimitedQueue
	closed   bool
	gen      uint64
	states   map[string]*gossipState // by node name, verified (and our own)
	own      *gossipState
	keys     map[string]crypto.PublicKey
	pending  map[string][]byte    // the latest record of a node whose key is unknown
	members  map[string]bool      // alive, as memberlist's events tell
	timers   map[*time.Timer]bool // key removals after a grace period
	notify   chan struct{}        // a change to report (OnChange)
	stop     chan struct{}        // closed by Close
	rejected atomic.Uint64
}

// DefaultGossipPort is Docker Swarm's gossip port.
const DefaultGossipPort = 7946

// DefaultKeyGracePeriod is how long a replaced gossip key still decrypts:
// long enough for the managers to reach every node with the new one.
const DefaultKeyGracePeriod = time.Minute

// Gossip errors.
var (
	ErrNoSigner       = errors.New("netmesh: gossip needs a Signer (ed25519 or ECDSA)")
	ErrUnsupportedKey = errors.New("netmesh: gossip signing keys are ed25519 or ECDSA")
)

type gossipState struct {
	Node       string                  `json:"node"`
	Generation uint64                  `json:"gen"`
	Version    uint64                  `json:"version"`
	Host       netip.Addr              `json:"host"`
	Endpoints  map[string][]netip.Addr `json:"endpoints"`

	signed []byte // the envelope it came in (or was sent in)
}

// newer reports whether s replaces cur.
func (s *gossipState) newer(cur *gossipState) bool {
	return cur == nil || s.Generation > cur.Generation || (s.Generation == cur.Generation && s.Version > cur.Version)
}

// A signed record on the wire: "SG1", the signature's length (2 bytes, big
// endian), the signature, then the record's JSON. The signature covers
// signContext followed by the JSON.
const (
	signedMagic = "SG1"
	signContext = "shoal netmesh gossip record v1\n"
)

func (g *Gossip) sign(st *gossipState) ([]byte, error) {
	rec, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	msg := append([]byte(signContext), rec...)
	var sig []byte
	switch g.Signer.Public().(type) {
	case ed25519.PublicKey:
		sig, err = g.Signer.Sign(rand.Reader, msg, crypto.Hash(0))
	case *ecdsa.PublicKey:
		h := sha256.Sum256(msg)
		sig, err = g.Signer.Sign(rand.Reader, h[:], crypto.SHA256)
	default:
		return nil, ErrUnsupportedKey
	}
	if err != nil {
		return nil, fmt.Errorf("netmesh: gossip: signing: %w", err)
	}
	out := make([]byte, 0, len(signedMagic)+2+len(sig)+len(rec))
	out = append(out, signedMagic...)
	out = binary.BigEndian.AppendUint16(out, uint16(len(sig)))
	out = append(out, sig...)
	return append(out, rec...), nil
}

// openSigned splits an envelope and decodes its record (not yet verified).
func openSigned(b []byte) (st *gossipState, sig, rec []byte, ok bool) {
	if len(b) < len(signedMagic)+2 || string(b[:len(signedMagic)]) != signedMagic {
		return nil, nil, nil, false
	}
	n := int(binary.BigEndian.Uint16(b[len(signedMagic):]))
	b = b[len(signedMagic)+2:]
	if len(b) < n {
		return nil, nil, nil, false
	}
	sig, rec = b[:n], b[n:]
	st = &gossipState{}
	if json.Unmarshal(rec, st) != nil || st.Node == "" {
		return nil, nil, nil, false
	}
	return st, sig, rec, true
}

func verify(pub crypto.PublicKey, sig, rec []byte) bool {
	msg := append([]byte(signContext), rec...)
	switch k := pub.(type) {
	case ed25519.PublicKey:
		return len(k) == ed25519.PublicKeySize && ed25519.Verify(k, msg, sig)
	case *ecdsa.PublicKey:
		h := sha256.Sum256(msg)
		return ecdsa.VerifyASN1(k, h[:], sig)
	}
	return false
}

// Start begins gossiping (alone until Join). A Gossip closed cannot start
// again.
func (g *Gossip) Start(ctx context.Context) error {
	g.startMu.Lock()
	defer g.startMu.Unlock()
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return fmt.Errorf("netmesh: gossip: %w", net.ErrClosed)
	}
	if g.ml != nil {
		g.mu.Unlock()
		return nil
	}
	cfg, err := g.prepare()
	g.mu.Unlock()
	if err != nil {
		return err
	}
	// Not under g.mu: memberlist calls the delegates (which take it)
	// from Create already. Until g.ml is set they take nothing in.
	ml, err := memberlist.Create(cfg)
	if err != nil {
		return fmt.Errorf("netmesh: gossip: %w", err)
	}
	g.mu.Lock()
	g.ml = ml
	g.queue = &memberlist.TransmitLimitedQueue{NumNodes: ml.NumMembers, RetransmitMult: 3}
	g.mu.Unlock()
	go g.notifyLoop(g.notify, g.stop)
	return nil
}

// prepare checks the fields and makes the state and memberlist's
// configuration; g.mu is held.
func (g *Gossip) prepare() (*memberlist.Config, error) {
	if g.Name == "" || !g.HostAddr.IsValid() {
		return nil, errors.New("netmesh: gossip needs Name and HostAddr")
	}
	if g.Signer == nil {
		return nil, ErrNoSigner
	}
	switch g.Signer.Public().(type) {
	case ed25519.PublicKey, *ecdsa.PublicKey:
	default:
		return nil, ErrUnsupportedKey
	}
	keyring, err := memberlist.NewKeyring(nil, g.Key)
	if err != nil {
		return nil, fmt.Errorf("netmesh: gossip key: %w", err)
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
	cfg.Keyring = keyring
	cfg.Delegate = gossipDelegate{g}
	cfg.Events = gossipEvents{g}
	cfg.LogOutput = nil
	cfg.Logger = log.New(io.Discard, "", 0)
	if g.Logger != nil {
		cfg.Logger = slog.NewLogLogger(g.Logger.Handler(), slog.LevelDebug)
	}
	gen := g.Generation
	if gen == 0 {
		gen = uint64(time.Now().UnixNano())
	}
	own := &gossipState{Node: g.Name, Generation: gen, Version: 1, Host: g.HostAddr, Endpoints: map[string][]netip.Addr{}}
	if g.own != nil { // endpoints set before Start
		own.Endpoints = g.own.Endpoints
	}
	if own.signed, err = g.sign(own); err != nil {
		return nil, err
	}
	g.own = own
	g.states = map[string]*gossipState{g.Name: own}
	g.members = map[string]bool{}
	g.pending = map[string][]byte{}
	g.timers = map[*time.Timer]bool{}
	g.keyring = keyring
	g.notify = make(chan struct{}, 1)
	g.stop = make(chan struct{})
	return cfg, nil
}

// notifyLoop calls OnChange after changes, from a goroutine of its own:
// changes come from memberlist's goroutines, some holding its locks, and
// OnChange may well call back into Gossip. Changes made while OnChange
// runs are reported by one more call.
func (g *Gossip) notifyLoop(notify, stop chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-notify:
			if g.OnChange != nil {
				g.OnChange()
			}
		}
	}
}

// running returns the memberlist, or why there is none.
func (g *Gossip) running() (*memberlist.Memberlist, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.runningLocked()
}

func (g *Gossip) runningLocked() (*memberlist.Memberlist, error) {
	switch {
	case g.closed:
		return nil, fmt.Errorf("netmesh: gossip: %w", net.ErrClosed)
	case g.ml == nil:
		return nil, ErrNotStarted
	}
	return g.ml, nil
}

// Addr is where this node gossips ("host:port"), for others to Join.
func (g *Gossip) Addr() (string, error) {
	ml, err := g.running()
	if err != nil {
		return "", err
	}
	n := ml.LocalNode()
	return net.JoinHostPort(n.Addr.String(), fmt.Sprint(n.Port)), nil
}

// Join contacts known nodes ("host:port"); it returns how many answered.
// It returns when ctx ends, with ctx's error, even while memberlist still
// waits on a peer (memberlist gives up on each after its TCP timeout: 10
// s, or 1 s with Fast).
func (g *Gossip) Join(ctx context.Context, peers []string) (int, error) {
	ml, err := g.running()
	if err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := ml.Join(peers)
		done <- result{n, err}
	}()
	select {
	case r := <-done:
		return r.n, r.err
	case <-ctx.Done():
		return 0, fmt.Errorf("netmesh: gossip join: %w", ctx.Err())
	}
}

// SetLocalEndpoints announces this node's task addresses on a network.
// Before Start, the endpoints are kept and announced by Start.
func (g *Gossip) SetLocalEndpoints(network string, addrs []netip.Addr) {
	g.mu.Lock()
	prev := g.own
	if prev == nil {
		prev = &gossipState{Node: g.Name, Host: g.HostAddr}
	}
	own := &gossipState{Node: g.Name, Generation: prev.Generation, Version: prev.Version + 1, Host: prev.Host, Endpoints: map[string][]netip.Addr{}}
	for n, a := range prev.Endpoints {
		own.Endpoints[n] = a
	}
	if len(addrs) == 0 {
		delete(own.Endpoints, network)
	} else {
		own.Endpoints[network] = append([]netip.Addr(nil), addrs...)
	}
	if g.ml == nil || g.closed {
		g.own = own
		g.mu.Unlock()
		return
	}
	signed, err := g.sign(own)
	if err != nil { // the signer failed; keep the last signed record out there
		g.mu.Unlock()
		g.logger().Error("netmesh: gossip: record not announced", "err", err)
		return
	}
	own.signed = signed
	g.own, g.states[g.Name] = own, own
	queue := g.queue
	g.mu.Unlock()
	queue.QueueBroadcast(stateBroadcast{node: g.Name, msg: signed})
	g.changed()
}

// SetNodeKeys replaces the public keys of the cluster's nodes, by node
// name (ed25519.PublicKey or *ecdsa.PublicKey), from the managers. Records
// held for want of their node's key are checked now; records of nodes
// whose key changed are checked again and dropped if they no longer
// verify.
func (g *Gossip) SetNodeKeys(keys map[string]crypto.PublicKey) error {
	for name, k := range keys {
		switch k := k.(type) {
		case ed25519.PublicKey:
			if len(k) != ed25519.PublicKeySize {
				return fmt.Errorf("netmesh: gossip key of %s: %w", name, ErrUnsupportedKey)
			}
		case *ecdsa.PublicKey:
			if k == nil {
				return fmt.Errorf("netmesh: gossip key of %s: %w", name, ErrUnsupportedKey)
			}
		default:
			return fmt.Errorf("netmesh: gossip key of %s (%T): %w", name, k, ErrUnsupportedKey)
		}
	}
	g.mu.Lock()
	g.keys = make(map[string]crypto.PublicKey, len(keys))
	for name, k := range keys {
		g.keys[name] = k
	}
	changed := false
	for name, st := range g.states {
		if name == g.Name {
			continue
		}
		if _, sig, rec, _ := openSigned(st.signed); !verify(g.keys[name], sig, rec) {
			delete(g.states, name)
			changed = true
		}
	}
	pending := g.pending
	g.pending = map[string][]byte{}
	g.mu.Unlock()
	for _, b := range pending {
		if g.accept(b) {
			changed = true
		}
	}
	if changed {
		g.changed()
	}
	return nil
}

// InstallKey adds a key that gossip can decrypt with, without sending
// with it yet: the managers hand out the next key to every node ahead of
// the rotation, so that no node sends with a key another cannot read yet.
func (g *Gossip) InstallKey(key []byte) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, err := g.runningLocked(); err != nil {
		return err
	}
	if err := g.keyring.AddKey(key); err != nil {
		return fmt.Errorf("netmesh: gossip key: %w", err)
	}
	return nil
}

// RotateKey makes key the one gossip sends with (installing it if need
// be). The key it replaces still decrypts for KeyGracePeriod, for nodes
// that have not rotated yet, then is removed. A node that rotates before
// another has the key (InstallKey) cannot be read by that one until it
// does; the managers avoid that by installing the next key everywhere
// first.
func (g *Gossip) RotateKey(key []byte) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, err := g.runningLocked(); err != nil {
		return err
	}
	old := g.keyring.GetPrimaryKey()
	if bytes.Equal(old, key) {
		return nil
	}
	if err := g.keyring.AddKey(key); err != nil {
		return fmt.Errorf("netmesh: gossip key: %w", err)
	}
	if err := g.keyring.UseKey(key); err != nil {
		return fmt.Errorf("netmesh: gossip key: %w", err)
	}
	grace := g.KeyGracePeriod
	if grace <= 0 {
		grace = DefaultKeyGracePeriod
	}
	old = bytes.Clone(old)
	var t *time.Timer
	t = time.AfterFunc(grace, func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		if !g.timers[t] {
			return // closed
		}
		delete(g.timers, t)
		// memberlist refuses to remove the key in use, should old have
		// come back by a later rotation.
		if err := g.keyring.RemoveKey(old); err != nil {
			g.logger().Debug("netmesh: gossip: old key kept", "err", err)
		}
	})
	g.timers[t] = true
	return nil
}

// RemoveKey stops decrypting with a key; the key in use cannot be removed.
func (g *Gossip) RemoveKey(key []byte) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, err := g.runningLocked(); err != nil {
		return err
	}
	if err := g.keyring.RemoveKey(key); err != nil {
		return fmt.Errorf("netmesh: gossip key: %w", err)
	}
	return nil
}

// Endpoints lists the endpoints of a network on every node, this one
// included, sorted.
func (g *Gossip) Endpoints(network string) []RemoteEndpoint {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []RemoteEndpoint
	all := g.states
	if g.ml == nil && g.own != nil {
		all = map[string]*gossipState{g.Name: g.own}
	}
	for _, st := range all {
		for _, a := range st.Endpoints[network] {
			out = append(out, RemoteEndpoint{Addr: a, Host: st.Host})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr.Less(out[j].Addr) })
	return out
}

// Members is the number of nodes this node knows alive; 0 before Start
// and after Close.
func (g *Gossip) Members() int {
	ml, err := g.running()
	if err != nil {
		return 0
	}
	return ml.NumMembers()
}

// GossipStats counts what gossip refused.
type GossipStats struct {
	// Rejected counts records dropped for a bad signature or one by a key
	// that is not their node's.
	Rejected uint64
}

// Stats returns the counters.
func (g *Gossip) Stats() GossipStats { return GossipStats{Rejected: g.rejected.Load()} }

// Leave tells the others this node goes, then stops; ctx bounds the wait
// for the message to spread (1 s without a deadline).
func (g *Gossip) Leave(ctx context.Context) error {
	ml, err := g.running()
	if err != nil {
		return err
	}
	timeout := time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	err = ml.Leave(timeout)
	return errors.Join(err, g.Close())
}

// Close stops at once, as a crash would (others find out by probing). A
// second Close returns an error wrapping net.ErrClosed.
func (g *Gossip) Close() error {
	g.mu.Lock()
	ml, err := g.runningLocked()
	if err != nil {
		g.mu.Unlock()
		return err
	}
	g.closed = true
	for t := range g.timers {
		t.Stop()
	}
	g.timers = nil
	close(g.stop)
	g.mu.Unlock()
	return ml.Shutdown()
}

// accept verifies a signed record and merges it; it reports whether the
// known endpoints changed.
func (g *Gossip) accept(b []byte) bool {
	st, sig, rec, ok := openSigned(b)
	if !ok {
		g.rejected.Add(1)
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if st.Node == g.Name || g.ml == nil || g.closed {
		return false
	}
	if !g.members[st.Node] {
		return false // a late message about a node already gone
	}
	if !st.newer(g.states[st.Node]) {
		return false
	}
	key, known := g.keys[st.Node]
	if !known {
		g.pending[st.Node] = bytes.Clone(b)
		return false
	}
	if !verify(key, sig, rec) {
		g.rejected.Add(1)
		g.logger().Warn("netmesh: gossip: record with a bad signature dropped", "node", st.Node)
		return false
	}
	st.signed = bytes.Clone(b)
	g.states[st.Node] = st
	return true
}

// changed has notifyLoop call OnChange.
func (g *Gossip) changed() {
	g.mu.Lock()
	notify := g.notify
	g.mu.Unlock()
	select {
	case notify <- struct{}{}:
	default: // a call is due already (or not started: nobody to tell)
	}
}

func (g *Gossip) logger() *slog.Logger {
	if g.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return g.Logger
}

type gossipDelegate struct{ g *Gossip }

func (d gossipDelegate) NodeMeta(limit int) []byte { return nil }

// NotifyMsg takes a broadcast record, and passes it on when it is new.
func (d gossipDelegate) NotifyMsg(b []byte) {
	if d.g.accept(b) {
		d.g.mu.Lock()
		queue := d.g.queue
		d.g.mu.Unlock()
		st, _, _, _ := openSigned(b)
		queue.QueueBroadcast(stateBroadcast{node: st.Node, msg: bytes.Clone(b)})
		d.g.changed()
	}
}

func (d gossipDelegate) GetBroadcasts(overhead, limit int) [][]byte {
	d.g.mu.Lock()
	queue := d.g.queue
	d.g.mu.Unlock()
	if queue == nil {
		return nil
	}
	return queue.GetBroadcasts(overhead, limit)
}

// LocalState is every record known, as signed by its node.
func (d gossipDelegate) LocalState(join bool) []byte {
	d.g.mu.Lock()
	defer d.g.mu.Unlock()
	all := make([][]byte, 0, len(d.g.states))
	for _, st := range d.g.states {
		all = append(all, st.signed)
	}
	b, _ := json.Marshal(all)
	return b
}

func (d gossipDelegate) MergeRemoteState(buf []byte, join bool) {
	var all [][]byte
	if json.Unmarshal(buf, &all) != nil {
		return
	}
	changed := false
	for _, b := range all {
		changed = d.g.accept(b) || changed
	}
	if changed {
		d.g.changed()
	}
}

// gossipEvents keeps the set of live members. memberlist calls it with its
// node lock held, so Gossip never calls memberlist with g.mu held.
type gossipEvents struct{ g *Gossip }

func (e gossipEvents) NotifyJoin(n *memberlist.Node) {
	e.g.mu.Lock()
	defer e.g.mu.Unlock()
	if e.g.members != nil {
		e.g.members[n.Name] = true
	}
}

func (e gossipEvents) NotifyUpdate(*memberlist.Node) {}

// NotifyLeave drops a node that left or died, with its endpoints.
func (e gossipEvents) NotifyLeave(n *memberlist.Node) {
	e.g.mu.Lock()
	delete(e.g.members, n.Name)
	delete(e.g.pending, n.Name)
	_, had := e.g.states[n.Name]
	if n.Name != e.g.Name {
		delete(e.g.states, n.Name)
	} else {
		had = false
	}
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
