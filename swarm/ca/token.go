package ca

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"fmt"
	"log/slog"
	"math/big"
	"strconv"
	"strings"
)

// Join tokens have Docker's format, SWMTKN-1-<digest>-<secret>: the digest
// is the SHA-256 of the root certificate's DER in base 36, zero-padded to
// DigestLen characters, and the secret 128 random bits in base 36,
// zero-padded to SecretLen characters. The digest lets a joining node pin
// the cluster's CA before it trusts anything; the secret proves to the
// managers that the node may join, and in which role (each role has its
// own token).
const (
	// TokenPrefix starts every join token.
	TokenPrefix = "SWMTKN"
	// TokenVersion is the version of the tokens NewToken makes and the
	// only one ParseToken reads.
	TokenVersion = 1
	// DigestLen is the length of a token's digest part.
	DigestLen = 50
	// SecretLen is the length of a token's secret part.
	SecretLen = 25
	// tokenLen is the length of a version 1 token.
	tokenLen = len(TokenPrefix) + 3 + 1 + DigestLen + SecretLen
)

// A Token is a parsed join token. Its String, GoString and LogValue hide
// the secret, so a Token printed or logged by mistake does not leak it.
type Token struct {
	// Version is the token's format version (1).
	Version int
	// Digest is the root CA's digest as written in the token: DigestLen
	// characters of base 36.
	Digest string
	// Secret is the token's secret: SecretLen characters of base 36.
	Secret string
}

// NewToken makes a join token for the cluster of root, with a new random
// secret. Make one per role, and a new one to rotate it.
func NewToken(root *Root) (string, error) {
	if !root.ok() {
		return "", ErrNoRoot
	}
	var secret [16]byte
	if _, err := rand.Read(secret[:]); err != nil {
		return "", err
	}
	d := root.Digest()
	return fmt.Sprintf("%s-%d-%s-%s", TokenPrefix, TokenVersion,
		base36(d[:], DigestLen), base36(secret[:], SecretLen)), nil
}

// ParseToken reads a join token (white space around it is ignored). A
// malformed one is refused with an error wrapping ErrBadToken that names
// what is wrong (prefix, version, digest, secret) and never contains the
// secret.
func ParseToken(s string) (Token, error) {
	s = strings.TrimSpace(s)
	bad := func(format string, args ...any) (Token, error) {
		return Token{}, fmt.Errorf("%w: "+format, append([]any{ErrBadToken}, args...)...)
	}
	if len(s) > 4*tokenLen {
		return bad("%d characters; a join token has %d", len(s), tokenLen)
	}
	if !strings.HasPrefix(s, TokenPrefix+"-") {
		return bad("it does not start with %s-", TokenPrefix)
	}
	parts := strings.Split(s, "-")
	// The version first: another version may have another number of parts
	// (Docker's version 2 has five).
	version, err := strconv.Atoi(parts[1])
	switch {
	case err != nil || parts[1] != strconv.Itoa(version):
		return bad("its version (the part after %s-) is not a number", TokenPrefix)
	case version != TokenVersion:
		return bad("version %d is not supported (want %d)", version, TokenVersion)
	case len(parts) != 4:
		return bad("it has %d parts separated by '-', want 4 (%s-%d-<CA digest>-<secret>)", len(parts), TokenPrefix, TokenVersion)
	}
	digest, secret := parts[2], parts[3]
	if len(digest) != DigestLen {
		return bad("the CA digest has %d characters, want %d", len(digest), DigestLen)
	}
	if i := notBase36(digest); i >= 0 {
		return bad("the CA digest has %q at position %d, want only 0-9 and a-z", digest[i], i+1)
	}
	if n, _ := new(big.Int).SetString(digest, 36); n.BitLen() > 8*sha256.Size {
		return bad("the CA digest is larger than a SHA-256 digest")
	}
	if len(secret) != SecretLen {
		return bad("the secret has %d characters, want %d", len(secret), SecretLen)
	}
	if notBase36(secret) >= 0 {
		return bad("the secret has a character other than 0-9 and a-z")
	}
	return Token{Version: version, Digest: digest, Secret: secret}, nil
}

// notBase36 returns the index of the first byte of s that is not a
// lowercase base 36 digit, or -1.
func notBase36(s string) int {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z') {
			return i
		}
	}
	return -1
}

// base36 writes b, a big-endian number, in base 36, zero-padded to width.
func base36(b []byte, width int) string {
	s := new(big.Int).SetBytes(b).Text(36)
	if len(s) < width {
		s = strings.Repeat("0", width-len(s)) + s
	}
	return s
}

// PinsRoot reports whether rootCertDER, a root certificate in DER, is the
// CA the token names: whether the SHA-256 of it is the token's digest.
func (t Token) PinsRoot(rootCertDER []byte) bool {
	if len(t.Digest) != DigestLen || len(rootCertDER) == 0 {
		return false
	}
	d := sha256.Sum256(rootCertDER)
	return base36(d[:], DigestLen) == t.Digest
}

// PinnedRoot finds, among the certificates a server presented, the root CA
// the token pins, and returns it as a Root that can verify. It fails with
// ErrTokenMismatch if none matches, and ErrBadRoot if the one that does is
// not a cluster's root.
func (t Token) PinnedRoot(certs []*x509.Certificate) (*Root, error) {
	for _, c := range certs {
		if c != nil && t.PinsRoot(c.Raw) {
			if err := checkRootCert(c); err != nil {
				return nil, err
			}
			return newRoot(c, nil), nil
		}
	}
	return nil, fmt.Errorf("%w: none of the %d certificates presented has the token's CA digest (another cluster, or someone in the middle)", ErrTokenMismatch, len(certs))
}

// SecretEqual reports whether two secrets (or two whole tokens) are equal,
// in a time that depends on their lengths only, not on where they differ.
func SecretEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// String returns the token with its secret hidden:
// SWMTKN-1-<digest>-<hidden>. The token itself is the string it was
// parsed from.
func (t Token) String() string {
	return fmt.Sprintf("%s-%d-%s-<hidden>", TokenPrefix, t.Version, t.Digest)
}

// GoString is String, so that %#v hides the secret too.
func (t Token) GoString() string { return t.String() }

// LogValue hides the secret from log/slog.
func (t Token) LogValue() slog.Value { return slog.StringValue(t.String()) }
