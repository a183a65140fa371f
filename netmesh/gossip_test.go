package netmesh

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/waitfor"
)

var testGossipKey = []byte("0123456789abcdef0123456789abcdef")

// gossipNode is a Gossip with its signing key.
type gossipNode struct {
	*Gossip
	key crypto.Signer
}

func newGossip(t *testing.T, name string, host netip.Addr, key []byte) *gossipNode {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &gossipNode{Gossip: &Gossip{Name: name, BindAddr: "127.0.0.1", HostAddr: host, Key: key, Signer: priv, Fast: true}, key: priv}
}

func (n *gossipNode) start(t *testing.T) {
	t.Helper()
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
}

func startGossip(t *testing.T, name string, host netip.Addr, key []byte) *gossipNode {
	t.Helper()
	n := newGossip(t, name, host, key)
	n.start(t)
	return n
}

// shareKeys gives every node every node's public key, as the managers do.
func shareKeys(t *testing.T, nodes ...*gossipNode) {
	t.Helper()
	keys := map[string]crypto.PublicKey{}
	for _, n := range nodes {
		keys[n.Name] = n.key.Public()
	}
	for _, n := range nodes {
		if err := n.SetNodeKeys(keys); err != nil {
			t.Fatal(err)
		}
	}
}

func gossipAddr(t *testing.T, g *gossipNode) string {
	t.Helper()
	a, err := g.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func joinAll(t *testing.T, gs ...*gossipNode) {
	t.Helper()
	for _, g := range gs[1:] {
		if _, err := g.Join(context.Background(), []string{gossipAddr(t, gs[0])}); err != nil {
			t.Fatal(err)
		}
	}
	waitfor.True(t, fmt.Sprintf("%d members", len(gs)), func() bool {
		for _, g := range gs {
			if g.Members() != len(gs) {
				return false
			}
		}
		return true
	})
}

func hosts(n int) []netip.Addr {
	var out []netip.Addr
	for i := range n {
		out = append(out, netip.AddrFrom4([4]byte{192, 0, 2, byte(1 + i)}))
	}
	return out
}

func TestGossipSpreadsAndForgetsEndpoints(t *testing.T) {
	var gs []*gossipNode
	for i, h := range hosts(3) {
		gs = append(gs, startGossip(t, fmt.Sprint("n", i), h, testGossipKey))
	}
	shareKeys(t, gs...)
	joinAll(t, gs...)
	gs[0].SetLocalEndpoints("front", []netip.Addr{netip.MustParseAddr("10.0.0.5")})
	gs[2].SetLocalEndpoints("front", []netip.Addr{netip.MustParseAddr("10.0.0.7")})
	d := waitfor.True(t, "endpoints everywhere", func() bool {
		for _, g := range gs {
			if len(g.Endpoints("front")) != 2 {
				return false
			}
		}
		return true
	})
	t.Logf("new endpoints reached all 3 nodes in %v", d)
	if got := gs[1].Endpoints("front"); got[0] != (RemoteEndpoint{netip.MustParseAddr("10.0.0.5"), hosts(1)[0]}) {
		t.Fatalf("endpoint %+v", got[0])
	}
	// Withdrawn endpoints go everywhere too.
	gs[2].SetLocalEndpoints("front", nil)
	waitfor.True(t, "withdrawal", func() bool { return len(gs[1].Endpoints("front")) == 1 })
	// A node that dies (no leave message) is forgotten with its endpoints.
	gs[0].Close()
	waitfor.True(t, "dead node forgotten", func() bool { return len(gs[1].Endpoints("front")) == 0 && len(gs[2].Endpoints("front")) == 0 })
}

func TestGossipWrongKeyCannotJoin(t *testing.T) {
	a := startGossip(t, "a", netip.MustParseAddr("192.0.2.1"), []byte("0123456789abcdef"))
	b := startGossip(t, "b", netip.MustParseAddr("192.0.2.2"), []byte("fedcba9876543210"))
	if n, err := b.Join(context.Background(), []string{gossipAddr(t, a)}); err == nil && n > 0 {
		t.Fatalf("joined with a wrong key (%d)", n)
	}
	if err := newGossip(t, "c", netip.MustParseAddr("192.0.2.3"), []byte("short")).Start(context.Background()); err == nil {
		t.Fatal("short key accepted")
	}
}

// forge sends, from node from, a record claiming to be node about's: its
// own endpoints redirected to from's host, with a version beyond any, and
// signed by signer (from's own key, or none). It goes both as a broadcast
// (which others relay) and in from's push-pull state.
func forge(t *testing.T, from, about *gossipNode, signer crypto.Signer, ep netip.Addr) {
	t.Helper()
	st := &gossipState{Node: about.Name, Generation: 1 << 62, Version: 1 << 40, Host: from.HostAddr,
		Endpoints: map[string][]netip.Addr{"front": {ep}}}
	var msg []byte
	if signer == nil {
		msg, _ = json.Marshal(st)
	} else {
		g := &Gossip{Signer: signer}
		var err error
		if msg, err = g.sign(st); err != nil {
			t.Fatal(err)
		}
	}
	from.queue.QueueBroadcast(stateBroadcast{node: about.Name, msg: msg})
	from.mu.Lock()
	st.signed = msg
	from.states[about.Name] = st
	from.mu.Unlock()
}

// A node cannot speak for another: a record of node n0 forged by n2
// (signed with n2's own key, or not at all) is dropped everywhere, while
// n0's own records, relayed by the others, are taken.
func TestGossipRecordsOnlyFromTheirNode(t *testing.T) {
	var gs []*gossipNode
	for i, h := range hosts(3) {
		gs = append(gs, startGossip(t, fmt.Sprint("n", i), h, testGossipKey))
	}
	shareKeys(t, gs...)
	joinAll(t, gs...)
	gs[0].SetLocalEndpoints("front", []netip.Addr{netip.MustParseAddr("10.0.0.5")})
	waitfor.True(t, "n0's own endpoint on n1", func() bool { return len(gs[1].Endpoints("front")) == 1 })
	forge(t, gs[2], gs[0], gs[2].key, netip.MustParseAddr("10.0.0.66"))
	forge(t, gs[2], gs[0], nil, netip.MustParseAddr("10.0.0.67"))
	waitfor.True(t, "forged records seen and dropped", func() bool { return gs[1].Stats().Rejected >= 2 })
	time.Sleep(300 * time.Millisecond) // gossip and push-pull rounds
	for _, g := range gs[:2] {
		if got := g.Endpoints("front"); len(got) != 1 || got[0] != (RemoteEndpoint{netip.MustParseAddr("10.0.0.5"), gs[0].HostAddr}) {
			t.Fatalf("%s knows n0's endpoints as %v", g.Name, got)
		}
	}
	// n0's real records still spread, through n2 as well.
	gs[0].SetLocalEndpoints("front", []netip.Addr{netip.MustParseAddr("10.0.0.8")})
	waitfor.True(t, "n0's new endpoint", func() bool {
		got := gs[1].Endpoints("front")
		return len(got) == 1 && got[0].Addr == netip.MustParseAddr("10.0.0.8")
	})
}

// A record that comes before its node's key is held, and taken once the
// key comes; a key that changes drops the records it no longer signs.
// Signers may be ECDSA keys too (a node's TLS key).
func TestGossipRecordsWaitForTheirKey(t *testing.T) {
	a := startGossip(t, "a", hosts(1)[0], testGossipKey)
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b := &gossipNode{Gossip: &Gossip{Name: "b", BindAddr: "127.0.0.1", HostAddr: hosts(2)[1], Key: testGossipKey, Signer: ec, Fast: true}, key: ec}
	b.SetLocalEndpoints("front", []netip.Addr{netip.MustParseAddr("10.0.0.9")}) // before Start
	b.start(t)
	joinAll(t, a, b)
	waitfor.True(t, "b's record held on a", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.pending["b"] != nil
	})
	if got := a.Endpoints("front"); len(got) != 0 {
		t.Fatalf("endpoints of a node without a key: %v", got)
	}
	shareKeys(t, a, b)
	waitfor.True(t, "b's record taken once its key came", func() bool { return len(a.Endpoints("front")) == 1 })
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	if err := a.SetNodeKeys(map[string]crypto.PublicKey{"a": a.key.Public(), "b": other.Public()}); err != nil {
		t.Fatal(err)
	}
	if got := a.Endpoints("front"); len(got) != 0 {
		t.Fatalf("b's endpoints kept after its key changed: %v", got)
	}
	if err := a.SetNodeKeys(map[string]crypto.PublicKey{"b": "not a key"}); !errors.Is(err, ErrUnsupportedKey) {
		t.Fatalf("a bad key: %v", err)
	}
}

// A restarted node (same name, same port, before the others notice it
// gone) starts its versions again, and its new records still replace
// those of its earlier run.
func TestGossipRestartedNodeWins(t *testing.T) {
	a := startGossip(t, "a", hosts(1)[0], testGossipKey)
	b := startGossip(t, "b", hosts(2)[1], testGossipKey)
	shareKeys(t, a, b)
	joinAll(t, a, b)
	for i := range 5 {
		b.SetLocalEndpoints("front", []netip.Addr{netip.AddrFrom4([4]byte{10, 0, 0, byte(10 + i)})})
	}
	waitfor.True(t, "b's 5th record on a", func() bool {
		got := a.Endpoints("front")
		return len(got) == 1 && got[0].Addr == netip.MustParseAddr("10.0.0.14")
	})
	bAddr := gossipAddr(t, b)
	_, port, _ := net.SplitHostPort(bAddr)
	b.Close()
	b2 := &gossipNode{Gossip: &Gossip{Name: "b", BindAddr: "127.0.0.1", HostAddr: b.HostAddr, Key: testGossipKey, Signer: b.key, Fast: true}, key: b.key}
	fmt.Sscan(port, &b2.BindPort)
	b2.start(t)
	shareKeys(t, a, b2)
	if _, err := b2.Join(context.Background(), []string{gossipAddr(t, a)}); err != nil {
		t.Fatal(err)
	}
	b2.SetLocalEndpoints("front", []netip.Addr{netip.MustParseAddr("10.0.0.99")})
	waitfor.True(t, "the restarted node's record on a", func() bool {
		got := a.Endpoints("front")
		return len(got) == 1 && got[0].Addr == netip.MustParseAddr("10.0.0.99")
	}, func() string { return fmt.Sprint(a.Endpoints("front")) })
}

// The gossip key rotates through memberlist's keyring: the next key
// installed everywhere, then used; the old one still read for the grace
// period, then gone.
func TestGossipKeyRotation(t *testing.T) {
	key2 := []byte("fedcba9876543210fedcba9876543210")
	a := newGossip(t, "a", hosts(1)[0], testGossipKey)
	b := newGossip(t, "b", hosts(2)[1], testGossipKey)
	for _, g := range []*gossipNode{a, b} {
		g.KeyGracePeriod = 500 * time.Millisecond
		g.start(t)
	}
	shareKeys(t, a, b)
	joinAll(t, a, b)
	for _, g := range []*gossipNode{a, b} {
		if err := g.InstallKey(key2); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.RotateKey(key2); err != nil {
		t.Fatal(err)
	}
	// a sends with key2 (b reads it), b still with key1 (a reads it).
	a.SetLocalEndpoints("front", []netip.Addr{netip.MustParseAddr("10.0.0.1")})
	b.SetLocalEndpoints("front", []netip.Addr{netip.MustParseAddr("10.0.0.2")})
	waitfor.True(t, "endpoints across a half-rotated pair", func() bool { return len(a.Endpoints("front")) == 2 && len(b.Endpoints("front")) == 2 })
	if err := b.RotateKey(key2); err != nil {
		t.Fatal(err)
	}
	// A node with only the new key joins.
	c := startGossip(t, "c", hosts(3)[2], key2)
	shareKeys(t, a, b, c)
	if n, err := c.Join(context.Background(), []string{gossipAddr(t, a)}); err != nil || n != 1 {
		t.Fatalf("join with the new key: %d %v", n, err)
	}
	waitfor.True(t, "c learns the others' endpoints", func() bool { return len(c.Endpoints("front")) == 2 })
	// After the grace period, the old key is gone: a node with only it
	// cannot join.
	time.Sleep(700 * time.Millisecond)
	for _, g := range []*gossipNode{a, b} {
		g.mu.Lock()
		keys := g.keyring.GetKeys()
		g.mu.Unlock()
		if len(keys) != 1 || string(keys[0]) != string(key2) {
			t.Fatalf("%s's keys after the grace period: %d", g.Name, len(keys))
		}
	}
	d := startGossip(t, "d", hosts(4)[3], testGossipKey)
	if n, err := d.Join(context.Background(), []string{gossipAddr(t, a)}); err == nil && n > 0 {
		t.Fatalf("joined with the retired key (%d)", n)
	}
	if err := a.RotateKey([]byte("short")); err == nil {
		t.Fatal("a short key accepted")
	}
	if err := a.RemoveKey(key2); err == nil {
		t.Fatal("the key in use removed")
	}
}

// Used before Start or after Close, a Gossip returns errors; it never
// panics.
func TestGossipLifecycleErrors(t *testing.T) {
	ctx := context.Background()
	g := newGossip(t, "a", hosts(1)[0], testGossipKey)
	if _, err := g.Addr(); !errors.Is(err, ErrNotStarted) {
		t.Errorf("Addr before Start: %v", err)
	}
	if _, err := g.Join(ctx, []string{"127.0.0.1:1"}); !errors.Is(err, ErrNotStarted) {
		t.Errorf("Join before Start: %v", err)
	}
	if err := g.Leave(ctx); !errors.Is(err, ErrNotStarted) {
		t.Errorf("Leave before Start: %v", err)
	}
	if err := g.InstallKey(testGossipKey); !errors.Is(err, ErrNotStarted) {
		t.Errorf("InstallKey before Start: %v", err)
	}
	if err := g.RotateKey(testGossipKey); !errors.Is(err, ErrNotStarted) {
		t.Errorf("RotateKey before Start: %v", err)
	}
	if err := g.Close(); !errors.Is(err, ErrNotStarted) {
		t.Errorf("Close before Start: %v", err)
	}
	if g.Members() != 0 {
		t.Errorf("Members before Start: %d", g.Members())
	}
	g.SetLocalEndpoints("front", []netip.Addr{netip.MustParseAddr("10.0.0.1")})
	if got := g.Endpoints("front"); len(got) != 1 {
		t.Errorf("endpoints set before Start: %v", got)
	}
	if err := (&Gossip{Name: "x", HostAddr: hosts(1)[0], Key: testGossipKey}).Start(ctx); !errors.Is(err, ErrNoSigner) {
		t.Errorf("Start without a signer: %v", err)
	}
	if err := g.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := g.Start(ctx); err != nil {
		t.Errorf("second Start: %v", err)
	}
	if err := g.Leave(ctx); err != nil {
		t.Errorf("Leave: %v", err)
	}
	for name, err := range map[string]error{"Close": g.Close(), "Leave": g.Leave(ctx), "Start": g.Start(ctx)} {
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("%s after Leave: %v", name, err)
		}
	}
	if _, err := g.Addr(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Addr after Close: %v", err)
	}
}

// Join returns when its ctx ends, even while a peer keeps it waiting.
func TestGossipJoinHonoursContext(t *testing.T) {
	g := newGossip(t, "a", hosts(1)[0], testGossipKey)
	g.Fast = false // memberlist's own TCP timeout: 10 s
	g.start(t)
	// A peer that accepts the connection and never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	_, err = g.Join(ctx, []string{ln.Addr().String()})
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(t0) > 2*time.Second {
		t.Fatalf("Join to a silent peer: %v after %v, want the context's deadline at 200 ms", err, time.Since(t0))
	}
	cancelled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if _, err := g.Join(cancelled, []string{ln.Addr().String()}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Join with a cancelled context: %v", err)
	}
}
