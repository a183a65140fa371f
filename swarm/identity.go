package swarm

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/shoalproject/shoal/internal/atomicfile"
	"github.com/shoalproject/shoal/raftstore"
)

// A manager's data dir holds, beside the Raft data (raft.db, snapshots,
// keys.json with the data keys wrapped by the key-encryption key):
//
//	manager.json     its identity: node ID, and whether autolock is on
//	manager.key      the key-encryption key, only when autolock is off
//	manager.key.next a new key-encryption key while autolock is switched
//	                 off or on (gone once the switch is done)
//
// The Raft state is sealed at rest either way. Without autolock the key
// sits beside it (as Docker keeps it), which guards against a copied
// raft.db but not a copied data dir; with autolock the key exists only in
// the operator's hands and in memory.
const (
	identityFile = "manager.json"
	kekFile      = "manager.key"
	kekNextFile  = "manager.key.next"
)

// unlockKeyPrefix marks an unlock key, as Docker's SWMKEY-1-.
const unlockKeyPrefix = "SWMKEY-1-"

type identity struct {
	ID       string `json:"id"`
	AutoLock bool   `json:"autoLock"`
}

// newID is a random ID of 25 lowercase letters and digits, as Docker's.
func newID() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 25)
	rand.Read(b)
	for i := range b {
		// 256 is not a multiple of 36: reject the top values to keep the
		// letters uniform.
		for b[i] >= 252 {
			var one [1]byte
			rand.Read(one[:])
			b[i] = one[0]
		}
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

func readIdentity(dir string) (identity, bool, error) {
	raw, err := os.ReadFile(filepath.Join(dir, identityFile))
	if errors.Is(err, os.ErrNotExist) {
		return identity{}, false, nil
	}
	if err != nil {
		return identity{}, false, err
	}
	var id identity
	if err := json.Unmarshal(raw, &id); err != nil || id.ID == "" {
		return identity{}, false, fmt.Errorf("swarm: %s is corrupt (%v): restore it from a backup, or remove the data dir and join the node again", filepath.Join(dir, identityFile), err)
	}
	return id, true, nil
}

func writeIdentity(dir string, id identity) error {
	b, err := json.Marshal(id)
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, identityFile), b, 0o600)
}

func newKEK() []byte {
	k := make([]byte, raftstore.KeySize)
	rand.Read(k)
	return k
}

func readKEK(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil || len(k) != raftstore.KeySize {
		return nil, fmt.Errorf("swarm: %s is not a key file", path)
	}
	return k, nil
}

func writeKEK(path string, k []byte) error {
	return atomicfile.Write(path, []byte(base64.StdEncoding.EncodeToString(k)+"\n"), 0o600)
}

// FormatUnlockKey turns a key-encryption key into the unlock key a person
// keeps.
func formatUnlockKey(k []byte) string {
	return unlockKeyPrefix + base64.RawStdEncoding.EncodeToString(k)
}

// parseUnlockKey reads an unlock key; the error says what is wrong with it.
func parseUnlockKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, unlockKeyPrefix) {
		return nil, fmt.Errorf("%w: an unlock key starts with %s", ErrBadUnlockKey, unlockKeyPrefix)
	}
	k, err := base64.RawStdEncoding.DecodeString(s[len(unlockKeyPrefix):])
	if err != nil || len(k) != raftstore.KeySize {
		return nil, fmt.Errorf("%w: the key is damaged (copy it whole)", ErrBadUnlockKey)
	}
	return k, nil
}
