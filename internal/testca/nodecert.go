package testca

import (
	"crypto/tls"
	"time"

	"github.com/shoalproject/shoal/swarm/ca"
)

// NodeCert is a node certificate a cluster's root issued, with its new key.
type NodeCert struct {
	// TLS is the certificate and key for a tls.Config, with Leaf set.
	TLS tls.Certificate
	// CertPEM and KeyPEM are the same as files would hold them.
	CertPEM, KeyPEM []byte
}

// Issue has root (a cluster's CA, with its key) sign a certificate for
// node id in role with a new key, valid for validity (0: the CA's
// default), as a node would get it by joining; tests use it to present
// certificates the cluster never handed out.
func Issue(root *ca.Root, id string, role ca.Role, validity time.Duration) (NodeCert, error) {
	key, err := ca.NewNodeKey()
	if err != nil {
		return NodeCert{}, err
	}
	csr, err := ca.NewCSR(key)
	if err != nil {
		return NodeCert{}, err
	}
	certPEM, err := root.Issue(csr, id, role, validity)
	if err != nil {
		return NodeCert{}, err
	}
	keyPEM, err := ca.MarshalKey(key)
	if err != nil {
		return NodeCert{}, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return NodeCert{}, err
	}
	return NodeCert{TLS: pair, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}
