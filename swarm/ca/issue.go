package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"slices"
	"time"
)

// A Role is what a node certificate allows its holder to be. It is the
// certificate's organizational unit.
type Role string

// The roles.
const (
	RoleManager Role = "manager"
	RoleWorker  Role = "worker"
	// RoleArbiter is a Raft voter that does nothing else (swarm.Arbiter):
	// managers let it carry Raft, and nothing more.
	RoleArbiter Role = "arbiter"
)

// roles are the valid roles.
var roles = []Role{RoleManager, RoleWorker, RoleArbiter}

// ServerName is the DNS name every certificate of the role carries
// ("shoal-manager", "shoal-worker", "shoal-arbiter"), which TLS clients verify instead of
// an address, so that managers can change addresses. It is "" for a role
// that is not valid.
func (r Role) ServerName() string {
	if checkRole(r) != nil {
		return ""
	}
	return "shoal-" + string(r)
}

func checkRole(r Role) error {
	if !slices.Contains(roles, r) {
		return fmt.Errorf("%w %q: want %q, %q or %q", ErrBadRole, clip(string(r)), RoleManager, RoleWorker, RoleArbiter)
	}
	return nil
}

const (
	// DefaultNodeCertValidity is the validity of a node certificate when
	// Issue is given none.
	DefaultNodeCertValidity = 90 * 24 * time.Hour
	// MaxIDLen is the longest node or cluster ID: a node ID is a DNS name
	// in its certificate, and a DNS label has at most 63 characters.
	MaxIDLen = 63
)

// checkID checks a node or cluster ID: 1 to MaxIDLen lowercase letters,
// digits and hyphens, not starting or ending with a hyphen (a DNS label).
// sentinel is ErrBadNodeID or ErrBadClusterID.
func checkID(id string, sentinel error) error {
	switch {
	case id == "":
		return fmt.Errorf("%w: it is empty", sentinel)
	case len(id) > MaxIDLen:
		return fmt.Errorf("%w %q: %d characters, at most %d", sentinel, clip(id), len(id), MaxIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return fmt.Errorf("%w %q: character %q at position %d is not allowed (use a-z, 0-9 and '-')", sentinel, clip(id), c, i+1)
		}
	}
	if id[0] == '-' || id[len(id)-1] == '-' {
		return fmt.Errorf("%w %q: it starts or ends with '-'", sentinel, id)
	}
	return nil
}

// NewNodeKey makes a node's private key: ECDSA P-256. It never leaves the
// node: the node sends NewCSR's request to a manager, and keeps the key
// (MarshalKey, Files.Save).
func NewNodeKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// NewCSR makes a certificate signing request for key, in PEM. It names
// nothing: the CA decides the certificate's subject and names.
func NewCSR(key *ecdsa.PrivateKey) ([]byte, error) {
	if key == nil || key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: want an ECDSA P-256 key (ca.NewNodeKey makes one)", ErrBadKey)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	return encodePEM(pemCSR, der), nil
}

// ParseCSR reads a certificate signing request in PEM and checks it as
// Issue does: one request, signed by the key it carries, and that key
// ECDSA P-256. Errors wrap ErrBadCSR.
func ParseCSR(csrPEM []byte) (*x509.CertificateRequest, error) {
	block, err := decodeOne(csrPEM, "the request", pemCSR, "NEW CERTIFICATE REQUEST")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCSR, err)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCSR, err)
	}
	if !isP256(csr.PublicKey) {
		return nil, fmt.Errorf("%w: its key is %s; node keys must be ECDSA P-256 (ca.NewNodeKey makes one)", ErrBadCSR, keyKind(csr.PublicKey))
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: its signature does not verify with its key (%v)", ErrBadCSR, err)
	}
	return csr, nil
}

// Issue signs a node certificate for the key in csrPEM, for node nodeID in
// role, valid from now (less ClockSkew) for validity
// (DefaultNodeCertValidity if 0), and not beyond the root's own expiry. It
// returns the certificate in PEM.
//
// The request must be signed by its ECDSA P-256 key (that proves the
// requester holds it). Whatever subject, names or extensions it asks for
// are ignored: the certificate has common name nodeID, organizational unit
// role, organization the cluster ID, the DNS names role.ServerName() and
// nodeID, and is for both TLS server and client authentication.
//
// A node ID is 1 to MaxIDLen characters of a-z, 0-9 and '-', not starting
// or ending with '-'. Issue needs a Root with its key.
func (r *Root) Issue(csrPEM []byte, nodeID string, role Role, validity time.Duration) ([]byte, error) {
	if !r.ok() {
		return nil, ErrNoRoot
	}
	if r.key == nil {
		return nil, ErrNoKey
	}
	if err := checkID(nodeID, ErrBadNodeID); err != nil {
		return nil, err
	}
	if err := checkRole(role); err != nil {
		return nil, err
	}
	switch {
	case validity < 0:
		return nil, fmt.Errorf("%w: %v is negative", ErrBadValidity, validity)
	case validity == 0:
		validity = DefaultNodeCertValidity
	}
	csr, err := ParseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	if !now.Before(r.cert.NotAfter) {
		return nil, fmt.Errorf("%w: the cluster's root certificate expired at %s", ErrExpired, r.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	notAfter := now.Add(validity)
	if notAfter.After(r.cert.NotAfter) || notAfter.Before(now) { // the latter: overflow
		notAfter = r.cert.NotAfter
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			CommonName:         nodeID,
			OrganizationalUnit: []string{string(role)},
			Organization:       []string{r.clusterID},
		},
		DNSNames:              []string{role.ServerName(), nodeID},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, r.cert, csr.PublicKey, r.key)
	if err != nil {
		return nil, fmt.Errorf("ca: signing the certificate: %w", err)
	}
	return encodePEM(pemCertificate, der), nil
}
