package swarm_test

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shoalproject/shoal/internal/testca"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/ca"
	"github.com/shoalproject/shoal/swarm/swarmtest"
)

// raftDialer is the dialing side of a Raft transport that presents a
// chosen certificate on the management port's Raft protocol. It accepts
// nothing.
type raftDialer struct {
	conf   *tls.Config
	closed chan struct{}
}

var _ raft.StreamLayer = (*raftDialer)(nil)

func (d *raftDialer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	conf := d.conf.Clone()
	conf.NextProtos = []string{swarm.ProtoRaft}
	return (&tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: conf}).Dial("tcp", string(addr))
}

func (d *raftDialer) Accept() (net.Conn, error) { <-d.closed; return nil, net.ErrClosed }
func (d *raftDialer) Close() error              { close(d.closed); return nil }
func (d *raftDialer) Addr() net.Addr            { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// askVote sends a stale vote request (term 0: harmless to any member) to
// the Raft side of the management port at addr as the holder of cert, and
// returns the term the member answered with.
func askVote(t *testing.T, addr string, cert tls.Certificate, root *ca.Root) (uint64, error) {
	t.Helper()
	d := &raftDialer{conf: ca.RaftClientConfig(cert, root), closed: make(chan struct{})}
	tr := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{Stream: d, Timeout: 5 * time.Second})
	defer tr.Close()
	id := cert.Leaf.Subject.CommonName
	req := &raft.RequestVoteRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(id), Addr: []byte("127.0.0.1:1")}}
	var resp raft.RequestVoteResponse
	err := tr.RequestVote(raft.ServerID(id), raft.ServerAddress(addr), req, &resp)
	return resp.Term, err
}

// The Raft protocol of a real manager's management port carries only the
// managers in the Raft configuration: a member's certificate gets Raft
// answers, while a worker's, a worker certificate naming a member (a
// promoted worker's old one), a manager certificate of this cluster's CA
// whose node is not in the configuration, and an arbiter's outside it all
// pass TLS (same CA) and have the connection closed before Raft reads
// anything, at once rather than at the transport's timeout.
func TestRaftRefusesOutsiders(t *testing.T) {
	c := swarmtest.NewTLS(t, swarmtest.TLSOptions{Managers: 2, Workers: 1})
	leader := c.Node(c.LeaderName())
	root, err := leader.Manager().Root()
	if err != nil {
		t.Fatal(err)
	}
	issued := func(id string, role ca.Role) tls.Certificate {
		nc, err := testca.Issue(root, id, role, 0)
		if err != nil {
			t.Fatal(err)
		}
		return nc.TLS
	}
	files := func(name string) tls.Certificate {
		cert, _, err := (ca.Files{Dir: c.Node(name).Dir}).Load()
		if err != nil {
			t.Fatal(err)
		}
		return cert
	}
	// The member dialing is the other manager, not the one answering.
	memberName := "m0"
	if c.NodeID(memberName) == leader.ID() {
		memberName = "m1"
	}
	memberID := c.NodeID(memberName)
	if in, _ := raftMember(t.Context(), leader, memberID); !in {
		t.Fatalf("%s is not in the Raft configuration", memberName)
	}
	if term, err := askVote(t, leader.Addr(), files(memberName), root); err != nil || term == 0 {
		t.Fatalf("a member's vote request: term %d, %v; want Raft's answer", term, err)
	}
	for _, tc := range []struct {
		name string
		cert tls.Certificate
	}{
		{"worker", files("node0")},
		{"worker named as a member", issued(memberID, ca.RoleWorker)},
		{"manager outside the configuration", issued("intruder", ca.RoleManager)},
		{"arbiter outside the configuration", issued("stray-arbiter", ca.RoleArbiter)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			term, err := askVote(t, leader.Addr(), tc.cert, root)
			took := time.Since(start)
			if err == nil {
				t.Fatalf("Raft answered (term %d)", term)
			}
			// The port closes the connection once TLS is done: the
			// request meets its end (or a reset, or a broken pipe if
			// the close came before the request was written), well
			// before the transport's 5 s timeout.
			closed := errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
			if !closed || took > 2*time.Second {
				t.Fatalf("after %v: %v; want the connection closed at once (EOF, a reset or a broken pipe)", took, err)
			}
			t.Logf("refused in %v: %v", took, err)
		})
	}
	// The refusals touched no one else.
	if term, err := askVote(t, leader.Addr(), files(memberName), root); err != nil || term == 0 {
		t.Fatalf("a member's vote request after the refusals: term %d, %v", term, err)
	}
}
