package swarm_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/waitfor"
	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/ca"
)

// forbidden reports whether err is a manager's refusal of the caller.
func forbidden(err error) bool {
	return err != nil && strings.Contains(err.Error(), "swarm: forbidden")
}

// tarbiter is an Arbiter on loopback.
func tarbiter(t *testing.T, dir string) *swarm.Arbiter {
	t.Helper()
	a := &swarm.Arbiter{Dir: dir, ListenAddr: "127.0.0.1:0", Logger: testLogger(t)}
	t.Cleanup(func() { a.Close() })
	return a
}

func arbiterReady(t *testing.T, a *swarm.Arbiter) {
	t.Helper()
	select {
	case <-a.Ready():
	case <-time.After(waitfor.DefaultTimeout):
		t.Fatalf("arbiter %s not ready", a.ID())
	}
}

// voters returns the voters of a store's Raft configuration by ID.
func voters(t *testing.T, st *raftstore.Store) map[string]bool {
	t.Helper()
	srvs, err := st.Servers(context.Background())
	if err != nil {
		return nil
	}
	out := map[string]bool{}
	for _, s := range srvs {
		if s.Voter {
			out[s.ID] = true
		}
	}
	return out
}

// Two managers and an arbiter, in one process: each token joins only its
// own role; the arbiter votes, and its certificate opens no API; the
// two-manager warning shows until the arbiter votes; an arbiter that wins
// leadership hands it to a manager.
func TestArbiterJoinsWithItsOwnToken(t *testing.T) {
	ctx := context.Background()
	m0 := tnode(t)
	if err := m0.Init(ctx); err != nil {
		t.Fatal(err)
	}
	nodeReady(t, m0)
	cl := m0.Client()
	c, err := cl.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tok := c.JoinTokens
	if tok.Arbiter == "" || tok.Arbiter == tok.Manager || tok.Arbiter == tok.Worker {
		t.Fatalf("tokens %+v: want an arbiter token of its own", tok)
	}
	if len(c.Warnings) != 0 {
		t.Errorf("one manager: warnings %q", c.Warnings)
	}

	// The arbiter token joins no node, whatever role it would take.
	n := tnode(t)
	if err := n.Join(ctx, tok.Arbiter, m0.Addr()); !forbidden(err) || !strings.Contains(err.Error(), "arbiter join token") {
		t.Fatalf("a node joining with the arbiter token: %v", err)
	}
	// Nor do the others join an arbiter.
	for _, other := range []string{tok.Manager, tok.Worker} {
		a := tarbiter(t, t.TempDir())
		if err := a.Join(ctx, other, m0.Addr()); !forbidden(err) || !strings.Contains(err.Error(), "only with the arbiter token") {
			t.Fatalf("an arbiter joining with another role's token: %v", err)
		}
	}
	if got := voters(t, m0.Manager().Store()); len(got) != 1 {
		t.Fatalf("refused joins changed Raft: voters %v", got)
	}

	// A second manager: the cluster warns that it survives no failure.
	m1 := tnode(t)
	if err := m1.Join(ctx, tok.Manager, m0.Addr()); err != nil {
		t.Fatal(err)
	}
	nodeReady(t, m1)
	waitfor.True(t, "2 voters", func() bool { return len(voters(t, m0.Manager().Store())) == 2 })
	c, err = cl.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "tolerates no manager failure") || !strings.Contains(c.Warnings[0], "arbiter") {
		t.Errorf("two managers: cluster warnings %q", c.Warnings)
	}
	ns, err := cl.Nodes(ctx, swarm.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range ns {
		if n.ManagerStatus == nil || !strings.Contains(n.ManagerStatus.Warning, "tolerates no manager failure") {
			t.Errorf("two managers: node %s shows %+v", n.ID, n.ManagerStatus)
		}
	}

	// The arbiter joins and votes.
	a := tarbiter(t, t.TempDir())
	if err := a.Join(ctx, tok.Arbiter, m1.Addr()); err != nil {
		t.Fatal(err)
	}
	arbiterReady(t, a)
	if id, err := ca.IdentityOf(a.Certificate()); err != nil || id.Role != ca.RoleArbiter || id.NodeID != a.ID() {
		t.Fatalf("arbiter certificate %+v, %v", id, err)
	}
	waitfor.True(t, "3 voters, the arbiter among them", func() bool {
		v := voters(t, m0.Manager().Store())
		return len(v) == 3 && v[a.ID()]
	})
	c, err = cl.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Arbiters) != 1 || c.Arbiters[0].ID != a.ID() || c.Arbiters[0].Addr != a.Addr() || len(c.Warnings) != 0 {
		t.Errorf("cluster arbiters %+v, warnings %q", c.Arbiters, c.Warnings)
	}
	// The arbiter is no manager: clients and workers are not sent to it,
	// and no node object stands for it.
	ns, err = cl.Nodes(ctx, swarm.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range ns {
		if n.ID == a.ID() {
			t.Errorf("the arbiter is a node: %+v", n)
		}
		if n.ManagerStatus == nil || n.ManagerStatus.Warning != "" {
			t.Errorf("with an arbiter: node %s shows %+v", n.ID, n.ManagerStatus)
		}
	}

	// Its certificate opens neither the control API nor the dispatcher.
	cert, root, err := (ca.Files{Dir: a.Dir}).Load()
	if err != nil {
		t.Fatal(err)
	}
	conf := ca.ClientConfig(cert, root, ca.RoleManager)
	acl := &swarm.Client{Addrs: []string{m0.Addr(), m1.Addr()}, TLS: conf}
	if _, err := acl.Services(ctx, swarm.Filter{}); !forbidden(err) {
		t.Errorf("the control API to an arbiter certificate: %v", err)
	}
	if _, err := acl.CreateService(ctx, service("evil", api.Replicated(1))); !forbidden(err) {
		t.Errorf("a write with an arbiter certificate: %v", err)
	}
	d := &swarm.RemoteDispatcher{Addrs: []string{m0.Addr()}, TLS: conf}
	if _, err := d.Register(ctx, a.ID(), api.NodeDescription{Hostname: "arbiter"}); !forbidden(err) {
		t.Errorf("the dispatcher to an arbiter certificate: %v", err)
	}
	// It renews as an arbiter, not as the manager its Raft membership
	// would suggest.
	if err := a.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	if id, err := ca.IdentityOf(a.Certificate()); err != nil || id.Role != ca.RoleArbiter {
		t.Fatalf("renewed arbiter certificate %+v, %v", id, err)
	}

	// Leadership handed to the arbiter comes back to a manager.
	leaders, err := m0.Manager().Store().WatchLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var leader *swarm.Node
	waitfor.True(t, "a manager leads", func() bool {
		for _, n := range []*swarm.Node{m0, m1} {
			if n.Manager().IsLeader() {
				leader = n
				return true
			}
		}
		return false
	})
	if err := leader.Manager().Store().TransferLeadership(ctx, a.ID()); err != nil {
		t.Fatalf("leadership to the arbiter: %v", err)
	}
	sawArbiter := false
	waitfor.True(t, "the arbiter led, then a manager", func() bool {
		for {
			select {
			case li := <-leaders:
				if li.ID == a.ID() {
					sawArbiter = true
				}
				if sawArbiter && li.ID != "" && li.ID != a.ID() {
					return true
				}
			default:
				return false
			}
		}
	})
	if a.IsLeader() {
		t.Error("the arbiter still leads")
	}
	if _, err := cl.CreateService(ctx, service("after", api.Replicated(1))); err != nil {
		t.Errorf("a write after the arbiter handed leadership over: %v", err)
	}

	// The arbiter removed: out of Raft and of the cluster object, its
	// certificate refused, and the two managers warn again.
	if err := cl.RemoveArbiter(ctx, "no-such-arbiter"); !errors.Is(err, swarm.ErrNotFound) {
		t.Errorf("removing an arbiter that is not: %v", err)
	}
	if err := cl.RemoveArbiter(ctx, m1.ID()); !errors.Is(err, swarm.ErrNotFound) {
		t.Errorf("removing a manager as an arbiter: %v", err)
	}
	if err := cl.RemoveArbiter(ctx, a.ID()); err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, "the managers alone vote", func() bool {
		v := voters(t, m0.Manager().Store())
		return len(v) == 2 && !v[a.ID()]
	})
	c, err = cl.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Arbiters) != 0 || len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "tolerates no manager failure") {
		t.Errorf("after the arbiter's removal: arbiters %+v, warnings %q", c.Arbiters, c.Warnings)
	}
	if err := a.Renew(ctx); !forbidden(err) || !strings.Contains(err.Error(), "removed from the cluster") {
		t.Errorf("renewal of a removed arbiter: %v", err)
	}
}
