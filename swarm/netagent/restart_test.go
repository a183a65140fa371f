package netagent_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/nettest"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/netagent"
)

// An agent ends (its process, as a crash would end it: nothing is
// removed) while its tasks run; a new agent on the same StateDir resumes
// them: same namespace, links and gateway address, DNS and VIPs working
// again, connections that outlived the agent still up; the WireGuard key
// (rotated meanwhile) kept; what the view no longer has (a network, a
// task) removed; a new task gets an address no resumed task has.
func TestAgentRestart(t *testing.T) {
	ctx := context.Background()
	lab := nettest.New(t, 2)
	up := upstream(t)
	dir0 := stateDir(t, "n0")
	rotated := make(chan string, 10)
	a0 := newAgent(t, lab.Hosts[0], "n0", dir0, []string{up}, nil, func(a *netagent.Agent) {
		a.KeyRotation = 200 * time.Millisecond
		a.OnKeyChange = func(k string) { rotated <- k }
	})
	a1 := newAgent(t, lab.Hosts[1], "n1", stateDir(t, "n1"), []string{up}, nil)
	ingress := network("ingress", 4096, "10.255.0.0/16")
	ingress.Spec.Ingress = true
	b := &viewBuilder{nets: []*api.Network{ingress, network("front", 4097, "10.0.1.0/24"), network("old", 4200, "10.0.5.0/24")}}
	for i, h := range lab.Hosts {
		b.nodes = append(b.nodes, &api.NodeEndpoint{ID: fmt.Sprint("n", i), DataAddr: h.Addr.String(),
			Attachments: []api.NetworkAttachment{{NetworkID: "ingress", Addresses: []string{fmt.Sprintf("10.255.0.%d/16", 10+i)}}}})
	}
	b.services = []*api.ServiceEndpoints{
		{ID: "app", Name: "app", VirtualIPs: []api.VirtualIP{{NetworkID: "front", Addr: "10.0.1.2"}},
			Tasks: []*api.TaskEndpoint{{ID: "app.1", NodeID: "n0", Ready: true, Addrs: map[string]string{"front": "10.0.1.10"}}}},
		{ID: "peer", Name: "peer", VirtualIPs: []api.VirtualIP{{NetworkID: "front", Addr: "10.0.1.3"}},
			Tasks: []*api.TaskEndpoint{{ID: "peer.1", NodeID: "n1", Ready: true, Addrs: map[string]string{"front": "10.0.1.11"}}}},
		{ID: "gone", Name: "gone", Tasks: []*api.TaskEndpoint{{ID: "gone.1", NodeID: "n0", Ready: true, Addrs: map[string]string{"old": "10.0.5.10"}}}},
	}
	apply(t, b.view(), a0, a1)
	ns := map[string]string{}
	for _, w := range []struct {
		a  *netagent.Agent
		id string
	}{{a0, "app.1"}, {a1, "peer.1"}, {a0, "gone.1"}} {
		p, _, err := w.a.TaskNetwork(ctx, b.task(w.id))
		if err != nil {
			t.Fatal(err)
		}
		ns[w.id] = p
		serve(t, p, ":80", w.id)
	}
	check := func(when string) {
		t.Helper()
		if got, _, err := lookup(ns["app.1"], "peer"); err != nil || strings.Join(got, " ") != "10.0.1.3" {
			t.Fatalf("%s: peer from app.1: %v %v", when, got, err)
		}
		if body, err := get(ns["app.1"], "http://10.0.1.3:80/"); err != nil || body != "peer.1" {
			t.Fatalf("%s: peer's VIP from app.1: %q %v", when, body, err)
		}
	}
	check("before the restart")
	linksBefore := links(t, ns["app.1"])
	gw := linksBefore["eth1"]
	if len(gw) != 1 {
		t.Fatalf("app.1's gateway link: %v", linksBefore)
	}

	// The key rotates; the new one is told and kept on disk.
	var pub string
	select {
	case pub = <-rotated:
	case <-time.After(5 * time.Second):
		t.Fatal("no key rotation within 5 s")
	}
	time.Sleep(50 * time.Millisecond)
	for len(rotated) > 0 {
		pub = <-rotated
	}

	// A connection from peer.1 to app.1 that outlives the agent.
	k := dialKeepAlive(t, ns["peer.1"], "10.0.1.10:80")
	if body, err := k.ask(); err != nil || body != "app.1" {
		t.Fatalf("peer.1 -> app.1: %q %v", body, err)
	}

	if err := a0.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a0.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	// Rotations told before Close returned (every 200 ms, so one may
	// have come while the connection above was made) count: the key kept
	// is the last one told.
	for len(rotated) > 0 {
		pub = <-rotated
	}
	if rotatedAfterClose := a0.PublicKey(); rotatedAfterClose != pub {
		t.Fatalf("public key %s after Close, last told %s", rotatedAfterClose, pub)
	}
	if _, _, err := lookup(ns["app.1"], "peer"); err == nil {
		t.Fatal("DNS answered in app.1 with no agent")
	}
	if body, err := k.ask(); err != nil || body != "app.1" {
		t.Fatalf("the connection to app.1 with no agent: %q %v", body, err)
	}

	// The view moves on while no agent runs: gone.1 and its network go.
	b.nets = b.nets[:2]
	b.services = b.services[:2]
	view := b.view()
	apply(t, view, a1)
	b0 := newAgent(t, lab.Hosts[0], "n0", dir0, []string{up}, nil)
	if b0.PublicKey() != pub {
		t.Fatalf("restarted agent's public key %s, want the rotated %s", b0.PublicKey(), pub)
	}
	if got := b0.Tasks(); !slices.Equal(got, []string{"app.1", "gone.1"}) {
		t.Fatalf("tasks found on disk: %v", got)
	}
	apply(t, view, b0)
	host := links(t, lab.Hosts[0].Name)
	if _, ok := host["sbr4200"]; ok {
		t.Fatal("the stale network's bridge is left after the first Apply")
	}
	if _, ok := host["sbr4097"]; !ok {
		t.Fatal("front's bridge removed")
	}
	p, _, err := b0.TaskNetwork(ctx, b.task("app.1"))
	if err != nil || p != ns["app.1"] {
		t.Fatalf("resume app.1: %q %v", p, err)
	}
	check("after the restart")
	if body, err := k.ask(); err != nil || body != "app.1" {
		t.Fatalf("the connection to app.1 after the restart: %q %v", body, err)
	}
	if after := links(t, ns["app.1"]); fmt.Sprint(after) != fmt.Sprint(linksBefore) {
		t.Fatalf("app.1's links changed by the resume: %v, were %v", after, linksBefore)
	}

	// Stale task state goes with Prune.
	if err := b0.Prune(ctx, map[string]bool{"app.1": true}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(ns["gone.1"]); !os.IsNotExist(err) {
		t.Fatalf("gone.1's namespace after Prune: %v", err)
	}
	if got := b0.Tasks(); !slices.Equal(got, []string{"app.1"}) {
		t.Fatalf("tasks after Prune: %v", got)
	}
	if entries, _ := os.ReadDir(filepath.Join(dir0, "resolv")); len(entries) != 1 {
		t.Fatalf("resolv.conf files after Prune: %v", entries)
	}

	// A new task's gateway address is none a resumed task has.
	b.services[0].Tasks = append(b.services[0].Tasks, &api.TaskEndpoint{ID: "app.2", NodeID: "n0", Ready: true, Addrs: map[string]string{"front": "10.0.1.12"}})
	apply(t, b.view(), b0, a1)
	p2, _, err := b0.TaskNetwork(ctx, b.task("app.2"))
	if err != nil {
		t.Fatal(err)
	}
	gw2 := links(t, p2)["eth1"]
	if len(gw2) != 1 || gw2[0] == gw[0] {
		t.Fatalf("app.2's gateway address %v, app.1 has %v", gw2, gw)
	}
	serve(t, p2, ":80", "app.2")
	seen := spread(t, ns["peer.1"], "http://10.0.1.2:80/", 20)
	if len(seen) != 2 {
		t.Fatalf("app's VIP from peer.1 after the restart: %v, want both tasks", seen)
	}
}
