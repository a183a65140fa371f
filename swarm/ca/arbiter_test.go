package ca_test

import (
	"errors"
	"testing"

	"github.com/shoalproject/shoal/swarm/ca"
)

// An arbiter's certificate is its own role: it passes where a Raft peer
// is asked for (RaftClientConfig), not where a manager is.
func TestArbiterCertificateRole(t *testing.T) {
	r := newRoot(t, "c1")
	arb := issue(t, r, "a1", ca.RoleArbiter, 0)
	mgr := issue(t, r, "m1", ca.RoleManager, 0)
	wkr := issue(t, r, "w1", ca.RoleWorker, 0)

	id, err := ca.IdentityOf(arb.cert)
	if err != nil || id.Role != ca.RoleArbiter || id.NodeID != "a1" {
		t.Fatalf("identity %+v, %v", id, err)
	}
	// A client that wants a manager refuses an arbiter serving.
	if _, cli := handshake(t, ca.ServerConfig(arb.tls, r), ca.ClientConfig(mgr.tls, r, ca.RoleManager)); cli.err == nil {
		t.Error("a client for managers accepted an arbiter as server")
	}
	// Raft dials managers and arbiters, and refuses workers.
	for _, c := range []struct {
		server string
		cert   node
		ok     bool
	}{{"arbiter", arb, true}, {"manager", mgr, true}, {"worker", wkr, false}} {
		srv, cli := handshake(t, ca.ServerConfig(c.cert.tls, r), ca.RaftClientConfig(mgr.tls, r))
		switch {
		case c.ok && (cli.err != nil || srv.err != nil):
			t.Errorf("Raft to a %s: client %v, server %v", c.server, cli.err, srv.err)
		case !c.ok && !errors.Is(cli.err, ca.ErrWrongRole):
			t.Errorf("Raft to a %s: client %v, want ErrWrongRole", c.server, cli.err)
		}
	}
	// Another CA's arbiter is refused by Raft's dialer too.
	other := newRoot(t, "c1")
	if _, cli := handshake(t, ca.ServerConfig(issue(t, other, "a9", ca.RoleArbiter, 0).tls, other), ca.RaftClientConfig(mgr.tls, r)); !errors.Is(cli.err, ca.ErrUnknownAuthority) {
		t.Errorf("another CA's arbiter: %v, want ErrUnknownAuthority", cli.err)
	}
}
