package ca

import (
	"bytes"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/shoalproject/shoal/internal/atomicfile"
)

// The files of a node's certificates, in Files.Dir/certificates, named as
// Docker names them.
const (
	CertDirName  = "certificates"
	NodeCertFile = "swarm-node.crt"
	NodeKeyFile  = "swarm-node.key"
	RootCertFile = "swarm-root-ca.crt"
	// pendingFile holds all three while Save replaces them: a crash
	// between two of the renames leaves it, and Load takes it, so a key is
	// never paired with another key's certificate.
	pendingFile = "swarm-node.pending"
)

// Files keeps a node's certificate, its private key and the cluster's root
// certificate on disk, in Dir/certificates (mode 0700): swarm-node.crt,
// swarm-node.key (mode 0600) and swarm-root-ca.crt. Each file is replaced
// atomically and the directory synced, and a crash in the middle of a Save
// leaves Load the old files or the new ones, never a mix.
type Files struct {
	// Dir is the node's data directory. It must be set.
	Dir string
}

func (f Files) dir() (string, error) {
	if f.Dir == "" {
		return "", ErrNoDir
	}
	return filepath.Join(f.Dir, CertDirName), nil
}

// Save writes a node's certificate, key and root certificate (all PEM),
// after checking that they belong together: the key is the certificate's,
// the root signed the certificate, and the certificate is a node
// certificate of the root's cluster (its validity is not checked). It
// refuses what does not, with ErrMismatchedFiles, and leaves the files on
// disk as they were. If it fails (or the machine stops) once it has begun
// writing, Load returns the old files or the new ones, whole. Saves to one
// Dir must not run concurrently.
func (f Files) Save(certPEM, keyPEM, rootPEM []byte) error {
	dir, err := f.dir()
	if err != nil {
		return err
	}
	if _, _, err := check(certPEM, keyPEM, rootPEM, "the certificate", "the key", "the root certificate"); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	pending := filepath.Join(dir, pendingFile)
	all := bytes.Join([][]byte{rootPEM, certPEM, keyPEM}, []byte("\n"))
	if err := atomicfile.Write(pending, all, 0o600); err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	for _, w := range []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{RootCertFile, rootPEM, 0o644},
		{NodeKeyFile, keyPEM, 0o600},
		{NodeCertFile, certPEM, 0o644},
	} {
		if err := atomicfile.Write(filepath.Join(dir, w.name), w.data, w.perm); err != nil {
			return fmt.Errorf("ca: %w", err)
		}
	}
	if err := atomicfile.Remove(pending); err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	return nil
}

// Load reads what Save wrote: the node's certificate and key, as a
// tls.Certificate with Leaf set, and the root, which can verify but not
// issue. It fails with ErrNoFiles (and fs.ErrNotExist) when there are no
// files (the node has not joined), ErrCorruptFiles when one is missing or
// unreadable, and ErrMismatchedFiles when they do not belong together. It
// does not check the certificate's validity: see Root.Verify and
// NeedsRenewal.
func (f Files) Load() (tls.Certificate, *Root, error) {
	dir, err := f.dir()
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	if all, err := os.ReadFile(filepath.Join(dir, pendingFile)); err == nil {
		return loadPending(all, filepath.Join(dir, pendingFile))
	} else if !errors.Is(err, fs.ErrNotExist) {
		return tls.Certificate{}, nil, fmt.Errorf("%w: %w", ErrCorruptFiles, err)
	}
	names := []string{NodeCertFile, NodeKeyFile, RootCertFile}
	data := make([][]byte, len(names))
	var missing []string
	for i, name := range names {
		b, err := os.ReadFile(filepath.Join(dir, name))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			missing = append(missing, name)
		case err != nil:
			return tls.Certificate{}, nil, fmt.Errorf("%w: %w", ErrCorruptFiles, err)
		}
		data[i] = b
	}
	switch {
	case len(missing) == len(names):
		return tls.Certificate{}, nil, fmt.Errorf("%w in %s (the node has not joined a cluster): %w", ErrNoFiles, dir, fs.ErrNotExist)
	case len(missing) > 0:
		return tls.Certificate{}, nil, fmt.Errorf("%w: %s has no %v (restore it, or remove the directory and join again)", ErrCorruptFiles, dir, missing)
	}
	path := func(name string) string { return filepath.Join(dir, name) }
	return check(data[0], data[1], data[2], path(NodeCertFile), path(NodeKeyFile), path(RootCertFile))
}

// loadPending reads the pending file Save left when it was interrupted:
// the root, the certificate and the key, in this order.
func loadPending(all []byte, path string) (tls.Certificate, *Root, error) {
	blocks := splitPEM(all)
	if len(blocks) != 3 {
		return tls.Certificate{}, nil, fmt.Errorf("%w: %s holds %d PEM blocks, want 3", ErrCorruptFiles, path, len(blocks))
	}
	return check(blocks[1], blocks[2], blocks[0], path, path, path)
}

// splitPEM cuts data into its PEM blocks, each re-encoded alone.
func splitPEM(data []byte) [][]byte {
	var out [][]byte
	for {
		block, rest := pem.Decode(data)
		if block == nil {
			return out
		}
		out = append(out, pem.EncodeToMemory(block))
		data = rest
	}
}

// check parses a node's certificate, key and root and checks they belong
// together. The names are for messages.
func check(certPEM, keyPEM, rootPEM []byte, certName, keyName, rootName string) (tls.Certificate, *Root, error) {
	rootCert, err := parseCertPEM(rootPEM, rootName)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("%w: %v", ErrCorruptFiles, err)
	}
	if err := checkRootCert(rootCert); err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("%w: %s: %v", ErrCorruptFiles, rootName, err)
	}
	root := newRoot(rootCert, nil)
	leaf, err := parseCertPEM(certPEM, certName)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("%w: %v", ErrCorruptFiles, err)
	}
	key, err := parseKeyPEM(keyPEM, keyName)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("%w: %v", ErrCorruptFiles, err)
	}
	if !key.PublicKey.Equal(leaf.PublicKey) {
		return tls.Certificate{}, nil, fmt.Errorf("%w: %s is not the key of %s", ErrMismatchedFiles, keyName, certName)
	}
	if err := leaf.CheckSignatureFrom(root.cert); err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("%w: the root in %s did not sign %s", ErrMismatchedFiles, rootName, certName)
	}
	if _, err := root.checkIdentity(leaf); err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("%w: %s: %w", ErrMismatchedFiles, certName, err)
	}
	return tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}, root, nil
}
