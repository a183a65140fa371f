package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
)

const (
	pemCertificate = "CERTIFICATE"
	pemCSR         = "CERTIFICATE REQUEST"
	pemPrivateKey  = "PRIVATE KEY"    // PKCS #8, what this package writes
	pemECKey       = "EC PRIVATE KEY" // SEC 1, also read
)

// maxPEM bounds the PEM input the package decodes: a node certificate, a
// key or a request is well under 2 KiB.
const maxPEM = 64 << 10

// decodeOne decodes data as exactly one PEM block of one of the given
// types, with nothing but white space around it. what names the input for
// messages.
func decodeOne(data []byte, what string, types ...string) (*pem.Block, error) {
	if len(data) > maxPEM {
		return nil, fmt.Errorf("%s is %d bytes, more than %d", what, len(data), maxPEM)
	}
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%s is not PEM", what)
	}
	ok := false
	for _, t := range types {
		ok = ok || block.Type == t
	}
	if !ok {
		return nil, fmt.Errorf("%s is a PEM %q block, want %q", what, clip(block.Type), types[0])
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%s has more than one PEM block", what)
	}
	return block, nil
}

func encodePEM(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// parseCertPEM reads one certificate.
func parseCertPEM(data []byte, what string) (*x509.Certificate, error) {
	block, err := decodeOne(data, what, pemCertificate)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", what, err)
	}
	return cert, nil
}

// parseKeyPEM reads an ECDSA P-256 private key in PKCS #8 or SEC 1 form.
// Its errors name what (the file) and wrap no sentinel: the caller's says
// what the key was for.
func parseKeyPEM(data []byte, what string) (*ecdsa.PrivateKey, error) {
	block, err := decodeOne(data, what, pemPrivateKey, pemECKey)
	if err != nil {
		return nil, err
	}
	var key any
	if block.Type == pemECKey {
		key, err = x509.ParseECPrivateKey(block.Bytes)
	} else {
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %v", what, err)
	}
	k, ok := key.(*ecdsa.PrivateKey)
	if !ok || k.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%s is a %s key; Shoal keys are ECDSA P-256", what, keyKind(publicOf(key)))
	}
	return k, nil
}

// MarshalKey encodes an ECDSA P-256 private key as PEM (PKCS #8), as
// Files.Save and Root.KeyPEM write it.
func MarshalKey(key *ecdsa.PrivateKey) ([]byte, error) {
	if key == nil || key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: want an ECDSA P-256 key (ca.NewNodeKey makes one)", ErrBadKey)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	return encodePEM(pemPrivateKey, der), nil
}

func publicOf(key any) any {
	if s, ok := key.(crypto.Signer); ok {
		return s.Public()
	}
	return key
}

// keyKind names a public key's type for messages: "RSA", "ECDSA P-384" ...
func keyKind(pub any) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == nil {
			return "ECDSA"
		}
		return "ECDSA " + k.Curve.Params().Name
	case *rsa.PublicKey:
		return "RSA"
	case ed25519.PublicKey:
		return "Ed25519"
	case nil:
		return "missing"
	default:
		return fmt.Sprintf("%T", pub)
	}
}

// isP256 reports whether pub is an ECDSA P-256 public key.
func isP256(pub any) bool {
	k, ok := pub.(*ecdsa.PublicKey)
	return ok && k.Curve == elliptic.P256()
}
