package ca_test

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/shoalproject/shoal/swarm/ca"
)

// refused checks that err is a *CertificateError wrapping want, about
// subject, whose message says what.
func refused(t *testing.T, name string, err, want error, subject, what string) {
	t.Helper()
	var ce *ca.CertificateError
	switch {
	case !errors.Is(err, want):
		t.Errorf("%s: %v, want %v", name, err, want)
	case !errors.As(err, &ce):
		t.Errorf("%s: %T is not a *CertificateError", name, err)
	case ce.Subject != subject:
		t.Errorf("%s: Subject %q, want %q", name, ce.Subject, subject)
	case !strings.Contains(err.Error(), what):
		t.Errorf("%s: %q does not say %q", name, err, what)
	}
}

func TestVerifyRefusesAnotherCA(t *testing.T) {
	r := newRoot(t, "c1")
	// Another CA, even one claiming the same cluster ID.
	other := newRoot(t, "c1")
	n := issue(t, other, "intruder", ca.RoleManager, 0)
	_, err := r.Verify([]*x509.Certificate{n.cert})
	refused(t, "another CA", err, ca.ErrUnknownAuthority, "intruder", "this cluster's root (c1) did not sign it")
	// Sending the other root along changes nothing, nor sending ours.
	_, err = r.Verify([]*x509.Certificate{n.cert, other.Certificate()})
	refused(t, "another CA with its root", err, ca.ErrUnknownAuthority, "intruder", "did not sign")
	_, err = r.Verify([]*x509.Certificate{n.cert, r.Certificate()})
	refused(t, "another CA with our root", err, ca.ErrUnknownAuthority, "intruder", "did not sign")
	// And the other CA's expired certificate is still refused for its CA.
	old := issue(t, other, "old", ca.RoleWorker, time.Nanosecond)
	_, err = r.Verify([]*x509.Certificate{old.cert})
	refused(t, "another CA, expired", err, ca.ErrUnknownAuthority, "old", "did not sign")
}

func TestVerifyRefusesAnotherCluster(t *testing.T) {
	r := newRoot(t, "c1")
	// Signed by this root, but naming another cluster: what a root shared
	// by mistake between clusters would make.
	n := craft(t, r, func(c *x509.Certificate) { c.Subject.Organization = []string{"c2"} })
	_, err := r.Verify([]*x509.Certificate{n.cert})
	refused(t, "another cluster", err, ca.ErrWrongCluster, "crafted", `cluster "c2", this is cluster "c1"`)
	// The crafted certificate is otherwise good: the check above is the
	// cluster's.
	good := craft(t, r, nil)
	if _, err := r.Verify([]*x509.Certificate{good.cert}); err != nil {
		t.Errorf("the crafted certificate of this cluster: %v", err)
	}
}

func TestVerifyRefusesOutsideValidity(t *testing.T) {
	r := newRoot(t, "c1")
	n := issue(t, r, "n1", ca.RoleWorker, time.Nanosecond)
	time.Sleep(time.Millisecond)
	_, err := r.Verify([]*x509.Certificate{n.cert})
	refused(t, "expired", err, ca.ErrExpired, "n1", "it expired at")
	var ce *ca.CertificateError
	if errors.As(err, &ce) && !ce.NotAfter.Equal(n.cert.NotAfter) {
		t.Errorf("NotAfter %v, want %v", ce.NotAfter, n.cert.NotAfter)
	}

	future := craft(t, r, func(c *x509.Certificate) {
		c.NotBefore = time.Now().Add(time.Hour)
		c.NotAfter = time.Now().Add(2 * time.Hour)
	})
	_, err = r.Verify([]*x509.Certificate{future.cert})
	refused(t, "not valid yet", err, ca.ErrNotYetValid, "crafted", "is a clock wrong?")
}

func TestVerifyRefusesWhatIsNoNodeCertificate(t *testing.T) {
	r := newRoot(t, "c1")
	if _, err := r.Verify(nil); !errors.Is(err, ca.ErrNoCertificate) {
		t.Errorf("no chain: %v", err)
	}
	if _, err := r.Verify([]*x509.Certificate{nil}); !errors.Is(err, ca.ErrNoCertificate) {
		t.Errorf("a nil certificate: %v", err)
	}
	_, err := r.Verify([]*x509.Certificate{r.Certificate()})
	refused(t, "the root itself", err, ca.ErrNotNodeCertificate, "shoal-root-ca", "it is a CA certificate")

	for _, c := range []struct {
		name, subject, what string
		edit                func(*x509.Certificate)
	}{
		{"server auth only", "crafted", "not for TLS client authentication", func(c *x509.Certificate) {
			c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		}},
		{"client auth only", "crafted", "not for both TLS server and client", func(c *x509.Certificate) {
			c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		}},
		{"no role", "crafted", "0 organizational units", func(c *x509.Certificate) { c.Subject.OrganizationalUnit = nil }},
		{"two roles", "crafted", "2 organizational units", func(c *x509.Certificate) {
			c.Subject.OrganizationalUnit = []string{"worker", "manager"}
		}},
		{"an unknown role", "crafted", `bad role "admin"`, func(c *x509.Certificate) { c.Subject.OrganizationalUnit = []string{"admin"} }},
		{"a bad node ID", "Crafted", "its common name", func(c *x509.Certificate) { c.Subject.CommonName = "Crafted" }},
		{"no cluster", "crafted", "0 organizations", func(c *x509.Certificate) { c.Subject.Organization = nil }},
		{"a worker with the manager name", "crafted", `DNS name "shoal-manager"`, func(c *x509.Certificate) {
			c.DNSNames = []string{"shoal-worker", "shoal-manager"}
		}},
		{"no role name", "crafted", `lacks the DNS name "shoal-worker"`, func(c *x509.Certificate) { c.DNSNames = []string{"crafted"} }},
	} {
		n := craft(t, r, c.edit)
		_, err := r.Verify([]*x509.Certificate{n.cert})
		refused(t, c.name, err, ca.ErrNotNodeCertificate, c.subject, c.what)
	}
}

func TestIdentityOfDoesNotVerify(t *testing.T) {
	// IdentityOf reads; it does not say the certificate is trusted.
	other := newRoot(t, "c9")
	n := issue(t, other, "n1", ca.RoleManager, 0)
	id, err := ca.IdentityOf(n.cert)
	if err != nil || id.NodeID != "n1" || id.Role != ca.RoleManager || id.ClusterID != "c9" {
		t.Errorf("IdentityOf = %+v, %v", id, err)
	}
	if _, err := ca.IdentityOf(nil); !errors.Is(err, ca.ErrNoCertificate) {
		t.Errorf("IdentityOf(nil) = %v", err)
	}
	// A long common name is clipped in messages.
	long := craft(t, newRoot(t, "c1"), func(c *x509.Certificate) {
		c.Subject = pkix.Name{CommonName: strings.Repeat("x", 5000)}
	})
	_, err = ca.IdentityOf(long.cert)
	if err == nil || len(err.Error()) > 400 {
		t.Errorf("a 5000-character name gives a message of %d bytes: %.100v", len(err.Error()), err)
	}
}
