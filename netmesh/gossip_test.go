package netmesh

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/shoalproject/shoal/internal/waitfor"
)

func startGossip(t *testing.T, name string, host netip.Addr, key []byte) *Gossip {
	t.Helper()
	g := &Gossip{Name: name, BindAddr: "127.0.0.1", HostAddr: host, Key: key, Fast: true}
	if err := g.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

func TestGossipSpreadsAndForgetsEndpoints(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	hosts := []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3")}
	var gs []*Gossip
	for i, h := range hosts {
		gs = append(gs, startGossip(t, fmt.Sprint("n", i), h, key))
	}
	for _, g := range gs[1:] {
		if _, err := g.Join(context.Background(), []string{gs[0].Addr()}); err != nil {
			t.Fatal(err)
		}
	}
	waitfor.True(t, "3 members", func() bool { return gs[2].Members() == 3 })
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
	if got := gs[1].Endpoints("front"); got[0] != (RemoteEndpoint{netip.MustParseAddr("10.0.0.5"), hosts[0]}) {
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
	if n, err := b.Join(context.Background(), []string{a.Addr()}); err == nil && n > 0 {
		t.Fatalf("joined with a wrong key (%d)", n)
	}
	if err := (&Gossip{Name: "c", HostAddr: netip.MustParseAddr("192.0.2.3"), Key: []byte("short")}).Start(context.Background()); err == nil {
		t.Fatal("short key accepted")
	}
}
