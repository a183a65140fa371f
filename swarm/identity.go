package swarm

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/shoalproject/shoal/internal/atomicfile"
	"github.com/shoalproject/shoal/raftstore"
)

// A manager's data dir holds, beside the Raft data (the log in wal/, or
// raft.db before the WAL; snapshots; keys.json with the data keys wrapped
// by the key-encryption key):
//
//	manager.json     its identity: node ID, and whether autolock is on
//	manager.key      the key-encryption key, only when autolock is off
//	manager.key.next a new key-encryption key while autolock is switched
//	                 off or on (gone once the switch is done)
//
// The Raft state is sealed at rest either way. Without autolock the key
// sits beside it (as Docker keeps it), which guards against a copied
// Raft log but not a copied data dir; with autolock the key exists only in
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

// formatUnlockKey turns a key-encryption key into the unlock key a person
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

// resolveIdentity reads (or makes) the manager's ID and the candidate keys
// that may unseal its data, in order. It sets m.locked when autolock is on
// and no key is at hand.
func (m *Manager) resolveIdentity() ([]kekCandidate, error) {
	if m.Dir == "" {
		if m.AutoLock {
			return nil, errors.New("swarm: AutoLock needs Dir (there is nothing to lock in memory)")
		}
		if m.ID == "" {
			m.ID = newID()
		}
		return []kekCandidate{{}}, nil
	}
	if err := os.MkdirAll(m.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("swarm: data dir: %w", err)
	}
	id, ok, err := readIdentity(m.Dir)
	if err != nil {
		return nil, err
	}
	if !ok {
		if holdsRaftData(m.Dir) {
			return nil, fmt.Errorf("swarm: %s holds Raft data but no %s: it is not a manager's data dir, or the file was lost (restore it, or use an empty dir)", m.Dir, identityFile)
		}
		if m.ID == "" {
			m.ID = newID()
		}
		kek := newKEK()
		// With autolock, the key waits in kekNextFile until UnlockKey hands
		// it out: a manager that dies before then must not be locked with
		// a key nobody has (it comes back with autolock off, and says so).
		keyFile := kekFile
		if m.AutoLock {
			keyFile = kekNextFile
		}
		if err := writeKEK(filepath.Join(m.Dir, keyFile), kek); err != nil {
			return nil, err
		}
		if err := writeIdentity(m.Dir, identity{ID: m.ID, AutoLock: m.AutoLock}); err != nil {
			return nil, err
		}
		m.autoLk = m.AutoLock
		return []kekCandidate{{key: kek, fresh: true}}, nil
	}
	if m.ID != "" && m.ID != id.ID {
		return nil, fmt.Errorf("swarm: data dir %s belongs to manager %s, not %s (leave ID empty, or use another dir)", m.Dir, id.ID, m.ID)
	}
	m.ID, m.autoLk = id.ID, id.AutoLock
	var keys []kekCandidate
	if !id.AutoLock {
		k, err := readKEK(filepath.Join(m.Dir, kekFile))
		switch {
		case err == nil:
			keys = append(keys, kekCandidate{key: k})
		case !errors.Is(err, os.ErrNotExist):
			return nil, err
		}
	} else if m.UnlockWith != "" {
		k, err := parseUnlockKey(m.UnlockWith)
		if err != nil {
			return nil, err
		}
		keys = append(keys, kekCandidate{key: k})
	}
	// A switch of autolock (or of the key) that a crash interrupted left
	// the new key here; it may be the one that opens the data.
	if k, err := readKEK(filepath.Join(m.Dir, kekNextFile)); err == nil {
		keys = append(keys, kekCandidate{key: k, next: true})
	}
	if len(keys) == 0 {
		if !id.AutoLock {
			return nil, fmt.Errorf("swarm: %s is missing: the manager cannot unseal its data (restore the file from a backup)", filepath.Join(m.Dir, kekFile))
		}
		m.locked = true
	}
	return keys, nil
}

// kekCandidate is a key that may unseal the data; next marks the key of an
// interrupted switch, fresh the key of a new data dir.
type kekCandidate struct {
	key   []byte
	next  bool
	fresh bool
}

// removeFresh removes what a first Start wrote to a data dir that held
// nothing, when it fails: the dir is as it was, and a second Start begins
// again (it would otherwise find half a manager).
func removeFresh(dir string) {
	for _, f := range []string{identityFile, kekFile, kekNextFile, "raft.db", "keys.json", raftstore.LockFile} {
		os.Remove(filepath.Join(dir, f))
	}
	os.RemoveAll(filepath.Join(dir, "snapshots"))
	os.RemoveAll(filepath.Join(dir, "wal"))
	atomicfile.SyncDir(dir)
}

// holdsRaftData reports whether dir holds a Raft log: the WAL, or a
// bbolt log from before it.
func holdsRaftData(dir string) bool {
	for _, f := range []string{"wal", "raft.db"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			return true
		}
	}
	return false
}

// finishInterruptedSwitch settles a data dir whose data opened with the
// key of a switch that a crash interrupted. The operator never received
// that key, so autolock ends up off, with the key on disk: the manager
// never locks itself out. Turn autolock on again to get a new unlock key.
func (m *Manager) finishInterruptedSwitch(k []byte) error {
	if err := writeKEK(filepath.Join(m.Dir, kekFile), k); err != nil {
		return err
	}
	if err := writeIdentity(m.Dir, identity{ID: m.ID}); err != nil {
		return err
	}
	if m.autoLk {
		m.logger().Warn("swarm: autolock was turned on, but the manager stopped before its unlock key was given out; autolock is off now: turn it on again (SetAutoLock) and keep the key")
	}
	m.autoLk = false
	return atomicfile.Remove(filepath.Join(m.Dir, kekNextFile))
}

// Unlock opens a locked manager with its unlock key. It does nothing on a
// manager that is not locked.
func (m *Manager) Unlock(ctx context.Context, unlockKey string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.closed:
		return fmt.Errorf("swarm: unlock: %w", net.ErrClosed)
	case !m.started:
		return ErrNotStarted
	case !m.locked:
		return nil
	}
	k, err := parseUnlockKey(unlockKey)
	if err != nil {
		return err
	}
	keys := []kekCandidate{{key: k}}
	if n, err := readKEK(filepath.Join(m.Dir, kekNextFile)); err == nil {
		keys = append(keys, kekCandidate{key: n, next: true})
	}
	return m.open(ctx, keys)
}

// Locked reports whether the manager waits for its unlock key.
func (m *Manager) Locked() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.locked
}

// UnlockKey returns the key that unlocks this manager after a restart,
// when autolock is on.
func (m *Manager) UnlockKey() (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.usable(); err != nil {
		return "", err
	}
	if !m.autoLk {
		return "", errors.New("swarm: autolock is off: this manager has no unlock key")
	}
	// The key is handed out: it leaves the disk (see resolveIdentity).
	if m.Dir != "" {
		if err := atomicfile.Remove(filepath.Join(m.Dir, kekNextFile)); err != nil {
			return "", err
		}
	}
	return formatUnlockKey(m.kek), nil
}

// SetAutoLock turns autolock on (returning the new unlock key, which the
// operator must keep) or off. Turning it on when it is on rotates the key.
// Each step is written before the next, so a crash in the middle leaves a
// manager that still starts (with autolock off: see
// finishInterruptedSwitch).
func (m *Manager) SetAutoLock(ctx context.Context, on bool) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, err := m.usable()
	if err != nil {
		return "", err
	}
	if m.Dir == "" {
		return "", errors.New("swarm: autolock needs Dir (a manager in memory has nothing to lock)")
	}
	if !on {
		if !m.autoLk {
			return "", nil
		}
		if err := writeKEK(filepath.Join(m.Dir, kekFile), m.kek); err != nil {
			return "", err
		}
		if err := writeIdentity(m.Dir, identity{ID: m.ID}); err != nil {
			return "", err
		}
		m.autoLk = false
		return "", nil
	}
	next := newKEK()
	nextPath := filepath.Join(m.Dir, kekNextFile)
	if err := writeKEK(nextPath, next); err != nil {
		return "", err
	}
	if err := st.RewrapKeys(next); err != nil {
		atomicfile.Remove(nextPath)
		return "", err
	}
	if err := writeIdentity(m.Dir, identity{ID: m.ID, AutoLock: true}); err != nil {
		return "", err
	}
	if err := atomicfile.Remove(filepath.Join(m.Dir, kekFile)); err != nil {
		return "", err
	}
	if err := atomicfile.Remove(nextPath); err != nil {
		return "", err
	}
	m.kek, m.autoLk = next, true
	return formatUnlockKey(next), nil
}
