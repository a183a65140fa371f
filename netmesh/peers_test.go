package netmesh_test

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/shoalproject/shoal/internal/nettest"
	"github.com/shoalproject/shoal/internal/waitfor"
	"github.com/shoalproject/shoal/netmesh"
)

// TestGossipProgramsOverlay wires gossip to the overlay as an agent does:
// each node announces its tasks' endpoints, and every node programs its
// overlay from what gossip tells it. Tasks reach each other with no other
// source of peers, and a node that dies is forgotten: its endpoints leave
// the other nodes' forwarding tables.
func TestGossipProgramsOverlay(t *testing.T) {
	lab := nettest.New(t, 3)
	n := netmesh.OverlayNetwork{ID: "gossiped", VNI: 4400, Subnet: netip.MustParsePrefix("10.44.0.0/24")}
	key := []byte("0123456789abcdef0123456789abcdef")
	type node struct {
		overlay *netmesh.Overlay
		gossip  *netmesh.Gossip
		task    string
		addr    netip.Addr
		mu      sync.Mutex
		err     error
	}
	var nodes []*node
	nodeKeys := map[string]crypto.PublicKey{} // as the managers hand them out
	for i, h := range lab.Hosts {
		nd := &node{addr: netip.AddrFrom4([4]byte{10, 44, 0, byte(2 + i)})}
		nd.overlay = &netmesh.Overlay{NetNS: "/var/run/netns/" + h.Name, LocalAddr: h.Addr}
		if err := nd.overlay.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nd.overlay.Close() })
		if err := nd.overlay.EnsureNetwork(n); err != nil {
			t.Fatal(err)
		}
		ns, err := lab.NewNamespace(fmt.Sprint("g", i))
		if err != nil {
			t.Fatal(err)
		}
		nd.task = ns
		if err := nd.overlay.Attach(n, "/var/run/netns/"+ns, "eth0", nd.addr); err != nil {
			t.Fatal(err)
		}
		echo(t, ns, nd.addr.String()+":9000")
		// Gossip runs in the test's namespace on loopback: it is control
		// traffic, and memberlist dials from threads of its own.
		_, signer, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		nodeKeys[h.Name] = signer.Public()
		nd.gossip = &netmesh.Gossip{Name: h.Name, BindAddr: "127.0.0.1", HostAddr: h.Addr, Key: key, Signer: signer, Fast: true}
		nd.gossip.OnChange = func() {
			err := nd.overlay.SetEndpoints(n, nd.gossip.Endpoints(n.ID))
			nd.mu.Lock()
			nd.err = err
			nd.mu.Unlock()
		}
		if err := nd.gossip.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nd.gossip.Close() })
		nodes = append(nodes, nd)
	}
	first, err := nodes[0].gossip.Addr()
	if err != nil {
		t.Fatal(err)
	}
	for _, nd := range nodes {
		if err := nd.gossip.SetNodeKeys(nodeKeys); err != nil {
			t.Fatal(err)
		}
	}
	for _, nd := range nodes[1:] {
		if _, err := nd.gossip.Join(context.Background(), []string{first}); err != nil {
			t.Fatal(err)
		}
	}
	for _, nd := range nodes {
		nd.gossip.SetLocalEndpoints(n.ID, []netip.Addr{nd.addr})
	}
	reachable := func(from, to *node) bool { return dial(from.task, to.addr.String()+":9000") == nil }
	start := time.Now()
	waitfor.True(t, "every task reaches every other through gossiped peers", func() bool {
		for _, a := range nodes {
			for _, b := range nodes {
				if a != b && !reachable(a, b) {
					return false
				}
			}
		}
		return true
	})
	t.Logf("full mesh of 3 tasks reachable %v after the endpoints were announced", time.Since(start))
	for _, nd := range nodes {
		nd.mu.Lock()
		if nd.err != nil {
			t.Fatalf("programming the overlay from gossip: %v", nd.err)
		}
		nd.mu.Unlock()
	}
	// Node 2 dies without a word: the others drop its endpoint, and with it
	// its task's forwarding and neighbour entries.
	nodes[2].gossip.Close()
	waitfor.True(t, "the dead node's endpoint forgotten", func() bool {
		return len(nodes[0].gossip.Endpoints(n.ID)) == 2 && len(nodes[1].gossip.Endpoints(n.ID)) == 2
	})
	deadMAC := netmesh.MACFor(nodes[2].addr).String()
	for i, h := range lab.Hosts[:2] {
		nl := netlinkIn(t, h.Name)
		vx, err := nl.LinkByName(fmt.Sprintf("svx%d", n.VNI))
		if err != nil {
			t.Fatal(err)
		}
		waitfor.True(t, fmt.Sprintf("node %d to unprogram the dead node's task", i), func() bool {
			fdb, err1 := nl.NeighList(vx.Attrs().Index, unix.AF_BRIDGE)
			neighs, err2 := nl.NeighList(vx.Attrs().Index, netlink.FAMILY_V4)
			if err1 != nil || err2 != nil {
				return false
			}
			// The VXLAN device's own entries (NTF_SELF); the bridge's
			// learnt ones for the port only age out, and lead nowhere
			// once the device has no entry.
			return !slices.ContainsFunc(fdb, func(e netlink.Neigh) bool {
				return e.Flags&netlink.NTF_SELF != 0 && e.HardwareAddr.String() == deadMAC
			}) &&
				!slices.ContainsFunc(neighs, func(e netlink.Neigh) bool { return e.IP.Equal(nodes[2].addr.AsSlice()) })
		}, func() string {
			fdb, _ := nl.NeighList(vx.Attrs().Index, unix.AF_BRIDGE)
			neighs, _ := nl.NeighList(vx.Attrs().Index, netlink.FAMILY_V4)
			return fmt.Sprintf("forwarding entries %v\nneighbour entries %v\nendpoints known %v", fdb, neighs, nodes[i].gossip.Endpoints(n.ID))
		})
	}
	nodes[0].mu.Lock()
	progErr := nodes[0].err
	nodes[0].mu.Unlock()
	if progErr != nil {
		t.Fatalf("programming the overlay after a node died: %v", progErr)
	}
	if dialWithin(nodes[0].task, nodes[2].addr.String()+":9000", 700*time.Millisecond) == nil {
		t.Fatal("a dead node's task still programmed on the others")
	}
	if !reachable(nodes[0], nodes[1]) {
		t.Fatal("live tasks lost when a node died")
	}
}
