package raftstore

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/shoalproject/shoal/internal/atomicfile"
)

// Sealer encrypts and authenticates data at rest. aad binds the sealed bytes
// to their place (a log index, a snapshot frame number), so that sealed
// blocks cannot be swapped.
type Sealer interface {
	Seal(dst, plaintext, aad []byte) ([]byte, error)
	Open(dst, sealed, aad []byte) ([]byte, error)
}

// KeyRing is the built-in Sealer: AES-256-GCM data keys, each wrapped by a
// key-encryption key (KEK) and kept in a small file. Only wrapped keys touch
// the disk; the KEK stays with the caller (with autolock, derived from the
// unlock key a person holds). New data is sealed with the newest data key;
// older keys stay to read older data, so rotation needs no downtime.
type KeyRing struct {
	path string

	mu      sync.RWMutex
	kek     cipher.AEAD
	keys    map[uint32]cipher.AEAD
	current uint32
	file    keyFile
}

var _ Sealer = (*KeyRing)(nil)

type keyFile struct {
	Format  int          `json:"format"`
	Current uint32       `json:"current"`
	Check   []byte       `json:"check"` // a known text sealed by the KEK: tells a wrong KEK apart from corruption
	Keys    []wrappedKey `json:"keys"`
}

type wrappedKey struct {
	ID      uint32    `json:"id"`
	Wrapped []byte    `json:"wrapped"`
	Created time.Time `json:"created"`
}

const (
	keyCheckText  = "shoal raftstore key-encryption key check"
	sealHeaderLen = 4 + 12 // key id, nonce
	// KeySize is the size of a key-encryption key and of each data key.
	KeySize = 32
)

// OpenKeyRing opens the key file at path, or creates it with a fresh data
// key. kek must be KeySize bytes. A wrong kek gives ErrBadKey.
func OpenKeyRing(path string, kek []byte) (*KeyRing, error) {
	aead, err := newAEAD(kek)
	if err != nil {
		return nil, fmt.Errorf("%w: key-encryption key: %v", ErrInvalidConfig, err)
	}
	k := &KeyRing{path: path, kek: aead, keys: map[uint32]cipher.AEAD{}}
	raw, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if k.file.Check, err = sealWith(aead, 0, nil, []byte(keyCheckText), []byte("check")); err != nil {
			return nil, err
		}
		k.file.Format = 1
		if _, err := k.Rotate(); err != nil {
			return nil, err
		}
		return k, nil
	case err != nil:
		return nil, err
	}
	if err := json.Unmarshal(raw, &k.file); err != nil || k.file.Format != 1 {
		return nil, &CorruptError{File: path, Err: fmt.Errorf("not a key file (%v)", err)}
	}
	if _, err := openWith(map[uint32]cipher.AEAD{0: aead}, nil, k.file.Check, []byte("check")); err != nil {
		return nil, fmt.Errorf("%w for %s", ErrBadKey, path)
	}
	for _, wk := range k.file.Keys {
		dek, err := openWith(map[uint32]cipher.AEAD{0: aead}, nil, wk.Wrapped, keyAAD(wk.ID))
		if err != nil {
			return nil, &CorruptError{File: path, Err: fmt.Errorf("data key %d: %v", wk.ID, err)}
		}
		if k.keys[wk.ID], err = newAEAD(dek); err != nil {
			return nil, &CorruptError{File: path, Err: err}
		}
	}
	if k.keys[k.file.Current] == nil {
		return nil, &CorruptError{File: path, Err: fmt.Errorf("current data key %d missing", k.file.Current)}
	}
	k.current = k.file.Current
	return k, nil
}

// Rotate makes a new data key current and returns its ID. Data sealed
// before stays readable.
func (k *KeyRing) Rotate() (uint32, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	dek := make([]byte, KeySize)
	if _, err := rand.Read(dek); err != nil {
		return 0, err
	}
	id := k.current + 1
	for _, wk := range k.file.Keys {
		id = max(id, wk.ID+1)
	}
	wrapped, err := sealWith(k.kek, 0, nil, dek, keyAAD(id))
	if err != nil {
		return 0, err
	}
	aead, err := newAEAD(dek)
	if err != nil {
		return 0, err
	}
	file := k.file
	file.Keys = append(append([]wrappedKey(nil), file.Keys...), wrappedKey{ID: id, Wrapped: wrapped, Created: time.Now().UTC()})
	file.Current = id
	if err := writeFileAtomic(k.path, file); err != nil {
		return 0, err
	}
	k.file, k.keys[id], k.current = file, aead, id
	return id, nil
}

// Rewrap wraps every data key with a new key-encryption key (for example a
// new autolock unlock key). Sealed data is untouched.
func (k *KeyRing) Rewrap(newKEK []byte) error {
	aead, err := newAEAD(newKEK)
	if err != nil {
		return fmt.Errorf("%w: key-encryption key: %v", ErrInvalidConfig, err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	file := keyFile{Format: 1, Current: k.file.Current}
	if file.Check, err = sealWith(aead, 0, nil, []byte(keyCheckText), []byte("check")); err != nil {
		return err
	}
	for _, wk := range k.file.Keys {
		dek, err := openWith(map[uint32]cipher.AEAD{0: k.kek}, nil, wk.Wrapped, keyAAD(wk.ID))
		if err != nil {
			return err
		}
		if wk.Wrapped, err = sealWith(aead, 0, nil, dek, keyAAD(wk.ID)); err != nil {
			return err
		}
		file.Keys = append(file.Keys, wk)
	}
	if err := writeFileAtomic(k.path, file); err != nil {
		return err
	}
	k.file, k.kek = file, aead
	return nil
}

// CurrentKeyID is the ID of the data key new data is sealed with.
func (k *KeyRing) CurrentKeyID() uint32 {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.current
}

// Prune forgets the data keys older than oldestInUse (never the current
// one) and returns their IDs: once no log entry or snapshot on disk is
// sealed with a retired key, keeping it only widens what a stolen key file
// plus KEK would open.
func (k *KeyRing) Prune(oldestInUse uint32) ([]uint32, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	file := k.file
	file.Keys = nil
	var pruned []uint32
	for _, wk := range k.file.Keys {
		if wk.ID < oldestInUse && wk.ID != k.current {
			pruned = append(pruned, wk.ID)
			continue
		}
		file.Keys = append(file.Keys, wk)
	}
	if len(pruned) == 0 {
		return nil, nil
	}
	if err := writeFileAtomic(k.path, file); err != nil {
		return nil, err
	}
	k.file = file
	for _, id := range pruned {
		delete(k.keys, id)
	}
	return pruned, nil
}

// sealedKeyID is the ID of the data key that sealed b.
func sealedKeyID(b []byte) (uint32, bool) {
	if len(b) < sealHeaderLen {
		return 0, false
	}
	return binary.BigEndian.Uint32(b), true
}

// Seal appends to dst: key id, nonce, ciphertext.
func (k *KeyRing) Seal(dst, plaintext, aad []byte) ([]byte, error) {
	k.mu.RLock()
	aead, id := k.keys[k.current], k.current
	k.mu.RUnlock()
	return sealWith(aead, id, dst, plaintext, aad)
}

// Open reverses Seal with whichever data key sealed the data.
func (k *KeyRing) Open(dst, sealed, aad []byte) ([]byte, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return openWith(k.keys, dst, sealed, aad)
}

func sealWith(aead cipher.AEAD, id uint32, dst, plaintext, aad []byte) ([]byte, error) {
	dst = binary.BigEndian.AppendUint32(dst, id)
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	dst = append(dst, nonce...)
	return aead.Seal(dst, nonce, plaintext, aad), nil
}

func openWith(keys map[uint32]cipher.AEAD, dst, sealed, aad []byte) ([]byte, error) {
	if len(sealed) < sealHeaderLen {
		return nil, errors.New("sealed data too short")
	}
	id := binary.BigEndian.Uint32(sealed)
	aead := keys[id]
	if aead == nil {
		return nil, fmt.Errorf("sealed with unknown data key %d", id)
	}
	out, err := aead.Open(dst, sealed[4:sealHeaderLen], sealed[sealHeaderLen:], aad)
	if err != nil {
		return nil, fmt.Errorf("authentication failed (data altered, or another key): %w", err)
	}
	return out, nil
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("must be %d bytes, got %d", KeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func keyAAD(id uint32) []byte { return binary.BigEndian.AppendUint32([]byte("dek"), id) }

func writeFileAtomic(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, data, 0o600)
}
