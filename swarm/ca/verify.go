package ca

import (
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"
)

// An Identity is who a node certificate says its holder is. The swarm
// package trusts nothing else: the node ID of a call is the certificate's
// common name and its role the organizational unit.
type Identity struct {
	// NodeID is the certificate's common name.
	NodeID string
	// Role is the certificate's organizational unit.
	Role Role
	// ClusterID is the certificate's organization.
	ClusterID string
	// NotBefore and NotAfter bound the certificate's validity.
	NotBefore, NotAfter time.Time
}

// IdentityOf reads the identity a node certificate claims and checks that
// it is shaped as Issue makes them: not a CA, one valid node ID, one role,
// one cluster ID, the role's DNS name (and not the other role's), and both
// server and client authentication. It does not check who signed the
// certificate, nor when: use Root.Verify for that, or IdentityOf on a
// certificate a TLS handshake verified against the root.
func IdentityOf(cert *x509.Certificate) (Identity, error) {
	if cert == nil {
		return Identity{}, fmt.Errorf("%w presented", ErrNoCertificate)
	}
	cn := cert.Subject.CommonName
	bad := func(format string, args ...any) (Identity, error) {
		return Identity{}, certError(ErrNotNodeCertificate, cn, cert.NotBefore, cert.NotAfter, format, args...)
	}
	if cert.IsCA {
		return bad("it is a CA certificate")
	}
	if err := checkID(cn, ErrBadNodeID); err != nil {
		return bad("its common name: %v", err)
	}
	if n := len(cert.Subject.OrganizationalUnit); n != 1 {
		return bad("it has %d organizational units, want 1 (the role)", n)
	}
	role := Role(cert.Subject.OrganizationalUnit[0])
	if err := checkRole(role); err != nil {
		return bad("%v", err)
	}
	if n := len(cert.Subject.Organization); n != 1 {
		return bad("it has %d organizations, want 1 (the cluster ID)", n)
	}
	cluster := cert.Subject.Organization[0]
	if err := checkID(cluster, ErrBadClusterID); err != nil {
		return bad("%v", err)
	}
	if !slices.Contains(cert.DNSNames, role.ServerName()) {
		return bad("it lacks the DNS name %q of its role", role.ServerName())
	}
	for _, other := range roles {
		if other != role && slices.Contains(cert.DNSNames, other.ServerName()) {
			return bad("a %s certificate with the DNS name %q", role, other.ServerName())
		}
	}
	if !hasUsage(cert, x509.ExtKeyUsageServerAuth) || !hasUsage(cert, x509.ExtKeyUsageClientAuth) {
		return bad("it is not for both TLS server and client authentication")
	}
	return Identity{NodeID: cn, Role: role, ClusterID: cluster, NotBefore: cert.NotBefore, NotAfter: cert.NotAfter}, nil
}

func hasUsage(cert *x509.Certificate, u x509.ExtKeyUsage) bool {
	return slices.Contains(cert.ExtKeyUsage, u)
}

// Verify checks a peer's certificate chain, leaf first (as
// tls.ConnectionState.PeerCertificates), against the root, now, and
// returns the identity of the leaf. It refuses, with a *CertificateError
// wrapping the reason: no certificate (ErrNoCertificate), one this CA did
// not sign directly (ErrUnknownAuthority), one outside its validity
// (ErrExpired, ErrNotYetValid), one that is not a node certificate or not
// for both server and client authentication (ErrNotNodeCertificate), and
// one of another cluster (ErrWrongCluster). Node certificates are signed
// by the root directly, so the certificates after the leaf do not matter.
func (r *Root) Verify(chain []*x509.Certificate) (Identity, error) {
	if !r.ok() {
		return Identity{}, ErrNoRoot
	}
	if len(chain) == 0 || chain[0] == nil {
		return Identity{}, fmt.Errorf("%w presented", ErrNoCertificate)
	}
	return r.verifyLeaf(chain[0], time.Now())
}

// verifyLeaf checks leaf against r at now. Node certificates are signed by
// the root directly (the root's MaxPathLen is 0), so whatever else a peer
// sends in its chain does not matter.
func (r *Root) verifyLeaf(leaf *x509.Certificate, now time.Time) (Identity, error) {
	cn := leaf.Subject.CommonName
	fail := func(err error, format string, args ...any) (Identity, error) {
		return Identity{}, certError(err, cn, leaf.NotBefore, leaf.NotAfter, format, args...)
	}
	// The signature first: for a certificate of another CA, that is the
	// reason that matters, whatever else is wrong with it.
	if err := leaf.CheckSignatureFrom(r.cert); err != nil {
		return fail(ErrUnknownAuthority, "this cluster's root (%s) did not sign it", r.clusterID)
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:       r.pool,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	var invalid x509.CertificateInvalidError
	switch {
	case err == nil:
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired && now.After(leaf.NotAfter):
		return fail(ErrExpired, "it expired at %s (now %s)", utc(leaf.NotAfter), utc(now))
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return fail(ErrNotYetValid, "it is valid from %s (now %s; is a clock wrong?)", utc(leaf.NotBefore), utc(now))
	case errors.As(err, &invalid) && invalid.Reason == x509.IncompatibleUsage:
		return fail(ErrNotNodeCertificate, "it is not for TLS client authentication")
	default:
		return fail(ErrUnknownAuthority, "%v", err)
	}
	return r.checkIdentity(leaf)
}

// checkIdentity reads the identity of leaf, a certificate verified against
// r, and checks it names r's cluster.
func (r *Root) checkIdentity(leaf *x509.Certificate) (Identity, error) {
	id, err := IdentityOf(leaf)
	if err != nil {
		return Identity{}, err
	}
	if id.ClusterID != r.clusterID {
		return Identity{}, certError(ErrWrongCluster, id.NodeID, id.NotBefore, id.NotAfter, "it belongs to cluster %q, this is cluster %q", id.ClusterID, r.clusterID)
	}
	return id, nil
}

func utc(t time.Time) string { return t.UTC().Format(time.RFC3339) }
