package ca

import (
	"errors"
	"fmt"
	"time"
)

// Errors of the package. Every error about the input or the files wraps
// one of these, so callers can tell them apart with errors.Is; the message
// says what exactly is wrong. (Errors of the system, such as a disk that
// is full, wrap the system's error.)
var (
	// ErrNoRoot is returned by the methods of a nil or zero Root.
	ErrNoRoot = errors.New("ca: no root CA (make one with NewRoot or ParseRoot)")
	// ErrNoKey is returned when a Root that can only verify is asked to
	// issue a certificate or for its private key.
	ErrNoKey = errors.New("ca: this root has no private key (it can verify, not issue)")
	// ErrBadRoot is wrapped when a root certificate or its key cannot be
	// used as the cluster's CA.
	ErrBadRoot = errors.New("ca: bad root CA")
	// ErrBadKey is wrapped when NewCSR or MarshalKey is given a key that
	// is not an ECDSA P-256 private key.
	ErrBadKey = errors.New("ca: bad private key")
	// ErrBadNodeID is wrapped for a node ID that cannot go into a
	// certificate.
	ErrBadNodeID = errors.New("ca: bad node ID")
	// ErrBadClusterID is wrapped for a cluster ID that cannot go into a
	// certificate.
	ErrBadClusterID = errors.New("ca: bad cluster ID")
	// ErrBadRole is wrapped for a role other than RoleManager,
	// RoleWorker and RoleArbiter.
	ErrBadRole = errors.New("ca: bad role")
	// ErrBadValidity is wrapped for a negative certificate validity.
	ErrBadValidity = errors.New("ca: bad validity")
	// ErrBadCSR is wrapped for a certificate request Issue refuses.
	ErrBadCSR = errors.New("ca: bad certificate request")

	// ErrNoCertificate is wrapped when a peer presented no certificate.
	ErrNoCertificate = errors.New("ca: no certificate")
	// ErrUnknownAuthority is wrapped for a certificate that this cluster's
	// CA did not issue.
	ErrUnknownAuthority = errors.New("ca: certificate not issued by this cluster's CA")
	// ErrWrongCluster is wrapped for a certificate that names another
	// cluster.
	ErrWrongCluster = errors.New("ca: certificate of another cluster")
	// ErrExpired is wrapped for a certificate past its NotAfter.
	ErrExpired = errors.New("ca: certificate expired")
	// ErrNotYetValid is wrapped for a certificate before its NotBefore
	// (usually a clock that is far behind).
	ErrNotYetValid = errors.New("ca: certificate not valid yet")
	// ErrNotNodeCertificate is wrapped for a certificate that is not a
	// Shoal node certificate (a CA, no role, missing key usages ...).
	ErrNotNodeCertificate = errors.New("ca: not a node certificate")
	// ErrWrongRole is wrapped for a node certificate of a role the caller
	// does not accept (a worker where a manager is expected).
	ErrWrongRole = errors.New("ca: certificate has the wrong role")

	// ErrBadToken is wrapped for a join token that is malformed. Its
	// messages never contain the token's secret.
	ErrBadToken = errors.New("ca: bad join token")
	// ErrTokenMismatch is wrapped when a server's CA is not the one a join
	// token pins: another cluster, or someone in the middle.
	ErrTokenMismatch = errors.New("ca: the server's CA does not match the join token")

	// ErrNoDir is returned by the methods of a Files without a Dir.
	ErrNoDir = errors.New("ca: Files.Dir is empty")
	// ErrNoFiles is wrapped by Files.Load when the node has no certificate
	// files at all (it has not joined a cluster yet). It also matches
	// fs.ErrNotExist.
	ErrNoFiles = errors.New("ca: no node certificate files")
	// ErrCorruptFiles is wrapped by Files.Load for a file that is missing
	// while the others exist, or that cannot be read as what it should
	// hold.
	ErrCorruptFiles = errors.New("ca: node certificate files are damaged")
	// ErrMismatchedFiles is wrapped by Files.Save and Files.Load when the
	// key, the certificate and the root do not belong together.
	ErrMismatchedFiles = errors.New("ca: node certificate files do not belong together")
)

// A CertificateError says why a node certificate was refused. Err is one of
// the package's sentinels (ErrUnknownAuthority, ErrExpired, ErrWrongCluster
// ...), and errors.Is sees through to it.
type CertificateError struct {
	// Err is the reason, one of the package's sentinels.
	Err error
	// Subject is the certificate's common name as presented: the node ID
	// it claims, not verified (the certificate was refused).
	Subject string
	// NotBefore and NotAfter are the certificate's validity.
	NotBefore, NotAfter time.Time
	// Detail says more, for a person.
	Detail string
}

func (e *CertificateError) Error() string {
	msg := e.Err.Error()
	if e.Subject != "" {
		msg += fmt.Sprintf(" (node %q)", clip(e.Subject))
	}
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg
}

// Unwrap returns Err.
func (e *CertificateError) Unwrap() error { return e.Err }

func certError(err error, subject string, nb, na time.Time, format string, args ...any) *CertificateError {
	return &CertificateError{Err: err, Subject: subject, NotBefore: nb, NotAfter: na, Detail: fmt.Sprintf(format, args...)}
}

// clip bounds what outside input may put into a message.
func clip(s string) string {
	const max = 64
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}
