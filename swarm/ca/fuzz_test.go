package ca_test

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"strings"
	"testing"

	"github.com/shoalproject/shoal/swarm/ca"
)

// FuzzParseToken: ParseToken never panics; what it accepts is a token it
// gives back whole; what it refuses is ErrBadToken and does not show the
// part where the secret goes.
func FuzzParseToken(f *testing.F) {
	f.Add("SWMTKN-1-49nj1cmql0jkz5s954yi3oex3nedyz0fb0xx14ie39trti4wxv-8vxv8rssmk743ojnwacrr2e7c")
	f.Add("SWMTKN-2-1-49nj1cmql0jkz5s954yi3oex3nedyz0fb0xx14ie39trti4wxv-8vxv8rssmk743ojnwacrr2e7c")
	f.Add("SWMTKN-1-zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-8vxv8rssmk743ojnwacrr2e7c")
	f.Add("SWMTKN-1-49nj1cmql0jkz5s954yi3oex3nedyz0fb0xx14ie39trti4wxv-8vxv8rssmk743ojnwacrr2e7")
	f.Add("SWMTKN--")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ca.ParseToken(s)
		if err == nil {
			if got := "SWMTKN-1-" + tok.Digest + "-" + tok.Secret; got != strings.TrimSpace(s) {
				t.Fatalf("accepted %q as %q", s, got)
			}
			return
		}
		if !errors.Is(err, ca.ErrBadToken) {
			t.Fatalf("%q: %v is not ErrBadToken", s, err)
		}
		// The last part is where the secret goes: a run of it as long as a
		// secret's half never shows (shorter runs can be words of the
		// message).
		parts := strings.Split(strings.TrimSpace(s), "-")
		if last := parts[len(parts)-1]; len(parts) > 1 && len(last) >= 12 && strings.Contains(err.Error(), last) {
			t.Fatalf("%q: the message %q shows the secret", s, err)
		}
	})
}

// FuzzIssueRequest: Issue never panics on a request, in PEM or as DER
// wrapped in PEM; what it accepts it turns into a certificate with the
// identity asked for, of the request's key.
func FuzzIssueRequest(f *testing.F) {
	r, err := ca.NewRoot("c1")
	if err != nil {
		f.Fatal(err)
	}
	key, _ := ca.NewNodeKey()
	good, _ := ca.NewCSR(key)
	b, _ := pem.Decode(good)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 1024)
	rsaDER, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, rsaKey)
	f.Add(good, false)
	f.Add(b.Bytes, true)
	f.Add(rsaDER, true)
	f.Add(r.CertPEM(), false)
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n"), false)
	f.Add([]byte{0x30, 0x82, 0xff, 0xff}, true)
	f.Fuzz(func(t *testing.T, data []byte, wrap bool) {
		if wrap {
			data = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: data})
		}
		certPEM, err := r.Issue(data, "fuzz-node", ca.RoleWorker, 0)
		if err != nil {
			if !errors.Is(err, ca.ErrBadCSR) {
				t.Fatalf("%v is not ErrBadCSR", err)
			}
			return
		}
		csr, err := ca.ParseCSR(data)
		if err != nil {
			t.Fatalf("Issue accepted what ParseCSR refuses: %v", err)
		}
		block, _ := pem.Decode(certPEM)
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		id, err := r.Verify([]*x509.Certificate{cert})
		if err != nil || id.NodeID != "fuzz-node" || id.Role != ca.RoleWorker {
			t.Fatalf("the certificate issued: %+v, %v", id, err)
		}
		if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(csr.PublicKey) {
			t.Fatal("the certificate is not for the request's key")
		}
	})
}
