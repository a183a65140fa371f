package ca_test

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/shoalproject/shoal/swarm/ca"
)

func TestNewRoot(t *testing.T) {
	r := newRoot(t, "cluster-1")
	c := r.Certificate()
	if c.Subject.CommonName != "shoal-root-ca" || len(c.Subject.Organization) != 1 || c.Subject.Organization[0] != "cluster-1" {
		t.Errorf("subject %v, want CN shoal-root-ca, O cluster-1", c.Subject)
	}
	if !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 0 || !c.MaxPathLenZero {
		t.Errorf("IsCA %v, MaxPathLen %d (zero %v): want a CA that signs no CA", c.IsCA, c.MaxPathLen, c.MaxPathLenZero)
	}
	if c.PublicKeyAlgorithm.String() != "ECDSA" {
		t.Errorf("key %v, want ECDSA", c.PublicKeyAlgorithm)
	}
	if v := c.NotAfter.Sub(c.NotBefore); v < 20*365*24*time.Hour || v > 20*366*24*time.Hour {
		t.Errorf("validity %v, want 20 years", v)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	if r.ClusterID() != "cluster-1" || !r.CanIssue() {
		t.Errorf("ClusterID %q CanIssue %v", r.ClusterID(), r.CanIssue())
	}
	if r.Digest() != sha256.Sum256(c.Raw) {
		t.Error("Digest is not the SHA-256 of the certificate's DER")
	}
	if r2 := newRoot(t, "cluster-1"); r2.Digest() == r.Digest() {
		t.Error("two roots have one digest")
	}
	if _, err := ca.NewRoot("Bad_ID"); !errors.Is(err, ca.ErrBadClusterID) {
		t.Errorf("NewRoot(Bad_ID) = %v, want ErrBadClusterID", err)
	}
}

func TestParseRootRoundTrip(t *testing.T) {
	r := newRoot(t, "c1")
	keyPEM, err := r.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	full, err := ca.ParseRoot(r.CertPEM(), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if full.Digest() != r.Digest() || full.ClusterID() != "c1" || !full.CanIssue() {
		t.Errorf("parsed root differs: cluster %q, can issue %v", full.ClusterID(), full.CanIssue())
	}
	// The parsed root issues what the original verifies.
	n := issue(t, full, "n1", ca.RoleWorker, 0)
	if _, err := r.Verify([]*x509.Certificate{n.cert}); err != nil {
		t.Errorf("a certificate of the parsed root: %v", err)
	}

	verifyOnly, err := ca.ParseRoot(r.CertPEM(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if verifyOnly.CanIssue() {
		t.Error("a root without key says it can issue")
	}
	if _, err := verifyOnly.KeyPEM(); !errors.Is(err, ca.ErrNoKey) {
		t.Errorf("KeyPEM without key = %v, want ErrNoKey", err)
	}
	csr := newCSR(t)
	if _, err := verifyOnly.Issue(csr, "n2", ca.RoleWorker, 0); !errors.Is(err, ca.ErrNoKey) {
		t.Errorf("Issue without key = %v, want ErrNoKey", err)
	}
	if _, err := verifyOnly.Verify([]*x509.Certificate{n.cert}); err != nil {
		t.Errorf("a verify-only root refuses a good certificate: %v", err)
	}
}

func TestParseRootRefuses(t *testing.T) {
	r := newRoot(t, "c1")
	other := newRoot(t, "c1")
	otherKey, _ := other.KeyPEM()
	n := issue(t, r, "n1", ca.RoleManager, 0)
	for _, c := range []struct {
		name          string
		cert, key     []byte
		want          error
		wantInMessage string
	}{
		{"garbage", []byte("hello"), nil, ca.ErrBadRoot, "not PEM"},
		{"two certificates", append(r.CertPEM(), other.CertPEM()...), nil, ca.ErrBadRoot, "more than one"},
		{"a node certificate", n.certPEM, nil, ca.ErrBadRoot, "not a CA"},
		{"another root's key", r.CertPEM(), otherKey, ca.ErrBadRoot, "not the root certificate's"},
		{"a key that is no key", r.CertPEM(), []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), ca.ErrBadRoot, "the root key: "},
	} {
		_, err := ca.ParseRoot(c.cert, c.key)
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.wantInMessage) {
			t.Errorf("%s: %v, want %v saying %q", c.name, err, c.want, c.wantInMessage)
		}
	}
}

func TestZeroRootDoesNotPanic(t *testing.T) {
	for _, r := range []*ca.Root{nil, {}} {
		if r.ClusterID() != "" || r.CertPEM() != nil || r.Certificate() != nil || r.CanIssue() {
			t.Error("a zero root has content")
		}
		if r.Digest() != [32]byte{} {
			t.Error("a zero root has a digest")
		}
		if _, err := r.KeyPEM(); !errors.Is(err, ca.ErrNoRoot) {
			t.Errorf("KeyPEM = %v", err)
		}
		if _, err := r.Issue(newCSR(t), "n", ca.RoleWorker, 0); !errors.Is(err, ca.ErrNoRoot) {
			t.Errorf("Issue = %v", err)
		}
		if _, err := r.Verify(nil); !errors.Is(err, ca.ErrNoRoot) {
			t.Errorf("Verify = %v", err)
		}
		if _, err := ca.NewToken(r); !errors.Is(err, ca.ErrNoRoot) {
			t.Errorf("NewToken = %v", err)
		}
		if r.Pool() == nil {
			t.Error("nil pool")
		}
	}
	// Pool is a copy: adding to it does not widen what the root trusts.
	r := newRoot(t, "c1")
	other := newRoot(t, "c1")
	p := r.Pool()
	p.AddCert(other.Certificate())
	n := issue(t, other, "n1", ca.RoleWorker, 0)
	if _, err := r.Verify([]*x509.Certificate{n.cert}); !errors.Is(err, ca.ErrUnknownAuthority) {
		t.Errorf("after adding to Pool(), Verify of another CA's cert = %v", err)
	}
	if !bytes.Equal(r.CertPEM(), r.CertPEM()) {
		t.Error("CertPEM is not stable")
	}
}
