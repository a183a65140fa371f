package ca_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoalproject/shoal/swarm/ca"
)

func TestIssueAndVerifyManagerAndWorker(t *testing.T) {
	r := newRoot(t, "cluster-1")
	for _, c := range []struct {
		id   string
		role ca.Role
		dns  string
	}{
		{"mgr-1", ca.RoleManager, "shoal-manager"},
		{"wkr-1", ca.RoleWorker, "shoal-worker"},
		{"arb-1", ca.RoleArbiter, "shoal-arbiter"},
	} {
		before := time.Now()
		n := issue(t, r, c.id, c.role, 0)
		cert := n.cert
		if got, want := cert.Subject.String(), "CN="+c.id+",OU="+string(c.role)+",O=cluster-1"; got != want {
			t.Errorf("subject %s, want %s", got, want)
		}
		if !slices.Equal(cert.DNSNames, []string{c.dns, c.id}) || len(cert.IPAddresses) != 0 {
			t.Errorf("%s: DNS names %v, IPs %v; want [%s %s] and none", c.id, cert.DNSNames, cert.IPAddresses, c.dns, c.id)
		}
		if !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
			t.Errorf("%s: ext key usage %v", c.id, cert.ExtKeyUsage)
		}
		if cert.IsCA || cert.KeyUsage != x509.KeyUsageDigitalSignature {
			t.Errorf("%s: IsCA %v, key usage %v", c.id, cert.IsCA, cert.KeyUsage)
		}
		if d := before.Sub(cert.NotBefore); d < time.Minute-2*time.Second || d > time.Minute+2*time.Second {
			t.Errorf("%s: NotBefore %v before issuing, want 1 minute (clock skew)", c.id, d)
		}
		if d := cert.NotAfter.Sub(before); d < 90*24*time.Hour-2*time.Second || d > 90*24*time.Hour+2*time.Second {
			t.Errorf("%s: valid for %v from issuing, want 90 days", c.id, d)
		}
		if !n.key.PublicKey.Equal(cert.PublicKey) {
			t.Errorf("%s: the certificate is not for the request's key", c.id)
		}
		if err := cert.CheckSignatureFrom(r.Certificate()); err != nil {
			t.Errorf("%s: not signed by the root: %v", c.id, err)
		}

		id, err := r.Verify([]*x509.Certificate{cert})
		if err != nil {
			t.Fatalf("%s: %v", c.id, err)
		}
		want := ca.Identity{NodeID: c.id, Role: c.role, ClusterID: "cluster-1", NotBefore: cert.NotBefore, NotAfter: cert.NotAfter}
		if id != want {
			t.Errorf("identity %+v, want %+v", id, want)
		}
		// The same identity from the certificate alone.
		if id2, err := ca.IdentityOf(cert); err != nil || id2 != want {
			t.Errorf("IdentityOf = %+v, %v", id2, err)
		}
		// A chain with the root at its end, as ServerConfig sends it.
		if _, err := r.Verify([]*x509.Certificate{cert, r.Certificate()}); err != nil {
			t.Errorf("%s with the root in the chain: %v", c.id, err)
		}
	}
	a, b := issue(t, r, "n", ca.RoleWorker, 0), issue(t, r, "n", ca.RoleWorker, 0)
	if a.cert.SerialNumber.Cmp(b.cert.SerialNumber) == 0 {
		t.Error("two certificates have one serial number")
	}
}

func TestIssueIgnoresWhatTheRequestAsks(t *testing.T) {
	r := newRoot(t, "cluster-1")
	key, _ := ca.NewNodeKey()
	// A worker's request that asks to be a manager of another cluster, a
	// CA, and an address.
	caExt, _ := asn1.Marshal(struct {
		IsCA bool
	}{true})
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "admin", OrganizationalUnit: []string{"manager"},
			Organization: []string{"other-cluster"}},
		DNSNames:        []string{"shoal-manager", "admin"},
		IPAddresses:     []net.IP{net.IPv4(10, 0, 0, 1)},
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: caExt}},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := r.Issue(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), "n1", ca.RoleWorker, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert := parseCert(t, certPEM)
	if cert.Subject.CommonName != "n1" || cert.Subject.OrganizationalUnit[0] != "worker" ||
		cert.Subject.Organization[0] != "cluster-1" || cert.IsCA ||
		!slices.Equal(cert.DNSNames, []string{"shoal-worker", "n1"}) || len(cert.IPAddresses) != 0 {
		t.Errorf("the request chose: subject %v, CA %v, DNS %v, IPs %v", cert.Subject, cert.IsCA, cert.DNSNames, cert.IPAddresses)
	}
	if d := time.Until(cert.NotAfter); d > time.Hour || d < time.Hour-5*time.Second {
		t.Errorf("valid for %v more, want the hour asked", d)
	}
}

// forge returns a request that carries victim's key (from victimCSR) but a
// signature made by another key (from signerCSR): someone asking for a
// certificate for a key they do not hold.
func forge(t *testing.T, victimCSR, signerCSR []byte) []byte {
	t.Helper()
	type request struct {
		TBS asn1.RawValue
		Alg pkix.AlgorithmIdentifier
		Sig asn1.BitString
	}
	var victim, signer request
	vb, _ := pem.Decode(victimCSR)
	sb, _ := pem.Decode(signerCSR)
	if _, err := asn1.Unmarshal(vb.Bytes, &victim); err != nil {
		t.Fatal(err)
	}
	if _, err := asn1.Unmarshal(sb.Bytes, &signer); err != nil {
		t.Fatal(err)
	}
	victim.Sig = signer.Sig
	der, err := asn1.Marshal(victim)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestIssueRefusesBadRequests(t *testing.T) {
	r := newRoot(t, "c1")
	good := newCSR(t)

	// Flipping a bit of the signature.
	b, _ := pem.Decode(good)
	flipped := slices.Clone(b.Bytes)
	flipped[len(flipped)-1] ^= 1
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaDER, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, rsaKey)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p384DER, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, p384)
	csrPEM := func(der []byte) []byte {
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	}

	for _, c := range []struct {
		name, want string
		csr        []byte
	}{
		{"forged: another key's signature", "signature does not verify", forge(t, good, newCSR(t))},
		{"forged: a flipped signature bit", "signature does not verify", csrPEM(flipped)},
		{"an RSA key", "its key is RSA; node keys must be ECDSA P-256", csrPEM(rsaDER)},
		{"a P-384 key", "its key is ECDSA P-384", csrPEM(p384DER)},
		{"not PEM", "not PEM", []byte("hello")},
		{"empty", "not PEM", nil},
		{"a certificate, not a request", `"CERTIFICATE" block`, r.CertPEM()},
		{"two requests", "more than one PEM block", append(slices.Clone(good), good...)},
		{"garbage DER", "ca: bad certificate request: ", csrPEM([]byte{0x30, 0x03, 1, 2, 3})},
		{"too large", "bytes, more than", make([]byte, 1<<20)},
	} {
		_, err := r.Issue(c.csr, "n1", ca.RoleWorker, 0)
		if !errors.Is(err, ca.ErrBadCSR) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrBadCSR saying %q", c.name, err, c.want)
		}
	}
	// The unforged request passes: the refusals above are not the
	// root refusing everything.
	if _, err := r.Issue(good, "n1", ca.RoleWorker, 0); err != nil {
		t.Errorf("the good request: %v", err)
	}
}

func TestIssueValidatesNodeIDRoleAndValidity(t *testing.T) {
	r := newRoot(t, "c1")
	csr := newCSR(t)
	for _, c := range []struct {
		id, want string
	}{
		{"", "ca: bad node ID: it is empty"},
		{"Node1", `ca: bad node ID "Node1": character 'N' at position 1 is not allowed (use a-z, 0-9 and '-')`},
		{"node_1", `character '_' at position 5`},
		{"node 1", `character ' ' at position 5`},
		{"node.example", `character '.' at position 5`},
		{"-node", "starts or ends with '-'"},
		{"node-", "starts or ends with '-'"},
		{strings.Repeat("a", 64), "64 characters, at most 63"},
		{strings.Repeat("a", 10000), "10000 characters, at most 63"},
	} {
		_, err := r.Issue(csr, c.id, ca.RoleWorker, 0)
		if !errors.Is(err, ca.ErrBadNodeID) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("node ID %.20q: %v, want ErrBadNodeID saying %q", c.id, err, c.want)
		}
		if err != nil && len(err.Error()) > 200 {
			t.Errorf("node ID %.20q: a message of %d bytes", c.id, len(err.Error()))
		}
	}
	for _, id := range []string{"a", "0", "node-1", "x1y2z3", strings.Repeat("a", 63)} {
		if _, err := r.Issue(csr, id, ca.RoleWorker, 0); err != nil {
			t.Errorf("node ID %q: %v", id, err)
		}
	}
	for _, role := range []ca.Role{"", "admin", "Manager", "manager "} {
		_, err := r.Issue(csr, "n1", role, 0)
		if !errors.Is(err, ca.ErrBadRole) || !strings.Contains(err.Error(), `want "manager", "worker" or "arbiter"`) {
			t.Errorf("role %q: %v", role, err)
		}
	}
	if _, err := r.Issue(csr, "n1", ca.RoleWorker, -time.Second); !errors.Is(err, ca.ErrBadValidity) {
		t.Errorf("negative validity: %v", err)
	}
}

func TestIssueStaysWithinTheRootsValidity(t *testing.T) {
	now := time.Now()
	r := selfSignedRoot(t, "c1", now.Add(-time.Hour), now.Add(time.Hour))
	certPEM, err := r.Issue(newCSR(t), "n1", ca.RoleWorker, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := parseCert(t, certPEM).NotAfter; !got.Equal(r.Certificate().NotAfter) {
		t.Errorf("NotAfter %v, want the root's %v", got, r.Certificate().NotAfter)
	}
	expired := selfSignedRoot(t, "c1", now.Add(-2*time.Hour), now.Add(-time.Hour))
	if _, err := expired.Issue(newCSR(t), "n1", ca.RoleWorker, 0); !errors.Is(err, ca.ErrExpired) || !strings.Contains(err.Error(), "root") {
		t.Errorf("an expired root issues: %v", err)
	}
}

func TestNodeKeysAndRequests(t *testing.T) {
	k1, _ := ca.NewNodeKey()
	k2, _ := ca.NewNodeKey()
	if k1.Curve != elliptic.P256() || k1.Equal(k2) {
		t.Error("node keys are not fresh P-256 keys")
	}
	csr, err := ca.NewCSR(k1)
	if err != nil {
		t.Fatal(err)
	}
	req, err := ca.ParseCSR(csr)
	if err != nil || !k1.PublicKey.Equal(req.PublicKey) {
		t.Errorf("ParseCSR of NewCSR: %v", err)
	}
	if _, err := ca.NewCSR(nil); !errors.Is(err, ca.ErrBadKey) {
		t.Errorf("NewCSR(nil) = %v", err)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if _, err := ca.NewCSR(p384); !errors.Is(err, ca.ErrBadKey) {
		t.Errorf("NewCSR(P-384) = %v", err)
	}
	if _, err := ca.MarshalKey(p384); !errors.Is(err, ca.ErrBadKey) {
		t.Errorf("MarshalKey(P-384) = %v", err)
	}
	if ca.RoleManager.ServerName() != "shoal-manager" || ca.RoleWorker.ServerName() != "shoal-worker" || ca.Role("x").ServerName() != "" {
		t.Error("ServerName")
	}
}
