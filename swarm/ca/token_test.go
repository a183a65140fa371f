package ca_test

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"regexp"
	"strings"
	"testing"

	"github.com/shoalproject/shoal/swarm/ca"
)

// base36 is the digest of a token, computed here the way Docker's
// swarmkit does (the hex digest read as a number, written in base 36,
// zero-padded), independently of the package.
func base36Digest(der []byte) string {
	sum := sha256.Sum256(der)
	n, _ := new(big.Int).SetString(fmt.Sprintf("%x", sum), 16)
	return fmt.Sprintf("%050s", n.Text(36))
}

func TestTokenRoundTrip(t *testing.T) {
	r := newRoot(t, "c1")
	s, err := ca.NewToken(r)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^SWMTKN-1-[0-9a-z]{50}-[0-9a-z]{25}$`).MatchString(s) {
		t.Fatalf("token %q is not SWMTKN-1-<50 base 36>-<25 base 36>", s)
	}
	tok, err := ca.ParseToken(s)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Version != 1 || tok.Digest != s[9:59] || tok.Secret != s[60:] {
		t.Errorf("parsed %d %q %q from %q", tok.Version, tok.Digest, tok.Secret, s)
	}
	if want := base36Digest(r.Certificate().Raw); tok.Digest != want {
		t.Errorf("digest %s, want %s", tok.Digest, want)
	}
	if !tok.PinsRoot(r.Certificate().Raw) {
		t.Error("the token does not pin its own root")
	}
	other := newRoot(t, "c1")
	if tok.PinsRoot(other.Certificate().Raw) || tok.PinsRoot(nil) || (ca.Token{}).PinsRoot(r.Certificate().Raw) {
		t.Error("the token pins another root, or nothing")
	}
	// White space from a file or a terminal is fine.
	if tok2, err := ca.ParseToken("  " + s + "\n"); err != nil || tok2 != tok {
		t.Errorf("with white space: %v", err)
	}
	// New tokens: the same digest, other secrets (a rotation).
	secrets := map[string]bool{tok.Secret: true}
	for range 200 {
		s2, _ := ca.NewToken(r)
		tok2, err := ca.ParseToken(s2)
		if err != nil {
			t.Fatal(err)
		}
		if tok2.Digest != tok.Digest || secrets[tok2.Secret] {
			t.Fatalf("token %d: digest changed or secret repeated", len(secrets))
		}
		secrets[tok2.Secret] = true
	}
}

func TestParseTokenReadsDockersTokens(t *testing.T) {
	// A token of Docker's documentation.
	const docker = "SWMTKN-1-49nj1cmql0jkz5s954yi3oex3nedyz0fb0xx14ie39trti4wxv-8vxv8rssmk743ojnwacrr2e7c"
	tok, err := ca.ParseToken(docker)
	if err != nil || tok.Digest != "49nj1cmql0jkz5s954yi3oex3nedyz0fb0xx14ie39trti4wxv" || tok.Secret != "8vxv8rssmk743ojnwacrr2e7c" {
		t.Errorf("ParseToken(docker) = %v, %v", tok.Digest, err)
	}
}

func TestParseTokenRefusesMalformedWithoutTheSecret(t *testing.T) {
	const (
		digest = "49nj1cmql0jkz5s954yi3oex3nedyz0fb0xx14ie39trti4wxv"
		secret = "q7w8e9r0t1y2u3i4o5p6a7s8d"
	)
	if _, err := ca.ParseToken("SWMTKN-1-" + digest + "-" + secret); err != nil {
		t.Fatalf("the well-formed token: %v", err)
	}
	for _, c := range []struct {
		name, token, want string
	}{
		{"empty", "", "it does not start with SWMTKN-"},
		{"another prefix", "SWMTKX-1-" + digest + "-" + secret, "it does not start with SWMTKN-"},
		{"a lowercase prefix", "swmtkn-1-" + digest + "-" + secret, "it does not start with SWMTKN-"},
		{"the secret alone", secret, "it does not start with SWMTKN-"},
		{"no version", "SWMTKN-" + digest + "-" + secret, "version (the part after SWMTKN-) is not a number"},
		{"a word for version", "SWMTKN-v1-" + digest + "-" + secret, "is not a number"},
		{"a padded version", "SWMTKN-01-" + digest + "-" + secret, "is not a number"},
		{"version 2", "SWMTKN-2-" + digest + "-" + secret, "version 2 is not supported (want 1)"},
		{"Docker's version 2", "SWMTKN-2-1-" + digest + "-" + secret, "version 2 is not supported"},
		{"no secret", "SWMTKN-1-" + digest, "3 parts separated by '-', want 4"},
		{"an extra part", "SWMTKN-1-" + digest + "-" + secret + "-x", "5 parts"},
		{"a short digest", "SWMTKN-1-" + digest[1:] + "-" + secret, "the CA digest has 49 characters, want 50"},
		{"a long digest", "SWMTKN-1-0" + digest + "-" + secret, "the CA digest has 51 characters, want 50"},
		{"an uppercase digest", "SWMTKN-1-" + strings.ToUpper(digest) + "-" + secret, "the CA digest has 'N' at position 3, want only 0-9 and a-z"},
		{"a digest beyond SHA-256", "SWMTKN-1-" + strings.Repeat("z", 50) + "-" + secret, "larger than a SHA-256 digest"},
		{"swapped parts", "SWMTKN-1-" + secret + "-" + digest, "the CA digest has 25 characters"},
		{"a short secret", "SWMTKN-1-" + digest + "-" + secret[1:], "the secret has 24 characters, want 25"},
		{"a long secret", "SWMTKN-1-" + digest + "-" + secret + "z", "the secret has 26 characters, want 25"},
		{"an uppercase secret", "SWMTKN-1-" + digest + "-" + strings.ToUpper(secret), "the secret has a character other than 0-9 and a-z"},
		{"a secret with a space", "SWMTKN-1-" + digest + "-" + secret[:12] + " " + secret[13:], "the secret has a character other than"},
		{"far too long", "SWMTKN-1-" + digest + "-" + strings.Repeat(secret, 20), "characters; a join token has 85"},
	} {
		tok, err := ca.ParseToken(c.token)
		if !errors.Is(err, ca.ErrBadToken) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrBadToken saying %q", c.name, err, c.want)
			continue
		}
		if tok != (ca.Token{}) {
			t.Errorf("%s: a refused token has content", c.name)
		}
		// No run of 6 characters of the secret, in either case, appears.
		msg := strings.ToLower(err.Error())
		for i := 0; i+6 <= len(secret); i++ {
			if strings.Contains(msg, secret[i:i+6]) {
				t.Errorf("%s: the message %q shows the secret", c.name, err)
				break
			}
		}
	}
}

func TestTokenHidesItsSecret(t *testing.T) {
	r := newRoot(t, "c1")
	s, _ := ca.NewToken(r)
	tok, _ := ca.ParseToken(s)
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	logger.Info("joining", "token", tok)
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("joining", "token", tok)
	for _, out := range []string{
		fmt.Sprint(tok), fmt.Sprintf("%v %+v %#v %s", tok, tok, tok, tok), fmt.Sprint(&tok), buf.String(),
	} {
		if strings.Contains(out, tok.Secret) {
			t.Errorf("%q shows the secret", out)
		}
		if !strings.Contains(out, tok.Digest) {
			t.Errorf("%q does not show the digest", out)
		}
	}
	if got, want := tok.String(), "SWMTKN-1-"+tok.Digest+"-<hidden>"; got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
}

func TestSecretEqual(t *testing.T) {
	a := "q7w8e9r0t1y2u3i4o5p6a7s8d"
	if !ca.SecretEqual(a, strings.Clone(a)) {
		t.Error("equal secrets differ")
	}
	for _, b := range []string{"q7w8e9r0t1y2u3i4o5p6a7s8e", "x7w8e9r0t1y2u3i4o5p6a7s8d", a[:24], a + "d", ""} {
		if ca.SecretEqual(a, b) {
			t.Errorf("SecretEqual(%q, %q)", a, b)
		}
	}
}

func TestPinnedRoot(t *testing.T) {
	r := newRoot(t, "c1")
	s, _ := ca.NewToken(r)
	tok, _ := ca.ParseToken(s)
	n := issue(t, r, "m1", ca.RoleManager, 0)
	got, err := tok.PinnedRoot([]*x509.Certificate{n.cert, r.Certificate()})
	if err != nil || got.Digest() != r.Digest() || got.ClusterID() != "c1" || got.CanIssue() {
		t.Errorf("PinnedRoot = %v, %v", got, err)
	}
	if _, err := tok.PinnedRoot([]*x509.Certificate{n.cert}); !errors.Is(err, ca.ErrTokenMismatch) {
		t.Errorf("without the root: %v", err)
	}
	if _, err := tok.PinnedRoot([]*x509.Certificate{nil}); !errors.Is(err, ca.ErrTokenMismatch) {
		t.Errorf("a nil certificate: %v", err)
	}
	// A token that pins a node certificate does not make it a root.
	leafTok := ca.Token{Version: 1, Digest: base36Digest(n.cert.Raw), Secret: tok.Secret}
	if _, err := leafTok.PinnedRoot([]*x509.Certificate{n.cert}); !errors.Is(err, ca.ErrBadRoot) {
		t.Errorf("a pinned node certificate: %v", err)
	}
}

func TestTokenDigestIsZeroPadded(t *testing.T) {
	// About one root in seven has a digest below 36^49: its base 36 form
	// is shorter than 50 and must be padded with zeros.
	for range 200 {
		r := newRoot(t, "c1")
		s, err := ca.NewToken(r)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := ca.ParseToken(s)
		if err != nil {
			t.Fatal(err)
		}
		if tok.Digest[0] != '0' {
			continue
		}
		if want := base36Digest(r.Certificate().Raw); tok.Digest != want || !tok.PinsRoot(r.Certificate().Raw) {
			t.Errorf("digest %s, want %s", tok.Digest, want)
		}
		return
	}
	t.Fatal("no root with a short digest in 200")
}
