package ca

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"time"
)

// JoinALPN is the application protocol a joining node offers (and only
// it): a manager serves such a connection with JoinServerConfig and only
// the join call on it.
const JoinALPN = "shoal-join"

// ServerConfig returns the TLS configuration of a node's server side
// (a manager's management port): TLS 1.3 at least, the node's certificate
// cert with the root appended to its chain (so that joining nodes can pin
// it), and a client certificate required, issued by root, of root's
// cluster, for a node (Root.Verify's checks). The handler learns who calls
// with IdentityOf(state.PeerCertificates[0]).
//
// Callers that refuse more (a removed node) wrap VerifyConnection. A nil
// root trusts no client.
func ServerConfig(cert tls.Certificate, root *Root) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: withRoot(cert, root),
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    root.Pool(),
		RootCAs:      root.Pool(),
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := verifyPeer(root, cs, "")
			return err
		},
	}
}

// JoinServerConfig returns the TLS configuration a manager serves a
// joining node with: like ServerConfig but with no client certificate
// asked (a joining node has none yet) and JoinALPN as the only protocol.
// The joining node authenticates with its token's secret, inside the
// connection. A manager serves both on one port by choosing in
// GetConfigForClient:
//
//	srv := ca.ServerConfig(cert, root)
//	join := ca.JoinServerConfig(cert, root)
//	srv.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
//		if slices.Contains(h.SupportedProtos, ca.JoinALPN) {
//			return join, nil
//		}
//		return nil, nil // srv itself
//	}
//
// and must then serve nothing but the join call on a connection whose
// ConnectionState().NegotiatedProtocol is JoinALPN. A connection without a
// client certificate always negotiates JoinALPN: JoinServerConfig offers
// nothing else, whatever else the client offers.
func JoinServerConfig(cert tls.Certificate, root *Root) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: withRoot(cert, root),
		ClientAuth:   tls.NoClientCert,
		NextProtos:   []string{JoinALPN},
	}
}

// ClientConfig returns the TLS configuration of a node that calls another
// (a worker or a manager calling a manager): TLS 1.3 at least, the node's
// certificate cert, and the server's certificate verified against root for
// the DNS name of serverRole ("shoal-manager"; "" means RoleManager), not
// for an address, so managers can change addresses; the server must also
// be of root's cluster and have that role in its certificate. With a zero
// cert the client presents none (and a ServerConfig server refuses it).
func ClientConfig(cert tls.Certificate, root *Root, serverRole Role) *tls.Config {
	if serverRole == "" {
		serverRole = RoleManager
	}
	var certs []tls.Certificate
	if len(cert.Certificate) > 0 {
		certs = []tls.Certificate{cert}
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: certs,
		RootCAs:      root.Pool(),
		ServerName:   serverRole.ServerName(),
		VerifyConnection: func(cs tls.ConnectionState) error {
			if err := checkRole(serverRole); err != nil {
				return err
			}
			_, err := verifyPeer(root, cs, serverRole)
			return err
		},
	}
}

// RaftClientConfig returns the TLS configuration a Raft member dials
// another with: like ClientConfig, but the server may be a manager or an
// arbiter (both carry Raft; an arbiter's certificate has the DNS name
// "shoal-arbiter", so the server's certificate is verified here against
// root and for one of the two roles, not by its name).
func RaftClientConfig(cert tls.Certificate, root *Root) *tls.Config {
	c := ClientConfig(cert, root, RoleManager)
	c.ServerName = ""
	// Verification is VerifyConnection's: root.Verify's checks, and the
	// role.
	c.InsecureSkipVerify = true
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		id, err := verifyPeer(root, cs, "")
		if err != nil {
			return err
		}
		if id.Role != RoleManager && id.Role != RoleArbiter {
			return certError(ErrWrongRole, id.NodeID, id.NotBefore, id.NotAfter, "it is a %s, want a manager or an arbiter", id.Role)
		}
		return nil
	}
	return c
}

// JoinClientConfig returns the TLS configuration of a node that joins with
// token and so has no certificate yet, nor the cluster's root: it cannot
// verify the server up front. It accepts a server only if one of the
// certificates it presents is the root CA the token pins (by digest), and
// its own certificate is a valid manager certificate under that root.
// After the handshake, token.PinnedRoot(state.PeerCertificates) gives the
// root to keep. It offers JoinALPN as its only protocol.
func JoinClientConfig(token Token) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: RoleManager.ServerName(),
		NextProtos: []string{JoinALPN},
		// Verification is VerifyConnection's, against the pinned root.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			root, err := token.PinnedRoot(cs.PeerCertificates)
			if err != nil {
				return err
			}
			_, err = verifyPeer(root, cs, RoleManager)
			return err
		},
	}
}

// verifyPeer checks the peer of a handshake against root as Root.Verify
// does, and its role unless role is "". A chain that crypto/tls verified
// already against root's pool (VerifiedChains) is not verified again: only
// what crypto/tls does not check (the cluster, the shape) is.
func verifyPeer(root *Root, cs tls.ConnectionState, role Role) (Identity, error) {
	if !root.ok() {
		return Identity{}, ErrNoRoot
	}
	chain := cs.PeerCertificates
	if len(chain) == 0 || chain[0] == nil {
		return Identity{}, fmt.Errorf("%w presented", ErrNoCertificate)
	}
	var id Identity
	var err error
	if verifiedBy(cs.VerifiedChains, root) {
		id, err = root.checkIdentity(chain[0])
	} else {
		id, err = root.verifyLeaf(chain[0], time.Now())
	}
	if err != nil {
		return Identity{}, err
	}
	if role != "" && id.Role != role {
		return Identity{}, certError(ErrWrongRole, id.NodeID, id.NotBefore, id.NotAfter, "it is a %s, want a %s", id.Role, role)
	}
	return id, nil
}

// verifiedBy reports whether crypto/tls verified a chain ending in root
// (and not in another CA someone added to the config's pool).
func verifiedBy(chains [][]*x509.Certificate, root *Root) bool {
	for _, c := range chains {
		if len(c) > 0 && c[len(c)-1].Equal(root.cert) {
			return true
		}
	}
	return false
}

// withRoot returns cert as the only certificate of a config, with the
// root's certificate appended to its chain unless it is there already.
func withRoot(cert tls.Certificate, root *Root) []tls.Certificate {
	if len(cert.Certificate) == 0 {
		return nil
	}
	if root.ok() && !bytes.Equal(cert.Certificate[len(cert.Certificate)-1], root.cert.Raw) {
		cert.Certificate = append(cert.Certificate[:len(cert.Certificate):len(cert.Certificate)], root.cert.Raw)
	}
	return []tls.Certificate{cert}
}
