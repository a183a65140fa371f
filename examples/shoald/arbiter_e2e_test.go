package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/nettest"
	"github.com/shoalproject/shoal/internal/shoallab"
	"github.com/shoalproject/shoal/internal/testimages"
	"github.com/shoalproject/shoal/internal/waitfor"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/ca"
)

// webService is a replicated service of the lab's web image that
// restarts at once.
func webService(name string, replicas uint64) api.ServiceSpec {
	d := time.Duration(0)
	return api.ServiceSpec{Annotations: api.Annotations{Name: name}, Mode: api.Replicated(replicas),
		TaskTemplate: api.TaskSpec{Image: testimages.WebRef, RestartPolicy: &api.RestartPolicy{Condition: api.RestartAny, Delay: &d}}}
}

// clientVia is a control API client of the managers at addrs, with the
// manager certificate kept in certs' data dir, dialling from the host
// from.
func clientVia(t *testing.T, from, certs *shoallab.Host, addrs ...*shoallab.Host) *swarm.Client {
	t.Helper()
	var hostPorts []string
	for _, h := range addrs {
		hostPorts = append(hostPorts, h.Addr.String()+":2377")
	}
	c := clientOfDir(t, certs.DataDir, hostPorts...)
	c.Dial = from.Dial
	return c
}

// clientOnly is a client that calls h alone: a client follows "not the
// leader" answers and learns the other managers, which would carry a
// write the cut-off manager refused to the other side.
func clientOnly(t *testing.T, from, certs, h *shoallab.Host) *swarm.Client {
	t.Helper()
	c := clientVia(t, from, certs, h)
	only := h.Addr.String() + ":2377"
	c.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr != only {
			return nil, fmt.Errorf("test: this client calls %s only, not %s", only, addr)
		}
		return from.Dial(ctx, network, addr)
	}
	return c
}

// clientOfDir is a control API client of the managers at addrs with the
// manager certificate kept in a node's data dir.
func clientOfDir(t *testing.T, dir string, addrs ...string) *swarm.Client {
	t.Helper()
	cert, root, err := (ca.Files{Dir: dir}).Load()
	if err != nil {
		t.Fatal(err)
	}
	return &swarm.Client{Addrs: addrs, TLS: ca.ClientConfig(cert, root, ca.RoleManager)}
}

// leaderHost is the manager host that leads, as the managers see it.
func leaderHost(t *testing.T, c *swarm.Client, managers ...*shoallab.Host) *shoallab.Host {
	t.Helper()
	var leader *shoallab.Host
	waitfor.Within(t, time.Minute, "a manager to lead", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		ns, err := c.Nodes(ctx, swarm.Filter{Roles: []string{"manager"}})
		if err != nil {
			return false
		}
		for _, n := range ns {
			for _, m := range managers {
				if n.ManagerStatus != nil && n.ManagerStatus.Leader && n.ID == m.NodeID() {
					leader = m
					return true
				}
			}
		}
		return false
	})
	return leader
}

// slotsOK checks that each slot of the service has exactly one running
// task, and that there are replicas slots: no slot runs twice.
func slotsOK(ctx context.Context, c *swarm.Client, svc string, replicas int) error {
	ts, err := c.Tasks(ctx, swarm.Filter{Services: []string{svc}})
	if err != nil {
		return err
	}
	bySlot := map[uint64]int{}
	for _, tk := range ts {
		if tk.Status.State == api.TaskRunning {
			bySlot[tk.Slot]++
		}
	}
	if len(bySlot) != replicas {
		return fmt.Errorf("%d slots run, want %d: %v", len(bySlot), replicas, bySlot)
	}
	for slot, n := range bySlot {
		if n != 1 {
			return fmt.Errorf("slot %d runs %d tasks", slot, n)
		}
	}
	return nil
}

// Mode 1 with the real binaries on network-namespace hosts: two managers
// (which run tasks), `shoald arbiter` on a third host and a worker. Kill
// -9 the leader, then the other manager: each time the survivor leads,
// takes writes and runs the dead one's tasks elsewhere. Cut the leader off
// from the other manager and the arbiter: only the other side takes
// writes, the cut-off one refuses with a no-quorum error; after the heal
// every acknowledged write is there and each slot runs once. Kill -9 the
// arbiter: both managers go on and warn; restart it from its data dir: it
// votes again (the warning goes, and a last leader kill needs its vote).
func TestArbiterEndToEnd(t *testing.T) {
	lab := newLab(t, 4)
	ctx := context.Background()
	m0, m1, arb, w := lab.Hosts[0], lab.Hosts[1], lab.Hosts[2], lab.Hosts[3]
	c0, cl := twoManagers(t, lab, m0, m1)
	addr0 := m0.Addr.String() + ":2377"
	// Two managers and no arbiter: the cluster warns (and m1 votes).
	waitfor.Within(t, time.Minute, "a warning that two managers tolerate no failure", func() bool {
		got, err := c0.Cluster(ctx)
		return err == nil && slices.ContainsFunc(got.Warnings, func(s string) bool { return strings.Contains(s, "tolerates no manager failure") })
	})
	// A worker token does not make an arbiter.
	var out bytes.Buffer
	if err := run(ctx, []string{"arbiter", "join", "--token", cl.JoinTokens.Worker, "--data-dir", t.TempDir(), "--listen-addr", "127.0.0.1:0", addr0}, &out, &out); err == nil {
		t.Fatal("shoald arbiter join took a worker token")
	}
	if err := arb.Arbiter("join", "--token", cl.JoinTokens.Arbiter, addr0); err != nil {
		t.Fatal(err)
	}
	if err := lab.Join(ctx, c0, w, cl.JoinTokens.Worker, addr0); err != nil {
		t.Fatal(err)
	}
	// The client talks from the worker's host, which reaches every host
	// throughout.
	c := clientVia(t, w, m0, m0, m1)
	arbiterVotes := func(what string) {
		t.Helper()
		waitfor.Within(t, time.Minute, what, func() bool {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			got, err := c.Cluster(cctx)
			return err == nil && len(got.Arbiters) == 1 && got.Arbiters[0].ID == arb.ArbiterID() && len(got.Warnings) == 0
		})
	}
	arbiterVotes("the arbiter to vote, no warning left")
	replicas := 4
	svc, err := c.CreateService(ctx, webService("web", uint64(replicas)))
	if err != nil {
		t.Fatal(err)
	}
	waitfor.Within(t, 2*time.Minute, "4 running", func() bool { _, n, err := running(ctx, c, svc.ID); return err == nil && n == replicas })

	// Kill -9 a manager: the other leads and takes a write, the dead one's
	// tasks run elsewhere; it comes back from its data dir.
	killManager := func(victim *shoallab.Host, what string) {
		t.Helper()
		other := m0
		if victim == m0 {
			other = m1
		}
		by, _, err := running(ctx, c, svc.ID)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("kill -9 %s (host %d), which runs %d tasks", what, victim.Index, len(by[victim.NodeID()]))
		if err := victim.Stop(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		replicas++
		waitfor.Within(t, time.Minute, fmt.Sprintf("a scale to %d accepted after %s died", replicas, what), func() bool {
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			_, err := c.ScaleService(cctx, "web", uint64(replicas))
			return err == nil
		})
		if got := leaderHost(t, c, m0, m1); got != other {
			t.Fatalf("host %d leads after host %d died", got.Index, victim.Index)
		}
		waitfor.Within(t, 2*time.Minute, fmt.Sprintf("%d running, none on the dead %s", replicas, what), func() bool {
			by, n, err := running(ctx, c, svc.ID)
			return err == nil && n == replicas && len(by[victim.NodeID()]) == 0
		}, func() string { return describe(ctx, c) })
		if err := lab.Run(victim); err != nil {
			t.Fatal(err)
		}
		if err := lab.WaitReady(ctx, c, victim); err != nil {
			t.Fatal(err)
		}
	}
	first := leaderHost(t, c, m0, m1)
	killManager(first, "the leader")
	second := leaderHost(t, c, m0, m1) // the other manager now
	killManager(second, "the leader (the other manager)")

	// Partition: the leader is cut off from the other manager and the
	// arbiter (the worker still reaches both sides).
	cut := leaderHost(t, c, m0, m1)
	kept := m0
	if cut == m0 {
		kept = m1
	}
	t.Logf("partition: host %d (leader) cut off from host %d and the arbiter", cut.Index, kept.Index)
	if err := lab.Net.Partition(nettestHosts(cut), nettestHosts(kept, arb)); err != nil {
		t.Fatal(err)
	}
	healed := false
	defer func() {
		if !healed {
			lab.Net.Heal()
		}
	}()
	cCut, cKept := clientOnly(t, w, m0, cut), clientOnly(t, w, m0, kept)
	var acked []string
	deadline := time.Now().Add(20 * time.Second)
	refused := 0
	for i := 0; time.Now().Before(deadline) || len(acked) < 3 || refused < 3; i++ {
		if time.Since(deadline) > time.Minute {
			t.Fatalf("after a minute of partition: %d writes acknowledged by the majority side, %d refused by the cut-off side", len(acked), refused)
		}
		name := fmt.Sprintf("ack-%d", i)
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := cKept.CreateService(cctx, webService(name, 0))
		cancel()
		if err == nil {
			acked = append(acked, name)
		}
		cctx, cancel = context.WithTimeout(ctx, 3*time.Second)
		_, err = cCut.CreateService(cctx, webService(fmt.Sprintf("cut-%d", i), 0))
		cancel()
		switch {
		case err == nil:
			// A leader that has not yet noticed may only take what it
			// cannot commit: a success here is split brain.
			t.Fatalf("the cut-off manager (host %d) acknowledged a write", cut.Index)
		case strings.Contains(err.Error(), "quorum"):
			refused++
			if refused == 1 {
				t.Logf("the cut-off manager refuses: %v", err)
			}
		default:
			t.Logf("the cut-off manager: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got := leaderHost(t, cKept, kept); got != kept {
		t.Fatalf("the majority side is led by host %d", got.Index)
	}
	t.Logf("partition: %d writes acknowledged by host %d, %d refused by host %d with a no-quorum error", len(acked), kept.Index, refused, cut.Index)
	if err := lab.Net.Heal(); err != nil {
		t.Fatal(err)
	}
	healed = true
	// After the heal, both managers hold every acknowledged write, none of
	// the refused ones, and every slot runs once.
	for _, h := range []*shoallab.Host{m0, m1} {
		ch := clientOnly(t, w, m0, h)
		waitfor.Within(t, time.Minute, fmt.Sprintf("host %d holds the %d acknowledged writes", h.Index, len(acked)), func() bool {
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			svcs, err := ch.Services(cctx, swarm.Filter{})
			if err != nil {
				return false
			}
			var names []string
			for _, s := range svcs {
				names = append(names, s.Spec.Name)
				if strings.HasPrefix(s.Spec.Name, "cut-") {
					t.Fatalf("host %d holds %s, a write the cut-off side refused", h.Index, s.Spec.Name)
				}
			}
			return !slices.ContainsFunc(acked, func(a string) bool { return !slices.Contains(names, a) })
		})
	}
	waitfor.Within(t, 2*time.Minute, "each slot runs once after the heal", func() bool {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		return slotsOK(cctx, c, svc.ID, replicas) == nil
	}, func() string { return fmt.Sprint(slotsOK(ctx, c, svc.ID, replicas)) + "\n" + describe(ctx, c) })

	// Each manager answers with what it sees itself: both reach the
	// arbiter again, and warn of nothing.
	noWarning := func(what string) {
		t.Helper()
		for _, h := range []*shoallab.Host{m0, m1} {
			ch := clientOnly(t, w, m0, h)
			var got *api.Cluster
			waitfor.Within(t, time.Minute, fmt.Sprintf("host %d to warn of nothing %s", h.Index, what), func() bool {
				cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				defer cancel()
				var err error
				got, err = ch.Cluster(cctx)
				return err == nil && len(got.Warnings) == 0
			}, func() string { return fmt.Sprintf("%+v", got) })
		}
	}
	noWarning("after the heal")

	// Kill -9 the arbiter: both managers take writes and warn.
	logFrom := map[*shoallab.Host]int{}
	for _, h := range []*shoallab.Host{m0, m1} {
		b, _ := os.ReadFile(h.LogPath())
		logFrom[h] = len(b)
	}
	if err := arb.Stop(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	replicas++
	if _, err := c.ScaleService(ctx, "web", uint64(replicas)); err != nil {
		t.Fatalf("a write with the arbiter dead: %v", err)
	}
	waitfor.Within(t, time.Minute, "the cluster and both managers warn that the arbiter is unreachable", func() bool {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		got, err := c.Cluster(cctx)
		if err != nil || !slices.ContainsFunc(got.Warnings, func(s string) bool { return strings.Contains(s, "unreachable") }) {
			return false
		}
		ns, err := c.Nodes(cctx, swarm.Filter{Roles: []string{"manager"}})
		return err == nil && len(ns) == 2 && !slices.ContainsFunc(ns, func(n *api.Node) bool {
			return n.ManagerStatus == nil || !strings.Contains(n.ManagerStatus.Warning, "unreachable")
		})
	})
	for _, h := range []*shoallab.Host{m0, m1} {
		ch := clientOnly(t, w, m0, h)
		waitfor.Within(t, 30*time.Second, fmt.Sprintf("host %d's cluster inspect and log to warn of the unreachable arbiter", h.Index), func() bool {
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			got, err := ch.Cluster(cctx)
			b, _ := os.ReadFile(h.LogPath())
			return err == nil && slices.ContainsFunc(got.Warnings, func(s string) bool { return strings.Contains(s, "unreachable") }) &&
				strings.Contains(string(b[logFrom[h]:]), "arbiter unreachable")
		})
	}
	waitfor.Within(t, time.Minute, "all running with the arbiter dead", func() bool {
		_, n, err := running(ctx, c, svc.ID)
		return err == nil && n == replicas
	})
	// It comes back from its data dir and votes again: a leader kill now
	// needs its vote.
	id := arb.ArbiterID()
	if err := arb.Arbiter("run"); err != nil {
		t.Fatal(err)
	}
	arbiterVotes("the restarted arbiter to vote again, the warning gone")
	noWarning("once the arbiter is back")
	if arb.ArbiterID() != id {
		t.Fatalf("the arbiter came back as %s, was %s", arb.ArbiterID(), id)
	}
	killManager(leaderHost(t, c, m0, m1), "the leader, after the arbiter's restart")
	waitfor.Within(t, time.Minute, "each slot runs once at the end", func() bool {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		return slotsOK(cctx, c, svc.ID, replicas) == nil
	}, func() string { return fmt.Sprint(slotsOK(ctx, c, svc.ID, replicas)) })
}

// twoManagers makes a cluster of two managers: init on m0, join on m1.
// It returns a client of m0 and the cluster (its join tokens).
func twoManagers(t *testing.T, lab *shoallab.Lab, m0, m1 *shoallab.Host) (*swarm.Client, *api.Cluster) {
	t.Helper()
	ctx := context.Background()
	c0, err := lab.Init(ctx, m0)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := c0.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.Join(ctx, c0, m1, cl.JoinTokens.Manager, m0.Addr.String()+":2377"); err != nil {
		t.Fatal(err)
	}
	return c0, cl
}

// nettestHosts are the lab hosts' network hosts.
func nettestHosts(hs ...*shoallab.Host) []*nettest.Host {
	var out []*nettest.Host
	for _, h := range hs {
		out = append(out, h.Host)
	}
	return out
}
