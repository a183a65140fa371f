package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"time"
)

const (
	// RootCommonName is the common name of every cluster's root
	// certificate; the cluster ID is its organization.
	RootCommonName = "shoal-root-ca"
	// DefaultRootValidity is how long NewRoot's certificate is valid.
	DefaultRootValidity = 20 * 365 * 24 * time.Hour
	// ClockSkew is how far in the past NotBefore of a new certificate is
	// set, so that a node whose clock is a little behind accepts it.
	ClockSkew = time.Minute
)

// A Root is a cluster's certificate authority: its self-signed certificate
// and, on managers, the private key that signs node certificates. A Root
// made by ParseRoot without a key can only verify. A Root does not change
// once made and is safe for concurrent use. The methods of a nil or zero
// Root return ErrNoRoot or zero values; they do not panic.
type Root struct {
	cert      *x509.Certificate
	key       *ecdsa.PrivateKey // nil: verify only
	pool      *x509.CertPool
	clusterID string
}

// NewRoot makes the root CA of a new cluster: an ECDSA P-256 key and a
// self-signed certificate with common name "shoal-root-ca", organization
// clusterID, valid DefaultRootValidity, that can sign node certificates
// but no intermediate CA (MaxPathLen 0). clusterID follows the rules of
// node IDs (see Issue).
func NewRoot(clusterID string) (*Root, error) {
	if err := checkID(clusterID, ErrBadClusterID); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: RootCommonName, Organization: []string{clusterID}},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              now.Add(DefaultRootValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return newRoot(cert, key), nil
}

// ParseRoot reads a root CA from PEM: its certificate, and its private key
// if keyPEM is not nil (a Root without a key can verify but not issue). It
// refuses a certificate that is not a self-signed CA naming a cluster, and
// a key that is not the certificate's.
func ParseRoot(certPEM, keyPEM []byte) (*Root, error) {
	cert, err := parseCertPEM(certPEM, "the root certificate")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRoot, err)
	}
	if err := checkRootCert(cert); err != nil {
		return nil, err
	}
	if keyPEM == nil {
		return newRoot(cert, nil), nil
	}
	key, err := parseKeyPEM(keyPEM, "the root key")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRoot, err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("%w: the key is not the root certificate's", ErrBadRoot)
	}
	return newRoot(cert, key), nil
}

// checkRootCert checks that cert can be a cluster's root: a self-signed
// CA whose organization is a cluster ID.
func checkRootCert(cert *x509.Certificate) error {
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return fmt.Errorf("%w: %q is not a CA certificate", ErrBadRoot, clip(cert.Subject.CommonName))
	}
	if err := cert.CheckSignatureFrom(cert); err != nil {
		return fmt.Errorf("%w: %q is not self-signed: %v", ErrBadRoot, clip(cert.Subject.CommonName), err)
	}
	if len(cert.Subject.Organization) != 1 {
		return fmt.Errorf("%w: the certificate names %d organizations, want 1 (the cluster ID)", ErrBadRoot, len(cert.Subject.Organization))
	}
	if err := checkID(cert.Subject.Organization[0], ErrBadClusterID); err != nil {
		return fmt.Errorf("%w: %w", ErrBadRoot, err)
	}
	return nil
}

func newRoot(cert *x509.Certificate, key *ecdsa.PrivateKey) *Root {
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &Root{cert: cert, key: key, pool: pool, clusterID: cert.Subject.Organization[0]}
}

func (r *Root) ok() bool { return r != nil && r.cert != nil }

// ClusterID returns the ID of the cluster this CA belongs to (its
// certificate's organization), or "" for a zero Root.
func (r *Root) ClusterID() string {
	if !r.ok() {
		return ""
	}
	return r.clusterID
}

// Certificate returns the root certificate, or nil for a zero Root. It is
// shared: do not modify it.
func (r *Root) Certificate() *x509.Certificate {
	if !r.ok() {
		return nil
	}
	return r.cert
}

// CertPEM returns the root certificate in PEM, or nil for a zero Root.
func (r *Root) CertPEM() []byte {
	if !r.ok() {
		return nil
	}
	return encodePEM(pemCertificate, r.cert.Raw)
}

// KeyPEM returns the root's private key in PEM (PKCS #8). It fails with
// ErrNoKey for a Root that can only verify. The key is the cluster's
// master secret: keep it sealed.
func (r *Root) KeyPEM() ([]byte, error) {
	if !r.ok() {
		return nil, ErrNoRoot
	}
	if r.key == nil {
		return nil, ErrNoKey
	}
	return MarshalKey(r.key)
}

// CanIssue reports whether the Root has its private key.
func (r *Root) CanIssue() bool { return r.ok() && r.key != nil }

// Digest returns the SHA-256 of the root certificate's DER, what a join
// token pins. It is all zeros for a zero Root.
func (r *Root) Digest() [sha256.Size]byte {
	if !r.ok() {
		return [sha256.Size]byte{}
	}
	return sha256.Sum256(r.cert.Raw)
}

// Pool returns a certificate pool holding only the root certificate, for
// tls.Config.RootCAs and ClientCAs. A zero Root gives an empty pool, which
// trusts nothing.
func (r *Root) Pool() *x509.CertPool {
	if !r.ok() {
		return x509.NewCertPool()
	}
	// A copy: the caller may add to it without changing what Verify trusts.
	return r.pool.Clone()
}

// newSerial returns a random positive serial number of at most 128 bits,
// as RFC 5280 asks (unique, at most 20 octets).
func newSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, err
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}
