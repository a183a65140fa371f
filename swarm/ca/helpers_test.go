package ca_test

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/testca"
	"github.com/shoalproject/shoal/swarm/ca"
)

func newRoot(t testing.TB, clusterID string) *ca.Root {
	t.Helper()
	r, err := ca.NewRoot(clusterID)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// node is a key and the certificate a root issued for it.
type node struct {
	key     *ecdsa.PrivateKey
	keyPEM  []byte
	certPEM []byte
	cert    *x509.Certificate
	tls     tls.Certificate
}

func issue(t testing.TB, r *ca.Root, id string, role ca.Role, validity time.Duration) node {
	t.Helper()
	nc, err := testca.Issue(r, id, role, validity)
	if err != nil {
		t.Fatal(err)
	}
	return node{key: nc.TLS.PrivateKey.(*ecdsa.PrivateKey), keyPEM: nc.KeyPEM, certPEM: nc.CertPEM, cert: nc.TLS.Leaf, tls: nc.TLS}
}

func parseCert(t testing.TB, certPEM []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(certPEM)
	if b == nil {
		t.Fatalf("not PEM: %q", certPEM)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func rootKey(t testing.TB, r *ca.Root) *ecdsa.PrivateKey {
	t.Helper()
	keyPEM, err := r.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(keyPEM)
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k.(*ecdsa.PrivateKey)
}

// craft signs, with r's key, a certificate shaped as Issue makes them for
// a worker, changed by edit: what Issue itself would never make.
func craft(t testing.TB, r *ca.Root, edit func(*x509.Certificate)) node {
	t.Helper()
	key, err := ca.NewNodeKey()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(42),
		Subject: pkix.Name{CommonName: "crafted", OrganizationalUnit: []string{"worker"},
			Organization: []string{r.ClusterID()}},
		DNSNames:              []string{"shoal-worker", "crafted"},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	if edit != nil {
		edit(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, r.Certificate(), &key.PublicKey, rootKey(t, r))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, _ := ca.MarshalKey(key)
	return node{key: key, keyPEM: keyPEM, cert: cert,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		tls:     tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}}
}

// result is one side of a handshake.
type result struct {
	err   error
	state tls.ConnectionState
}

// handshake runs a real TLS handshake over loopback TCP between a server
// and a client configuration, and a byte from server to client after it
// (with TLS 1.3 a client learns only then that the server refused its
// certificate).
func handshake(t *testing.T, server, client *tls.Config) (srv, cli result) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Server(c, server)
		if err := tc.Handshake(); err != nil {
			done <- result{err: err}
			return
		}
		_, err = tc.Write([]byte{1})
		done <- result{err: err, state: tc.ConnectionState()}
	}()
	c, err := net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(c, client)
	cli.err = tc.Handshake()
	if cli.err == nil {
		var b [1]byte
		_, cli.err = io.ReadFull(tc, b[:])
		cli.state = tc.ConnectionState()
	}
	tc.Close()
	return <-done, cli
}

func newCSR(t testing.TB) []byte {
	t.Helper()
	key, err := ca.NewNodeKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := ca.NewCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

// selfSignedRoot makes a root CA for cluster valid from notBefore to
// notAfter, as ParseRoot would read one made elsewhere.
func selfSignedRoot(t testing.TB, cluster string, notBefore, notAfter time.Time) *ca.Root {
	t.Helper()
	key, err := ca.NewNodeKey()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(7),
		Subject:               pkix.Name{CommonName: "shoal-root-ca", Organization: []string{cluster}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, _ := ca.MarshalKey(key)
	r, err := ca.ParseRoot(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func decodePEM(b []byte) []byte {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil
	}
	return block.Bytes
}
