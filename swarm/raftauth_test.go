package swarm

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"

	"github.com/shoalproject/shoal/internal/testca"
	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm/ca"
)

// startStore starts an in-memory store called id with boot as its
// initial Raft configuration (none: a member that has not been added yet).
func startStore(t *testing.T, id string, boot []raftstore.Server) *raftstore.Store {
	t.Helper()
	st := &raftstore.Store{ID: id, Schema: Schema(), Transport: raftstore.NewMemNetwork().Transport(id), Bootstrap: boot}
	if err := st.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// authorizeRaftPeer, the Raft side of the management port, on certificates
// the cluster's CA issued (TLS has verified them, so only the role and the
// membership are left to check): only managers and arbiters in the Raft
// configuration carry Raft, except that a member that knows no
// configuration yet admits any manager, from whom it learns it. The port
// end to end is TestRaftRefusesOutsiders.
func TestAuthorizeRaftPeer(t *testing.T) {
	root, err := ca.NewRoot("cluster-a")
	if err != nil {
		t.Fatal(err)
	}
	member := startStore(t, "m0", []raftstore.Server{
		{ID: "m0", Address: "m0", Voter: true},
		{ID: "m1", Address: "m1", Voter: true},
		{ID: "arb1", Address: "arb1", Voter: true},
	})
	joining := startStore(t, "m9", nil)
	if srvs, err := joining.Servers(context.Background()); err != nil || len(srvs) != 0 {
		t.Fatalf("a store never added knows the configuration %v (%v)", srvs, err)
	}
	for _, tc := range []struct {
		name string
		st   *raftstore.Store
		id   string // "" presents no certificate
		role ca.Role
		want string // "" admits; else a part of the refusal
	}{
		{"member manager", member, "m1", ca.RoleManager, ""},
		{"member arbiter", member, "arb1", ca.RoleArbiter, ""},
		// A worker certificate naming a member (a promoted worker's old
		// certificate): the role is refused whatever the name.
		{"worker named as a member", member, "m1", ca.RoleWorker, "is a worker, not a manager or an arbiter"},
		{"manager outside the configuration", member, "m7", ca.RoleManager, "manager m7 is not in the Raft configuration"},
		{"arbiter outside the configuration", member, "arb7", ca.RoleArbiter, "arbiter arb7 is not in the Raft configuration"},
		{"no certificate", member, "", "", "no certificate"},
		// Deliberate: the leader that adds a member is not in the
		// member's (empty) configuration until it has sent it.
		{"empty configuration, manager", joining, "m1", ca.RoleManager, ""},
		{"empty configuration, arbiter", joining, "arb1", ca.RoleArbiter, "knows no Raft configuration yet"},
		{"empty configuration, worker", joining, "w1", ca.RoleWorker, "is a worker"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cs tls.ConnectionState
			if tc.id != "" {
				nc, err := testca.Issue(root, tc.id, tc.role, 0)
				if err != nil {
					t.Fatal(err)
				}
				cs.PeerCertificates = append(cs.PeerCertificates, nc.TLS.Leaf)
			}
			err := authorizeRaftPeer(tc.st, cs)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want a refusal saying %q", err, tc.want)
			}
		})
	}
}
