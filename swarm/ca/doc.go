// Package ca is a Shoal cluster's certificate authority: the root CA made
// when a cluster starts, the node certificates it issues, the join tokens
// that let a node in, the mutual-TLS configurations nodes talk with, and
// the files a node keeps its certificate in. It uses the standard library
// only (crypto/x509, ECDSA P-256, crypto/tls).
//
// A node certificate says who its holder is, and nothing else is trusted:
// its common name is the node ID, its organizational unit the role
// (manager or worker), its organization the cluster ID. It carries the DNS
// name of its role ("shoal-manager"), which clients verify instead of an
// address. Certificates last DefaultNodeCertValidity (90 days) and are
// renewed at a random instant between 50% and 80% of it (RenewAt).
//
// Join tokens have Docker's format, SWMTKN-1-<CA digest>-<secret>. A
// joining node pins the cluster's CA by the digest (JoinClientConfig)
// before it sends the secret; managers compare secrets in constant time
// (SecretEqual). Errors and a Token's String never show a secret.
//
// The flow, on a manager and on a node that joins it:
//
//	root, err := ca.NewRoot(clusterID)             // at init; keep root.KeyPEM() sealed
//	token, err := ca.NewToken(root)                // one per role
//
//	key, err := ca.NewNodeKey()                    // on the joining node
//	csr, err := ca.NewCSR(key)
//	tok, err := ca.ParseToken(token)
//	conn, err := tls.Dial("tcp", managerAddr, ca.JoinClientConfig(tok))
//	// ... send tok.Secret and csr to the manager over conn ...
//
//	certPEM, err := root.Issue(csr, nodeID, ca.RoleWorker, 0) // on the manager, once the secret matches
//
//	keyPEM, err := ca.MarshalKey(key)              // back on the node
//	pinned, err := tok.PinnedRoot(conn.ConnectionState().PeerCertificates)
//	files := ca.Files{Dir: dataDir}
//	err = files.Save(certPEM, keyPEM, pinned.CertPEM())
//	cert, root, err := files.Load()                // on every start
//	cfg := ca.ClientConfig(cert, root, ca.RoleManager) // mutual TLS to the managers
//
// Errors about the input wrap the package's Err sentinels, with a message
// that says what is wrong; refused certificates give a *CertificateError.
// Nothing panics on input.
package ca
