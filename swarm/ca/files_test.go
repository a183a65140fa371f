package ca_test

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoalproject/shoal/swarm/ca"
)

func certDir(f ca.Files) string { return filepath.Join(f.Dir, "certificates") }

func TestFilesRoundTrip(t *testing.T) {
	r := newRoot(t, "c1")
	n := issue(t, r, "n1", ca.RoleManager, 0)
	f := ca.Files{Dir: filepath.Join(t.TempDir(), "node")}
	if err := f.Save(n.certPEM, n.keyPEM, r.CertPEM()); err != nil {
		t.Fatal(err)
	}
	cert, root, err := f.Load()
	if err != nil {
		t.Fatal(err)
	}
	if !cert.Leaf.Equal(n.cert) || len(cert.Certificate) != 1 || !bytes.Equal(cert.Certificate[0], n.cert.Raw) {
		t.Error("the loaded certificate differs")
	}
	if !n.key.Equal(cert.PrivateKey) {
		t.Error("the loaded key differs")
	}
	if root.Digest() != r.Digest() || root.CanIssue() {
		t.Errorf("the loaded root: digest equal %v, can issue %v", root.Digest() == r.Digest(), root.CanIssue())
	}
	if id, err := root.Verify([]*x509.Certificate{cert.Leaf}); err != nil || id.NodeID != "n1" {
		t.Errorf("the loaded root does not verify the loaded certificate: %v", err)
	}
	// Modes: the key for the node's user only.
	for name, want := range map[string]fs.FileMode{
		"swarm-node.key": 0o600, "swarm-node.crt": 0o644, "swarm-root-ca.crt": 0o644, ".": 0o700 | fs.ModeDir,
	} {
		st, err := os.Stat(filepath.Join(certDir(f), name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != want {
			t.Errorf("%s has mode %v, want %v", name, st.Mode(), want)
		}
	}
	// A renewed certificate with a new key replaces both, and leaves no
	// other file behind.
	renewed := issue(t, r, "n1", ca.RoleManager, 0)
	if err := f.Save(renewed.certPEM, renewed.keyPEM, r.CertPEM()); err != nil {
		t.Fatal(err)
	}
	cert, _, err = f.Load()
	if err != nil || !cert.Leaf.Equal(renewed.cert) || !renewed.key.Equal(cert.PrivateKey) {
		t.Errorf("after renewal: %v", err)
	}
	entries, _ := os.ReadDir(certDir(f))
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "swarm-node.crt swarm-node.key swarm-root-ca.crt" {
		t.Errorf("files %v", names)
	}
}

func TestFilesLoadErrors(t *testing.T) {
	r := newRoot(t, "c1")
	n := issue(t, r, "n1", ca.RoleWorker, 0)
	save := func(t *testing.T) ca.Files {
		f := ca.Files{Dir: t.TempDir()}
		if err := f.Save(n.certPEM, n.keyPEM, r.CertPEM()); err != nil {
			t.Fatal(err)
		}
		return f
	}

	t.Run("nothing", func(t *testing.T) {
		_, _, err := ca.Files{Dir: t.TempDir()}.Load()
		if !errors.Is(err, ca.ErrNoFiles) || !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "has not joined") {
			t.Errorf("no files: %v", err)
		}
	})
	t.Run("no dir", func(t *testing.T) {
		if _, _, err := (ca.Files{}).Load(); !errors.Is(err, ca.ErrNoDir) {
			t.Errorf("Load with no Dir: %v", err)
		}
		if err := (ca.Files{}).Save(n.certPEM, n.keyPEM, r.CertPEM()); !errors.Is(err, ca.ErrNoDir) {
			t.Errorf("Save with no Dir: %v", err)
		}
	})
	for _, name := range []string{"swarm-node.crt", "swarm-node.key", "swarm-root-ca.crt"} {
		t.Run("missing "+name, func(t *testing.T) {
			f := save(t)
			os.Remove(filepath.Join(certDir(f), name))
			_, _, err := f.Load()
			if !errors.Is(err, ca.ErrCorruptFiles) || errors.Is(err, ca.ErrNoFiles) || !strings.Contains(err.Error(), "has no ["+name+"]") {
				t.Errorf("%v", err)
			}
		})
		t.Run("truncated "+name, func(t *testing.T) {
			f := save(t)
			p := filepath.Join(certDir(f), name)
			b, _ := os.ReadFile(p)
			os.WriteFile(p, b[:len(b)/2], 0o600)
			_, _, err := f.Load()
			if !errors.Is(err, ca.ErrCorruptFiles) || !strings.Contains(err.Error(), p+" is not PEM") {
				t.Errorf("%v, want ErrCorruptFiles saying %s is not PEM", err, p)
			}
		})
		t.Run("garbage in "+name, func(t *testing.T) {
			f := save(t)
			p := filepath.Join(certDir(f), name)
			b, _ := os.ReadFile(p)
			block, _ := pem.Decode(b)
			block.Bytes = block.Bytes[:len(block.Bytes)-10]
			os.WriteFile(p, pem.EncodeToMemory(block), 0o600)
			_, _, err := f.Load()
			if !errors.Is(err, ca.ErrCorruptFiles) || !strings.Contains(err.Error(), p+": ") {
				t.Errorf("%v, want ErrCorruptFiles naming %s", err, p)
			}
		})
		t.Run("empty "+name, func(t *testing.T) {
			f := save(t)
			p := filepath.Join(certDir(f), name)
			os.WriteFile(p, nil, 0o600)
			_, _, err := f.Load()
			if !errors.Is(err, ca.ErrCorruptFiles) || !strings.Contains(err.Error(), p+" is not PEM") {
				t.Errorf("%v, want ErrCorruptFiles saying %s is not PEM", err, p)
			}
		})
	}
	t.Run("another node's key", func(t *testing.T) {
		f := save(t)
		os.WriteFile(filepath.Join(certDir(f), "swarm-node.key"), issue(t, r, "n2", ca.RoleWorker, 0).keyPEM, 0o600)
		_, _, err := f.Load()
		if !errors.Is(err, ca.ErrMismatchedFiles) || !strings.Contains(err.Error(), "is not the key of") {
			t.Errorf("%v", err)
		}
	})
	t.Run("another root", func(t *testing.T) {
		f := save(t)
		os.WriteFile(filepath.Join(certDir(f), "swarm-root-ca.crt"), newRoot(t, "c1").CertPEM(), 0o644)
		_, _, err := f.Load()
		if !errors.Is(err, ca.ErrMismatchedFiles) || !strings.Contains(err.Error(), "did not sign") {
			t.Errorf("%v", err)
		}
	})
}

func TestFilesSaveRefusesMismatchesAndKeepsTheOldFiles(t *testing.T) {
	r := newRoot(t, "c1")
	n := issue(t, r, "n1", ca.RoleWorker, 0)
	other := issue(t, r, "n2", ca.RoleWorker, 0)
	otherRoot := newRoot(t, "c1")
	stray := craft(t, r, func(c *x509.Certificate) { c.Subject.Organization = []string{"c2"} })
	f := ca.Files{Dir: t.TempDir()}
	if err := f.Save(n.certPEM, n.keyPEM, r.CertPEM()); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name            string
		cert, key, root []byte
		want            error
	}{
		{"another node's key", n.certPEM, other.keyPEM, r.CertPEM(), ca.ErrMismatchedFiles},
		{"another root", n.certPEM, n.keyPEM, otherRoot.CertPEM(), ca.ErrMismatchedFiles},
		{"another cluster", stray.certPEM, stray.keyPEM, r.CertPEM(), ca.ErrMismatchedFiles},
		{"a key that is not PEM", n.certPEM, []byte("key"), r.CertPEM(), ca.ErrCorruptFiles},
		{"no certificate", nil, n.keyPEM, r.CertPEM(), ca.ErrCorruptFiles},
	} {
		err := f.Save(c.cert, c.key, c.root)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
		cert, _, err := f.Load()
		if err != nil || !cert.Leaf.Equal(n.cert) {
			t.Errorf("%s: the saved files changed: %v", c.name, err)
		}
	}
}

// TestFilesSaveInterrupted rebuilds what a crash in the middle of a Save
// leaves (the new key renamed in, the old certificate still there) and
// checks Load returns a pair that belongs together: the new one.
func TestFilesSaveInterrupted(t *testing.T) {
	r := newRoot(t, "c1")
	old := issue(t, r, "n1", ca.RoleWorker, 0)
	renewed := issue(t, r, "n1", ca.RoleWorker, 0)

	// What is left without the pending file: a mismatch.
	bare := ca.Files{Dir: t.TempDir()}
	if err := bare.Save(old.certPEM, old.keyPEM, r.CertPEM()); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(certDir(bare), "swarm-node.key"), renewed.keyPEM, 0o600)
	if _, _, err := bare.Load(); !errors.Is(err, ca.ErrMismatchedFiles) {
		t.Fatalf("a torn save without the pending file: %v", err)
	}

	// With it, as Save writes it first: the new pair.
	f := ca.Files{Dir: t.TempDir()}
	if err := f.Save(old.certPEM, old.keyPEM, r.CertPEM()); err != nil {
		t.Fatal(err)
	}
	pending := bytes.Join([][]byte{r.CertPEM(), renewed.certPEM, renewed.keyPEM}, []byte("\n"))
	os.WriteFile(filepath.Join(certDir(f), "swarm-node.pending"), pending, 0o600)
	os.WriteFile(filepath.Join(certDir(f), "swarm-node.key"), renewed.keyPEM, 0o600)
	cert, _, err := f.Load()
	if err != nil || !cert.Leaf.Equal(renewed.cert) || !renewed.key.Equal(cert.PrivateKey) {
		t.Fatalf("a torn save: %v", err)
	}
	// The next Save finishes the job and clears the pending file.
	if err := f.Save(renewed.certPEM, renewed.keyPEM, r.CertPEM()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(certDir(f), "swarm-node.pending")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the pending file stays: %v", err)
	}
	if cert, _, err := f.Load(); err != nil || !cert.Leaf.Equal(renewed.cert) {
		t.Errorf("after the next save: %v", err)
	}
}
