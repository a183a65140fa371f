package ca_test

import (
	"crypto/x509"
	"fmt"
	"time"

	"github.com/shoalproject/shoal/swarm/ca"
)

// A cluster's root issues a worker certificate for a node's request, and
// verifies it; a join token pins the root.
func Example() {
	root, err := ca.NewRoot("cluster-1")
	if err != nil {
		panic(err)
	}

	// On the joining node: a key that never leaves it, and a request.
	key, err := ca.NewNodeKey()
	if err != nil {
		panic(err)
	}
	csr, err := ca.NewCSR(key)
	if err != nil {
		panic(err)
	}

	// On a manager, once the node proved its token: the certificate.
	certPEM, err := root.Issue(csr, "node-1", ca.RoleWorker, ca.DefaultNodeCertValidity)
	if err != nil {
		panic(err)
	}

	// Any node verifies it against the root, and trusts what it says.
	cert, err := x509.ParseCertificate(decodePEM(certPEM))
	if err != nil {
		panic(err)
	}
	id, err := root.Verify([]*x509.Certificate{cert})
	if err != nil {
		panic(err)
	}
	fmt.Println(id.NodeID, id.Role, id.ClusterID, id.NotAfter.Sub(id.NotBefore).Round(time.Hour))

	// The join token names the root by its digest.
	s, err := ca.NewToken(root)
	if err != nil {
		panic(err)
	}
	token, err := ca.ParseToken(s)
	if err != nil {
		panic(err)
	}
	fmt.Println("token pins the root:", token.PinsRoot(root.Certificate().Raw))
	// Output:
	// node-1 worker cluster-1 2160h0m0s
	// token pins the root: true
}

// A malformed token is refused with what is wrong, and never its secret.
func ExampleParseToken() {
	_, err := ca.ParseToken("SWMTKN-1-49nj1cmql0jkz5s954yi3oex3nedyz0fb0xx14ie39trti4wxv-8vxv8rssmk743ojnwacrr2e7")
	fmt.Println(err)
	// Output:
	// ca: bad join token: the secret has 24 characters, want 25
}

// A renewal loop sleeps until RenewAt, between 50% and 80% of the
// validity.
func ExampleRenewAt() {
	notBefore := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	notAfter := notBefore.Add(90 * 24 * time.Hour)
	at := ca.RenewAt(notBefore, notAfter, nil)
	fmt.Println(!at.Before(notBefore.Add(45*24*time.Hour)), !at.After(notBefore.Add(72*24*time.Hour)))
	// Output:
	// true true
}
