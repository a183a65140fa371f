package ca_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/shoalproject/shoal/swarm/ca"
)

func tokenOf(t *testing.T, r *ca.Root) ca.Token {
	t.Helper()
	s, err := ca.NewToken(r)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ca.ParseToken(s)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestMutualTLS(t *testing.T) {
	r := newRoot(t, "c1")
	mgr := issue(t, r, "m1", ca.RoleManager, 0)
	wkr := issue(t, r, "w1", ca.RoleWorker, 0)

	server, client := ca.ServerConfig(mgr.tls, r), ca.ClientConfig(wkr.tls, r, ca.RoleManager)
	if server.ClientAuth != tls.RequireAndVerifyClientCert || server.MinVersion != tls.VersionTLS13 || client.MinVersion != tls.VersionTLS13 {
		t.Errorf("client auth %v, versions %x %x", server.ClientAuth, server.MinVersion, client.MinVersion)
	}
	if client.ServerName != "shoal-manager" || client.InsecureSkipVerify {
		t.Errorf("the client verifies %q (skip: %v), want shoal-manager", client.ServerName, client.InsecureSkipVerify)
	}
	srv, cli := handshake(t, server, client)
	if srv.err != nil || cli.err != nil {
		t.Fatalf("worker to manager: server %v, client %v", srv.err, cli.err)
	}
	if srv.state.Version != tls.VersionTLS13 {
		t.Errorf("version %x, want TLS 1.3", srv.state.Version)
	}
	// The server knows the caller by its certificate.
	id, err := ca.IdentityOf(srv.state.PeerCertificates[0])
	if err != nil || id.NodeID != "w1" || id.Role != ca.RoleWorker {
		t.Errorf("the server sees %+v, %v", id, err)
	}
	// The server sends the root along, for joining nodes to pin.
	if pc := cli.state.PeerCertificates; len(pc) != 2 || !pc[1].Equal(r.Certificate()) {
		t.Errorf("the server sent %d certificates, want its own and the root", len(pc))
	}
	// A manager calls a manager, with the root in its own chain already.
	withRoot := mgr.tls
	withRoot.Certificate = [][]byte{mgr.cert.Raw, r.Certificate().Raw}
	if srv, cli := handshake(t, ca.ServerConfig(withRoot, r), ca.ClientConfig(mgr.tls, r, "")); srv.err != nil || cli.err != nil {
		t.Errorf("manager to manager: server %v, client %v", srv.err, cli.err)
	}
	if len(withRoot.Certificate) != 2 {
		t.Error("the root was appended twice, or the caller's chain changed")
	}
}

func TestServerConfigRefusesClients(t *testing.T) {
	r := newRoot(t, "c1")
	mgr := issue(t, r, "m1", ca.RoleManager, 0)
	server := ca.ServerConfig(mgr.tls, r)

	// No certificate.
	srv, cli := handshake(t, server, ca.ClientConfig(tls.Certificate{}, r, ca.RoleManager))
	if srv.err == nil || cli.err == nil || !strings.Contains(srv.err.Error(), "certificate") {
		t.Errorf("a client without a certificate: server %v, client %v", srv.err, cli.err)
	}

	// A certificate of another CA (that trusts our root, to get this far).
	other := newRoot(t, "c1")
	intruder := issue(t, other, "w9", ca.RoleWorker, 0)
	srv, cli = handshake(t, server, ca.ClientConfig(intruder.tls, r, ca.RoleManager))
	var unknown x509.UnknownAuthorityError
	if !errors.As(srv.err, &unknown) || cli.err == nil {
		t.Errorf("a client of another CA: server %v, client %v", srv.err, cli.err)
	}

	// Our CA, another cluster: crypto/tls accepts the chain, the
	// configuration refuses the cluster.
	stray := craft(t, r, func(c *x509.Certificate) { c.Subject.Organization = []string{"c2"} })
	srv, cli = handshake(t, server, ca.ClientConfig(stray.tls, r, ca.RoleManager))
	if !errors.Is(srv.err, ca.ErrWrongCluster) || cli.err == nil {
		t.Errorf("a client of another cluster: server %v, client %v", srv.err, cli.err)
	}

	// An expired certificate of our CA.
	old := issue(t, r, "w2", ca.RoleWorker, 1)
	srv, cli = handshake(t, server, ca.ClientConfig(old.tls, r, ca.RoleManager))
	if srv.err == nil || !strings.Contains(srv.err.Error(), "expired") || cli.err == nil {
		t.Errorf("an expired client: server %v, client %v", srv.err, cli.err)
	}

	// A CA added to the returned pool does not let its nodes in.
	widened := ca.ServerConfig(mgr.tls, r)
	widened.ClientCAs.AddCert(other.Certificate())
	srv, cli = handshake(t, widened, ca.ClientConfig(intruder.tls, r, ca.RoleManager))
	if !errors.Is(srv.err, ca.ErrUnknownAuthority) || cli.err == nil {
		t.Errorf("another CA added to ClientCAs: server %v, client %v", srv.err, cli.err)
	}

	// And the control: a node of ours gets in.
	wkr := issue(t, r, "w1", ca.RoleWorker, 0)
	if srv, cli := handshake(t, server, ca.ClientConfig(wkr.tls, r, ca.RoleManager)); srv.err != nil || cli.err != nil {
		t.Errorf("our worker: server %v, client %v", srv.err, cli.err)
	}
}

func TestClientConfigRefusesServers(t *testing.T) {
	r := newRoot(t, "c1")
	wkr := issue(t, r, "w1", ca.RoleWorker, 0)
	client := ca.ClientConfig(wkr.tls, r, ca.RoleManager)

	// A worker serving as a manager.
	srv, cli := handshake(t, ca.ServerConfig(issue(t, r, "w2", ca.RoleWorker, 0).tls, r), client)
	var host x509.HostnameError
	if !errors.As(cli.err, &host) || srv.err == nil {
		t.Errorf("a worker as server: client %v, server %v", cli.err, srv.err)
	}
	// A manager of another CA.
	other := newRoot(t, "c1")
	srv, cli = handshake(t, ca.ServerConfig(issue(t, other, "m9", ca.RoleManager, 0).tls, other), client)
	var unknown x509.UnknownAuthorityError
	if !errors.As(cli.err, &unknown) || srv.err == nil {
		t.Errorf("a manager of another CA: client %v, server %v", cli.err, srv.err)
	}
	// Our manager, another cluster.
	stray := craft(t, r, func(c *x509.Certificate) {
		c.Subject.OrganizationalUnit = []string{"manager"}
		c.Subject.Organization = []string{"c2"}
		c.DNSNames = []string{"shoal-manager", "crafted"}
	})
	srv, cli = handshake(t, ca.ServerConfig(stray.tls, r), client)
	if !errors.Is(cli.err, ca.ErrWrongCluster) || srv.err == nil {
		t.Errorf("a manager of another cluster: client %v, server %v", cli.err, srv.err)
	}
	// An invalid server role refuses every server.
	mgr := issue(t, r, "m1", ca.RoleManager, 0)
	if _, cli := handshake(t, ca.ServerConfig(mgr.tls, r), ca.ClientConfig(wkr.tls, r, "admin")); cli.err == nil {
		t.Error("a client for role admin accepted a manager")
	}
}

func TestJoinClientConfig(t *testing.T) {
	r := newRoot(t, "c1")
	tok := tokenOf(t, r)
	mgr := issue(t, r, "m1", ca.RoleManager, 0)

	// A manager of the pinned root.
	srv, cli := handshake(t, ca.JoinServerConfig(mgr.tls, r), ca.JoinClientConfig(tok))
	if srv.err != nil || cli.err != nil {
		t.Fatalf("the pinned cluster's manager: server %v, client %v", srv.err, cli.err)
	}
	if cli.state.NegotiatedProtocol != ca.JoinALPN || len(srv.state.PeerCertificates) != 0 {
		t.Errorf("protocol %q, client certificates %d", cli.state.NegotiatedProtocol, len(srv.state.PeerCertificates))
	}
	root, err := tok.PinnedRoot(cli.state.PeerCertificates)
	if err != nil || !bytes.Equal(root.CertPEM(), r.CertPEM()) {
		t.Errorf("the root learnt: %v", err)
	}

	// A manager of another root (another cluster, or a man in the middle
	// with a CA of his own).
	other := newRoot(t, "c1")
	srv, cli = handshake(t, ca.JoinServerConfig(issue(t, other, "m1", ca.RoleManager, 0).tls, other), ca.JoinClientConfig(tok))
	if !errors.Is(cli.err, ca.ErrTokenMismatch) || srv.err == nil {
		t.Errorf("another root's manager: client %v, server %v", cli.err, srv.err)
	}

	// A worker of the pinned root.
	srv, cli = handshake(t, ca.JoinServerConfig(issue(t, r, "w1", ca.RoleWorker, 0).tls, r), ca.JoinClientConfig(tok))
	if !errors.Is(cli.err, ca.ErrWrongRole) || srv.err == nil {
		t.Errorf("a worker: client %v, server %v", cli.err, srv.err)
	}

	// An impostor who sends the pinned root (it is public) in front of a
	// certificate of its own CA.
	fake := issue(t, other, "m1", ca.RoleManager, 0)
	impostor := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{{
		Certificate: [][]byte{fake.cert.Raw, r.Certificate().Raw}, PrivateKey: fake.key}}}
	srv, cli = handshake(t, impostor, ca.JoinClientConfig(tok))
	if !errors.Is(cli.err, ca.ErrUnknownAuthority) || srv.err == nil {
		t.Errorf("an impostor with the pinned root: client %v, server %v", cli.err, srv.err)
	}

	// A manager that does not send the root cannot be pinned.
	bare := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{mgr.tls}}
	if _, cli := handshake(t, bare, ca.JoinClientConfig(tok)); !errors.Is(cli.err, ca.ErrTokenMismatch) {
		t.Errorf("a manager without the root in its chain: %v", cli.err)
	}

	// An expired manager certificate of the pinned root.
	old := issue(t, r, "m2", ca.RoleManager, 1)
	if _, cli := handshake(t, ca.JoinServerConfig(old.tls, r), ca.JoinClientConfig(tok)); !errors.Is(cli.err, ca.ErrExpired) {
		t.Errorf("an expired manager: %v", cli.err)
	}

	// A zero token trusts no one.
	if _, cli := handshake(t, ca.JoinServerConfig(mgr.tls, r), ca.JoinClientConfig(ca.Token{})); !errors.Is(cli.err, ca.ErrTokenMismatch) {
		t.Errorf("a zero token: %v", cli.err)
	}
}

// TestOnePortServesJoinsAndNodes checks the composition JoinServerConfig's
// documentation shows: one listener, mutual TLS for nodes, the join
// protocol for nodes without a certificate, and nothing else.
func TestOnePortServesJoinsAndNodes(t *testing.T) {
	r := newRoot(t, "c1")
	mgr := issue(t, r, "m1", ca.RoleManager, 0)
	srvCfg := ca.ServerConfig(mgr.tls, r)
	join := ca.JoinServerConfig(mgr.tls, r)
	srvCfg.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		if slices.Contains(h.SupportedProtos, ca.JoinALPN) {
			return join, nil
		}
		return nil, nil
	}

	srv, cli := handshake(t, srvCfg, ca.JoinClientConfig(tokenOf(t, r)))
	if srv.err != nil || cli.err != nil || srv.state.NegotiatedProtocol != ca.JoinALPN {
		t.Errorf("a join: server %v, client %v, protocol %q", srv.err, cli.err, srv.state.NegotiatedProtocol)
	}
	wkr := issue(t, r, "w1", ca.RoleWorker, 0)
	srv, cli = handshake(t, srvCfg, ca.ClientConfig(wkr.tls, r, ca.RoleManager))
	if srv.err != nil || cli.err != nil || srv.state.NegotiatedProtocol != "" || len(srv.state.PeerCertificates) == 0 {
		t.Errorf("a node: server %v, client %v, protocol %q", srv.err, cli.err, srv.state.NegotiatedProtocol)
	}
	srv, cli = handshake(t, srvCfg, ca.ClientConfig(tls.Certificate{}, r, ca.RoleManager))
	if srv.err == nil || cli.err == nil {
		t.Errorf("a node without certificate nor join: server %v, client %v", srv.err, cli.err)
	}
	// A client without certificate that offers the join protocol and
	// another one gets the join protocol: unauthenticated connections are
	// always marked.
	sly := ca.JoinClientConfig(tokenOf(t, r))
	sly.NextProtos = []string{"h2", ca.JoinALPN}
	srv, cli = handshake(t, srvCfg, sly)
	if srv.err != nil || cli.err != nil || srv.state.NegotiatedProtocol != ca.JoinALPN {
		t.Errorf("a join offering h2 too: server %v, client %v, protocol %q", srv.err, cli.err, srv.state.NegotiatedProtocol)
	}
}
