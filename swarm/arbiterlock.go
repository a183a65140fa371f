package swarm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/shoalproject/shoal/internal/atomicfile"
)

// An arbiter's data is sealed at rest like a manager's. Without autolock
// the key-encryption key sits beside it (arbiter.key); with autolock it
// exists only in the operator's hands: Join makes it and keeps it in
// arbiter.key.next until UnlockKey hands it out (an arbiter that dies
// before then comes back with it, not locked with a key nobody has), and
// Start needs UnlockWith. Unlike a manager, a locked arbiter does not
// wait for its key: it has no API to receive it on, so Start fails and
// says so.
const arbiterKEKNextFile = "arbiter.key.next"

// arbiterKey is the key that unseals the arbiter's data, and whether
// autolock is on.
func (a *Arbiter) arbiterKey() (kek []byte, autoLock bool, err error) {
	k, err := readKEK(filepath.Join(a.Dir, arbiterKEKFile))
	if err == nil {
		return k, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, false, fmt.Errorf("swarm: the arbiter's key %s: %w (restore it from a backup)", filepath.Join(a.Dir, arbiterKEKFile), err)
	}
	if k, err := readKEK(filepath.Join(a.Dir, arbiterKEKNextFile)); err == nil {
		return k, true, nil
	}
	if a.UnlockWith == "" {
		return nil, true, fmt.Errorf("%w: this arbiter's data is sealed with autolock: start it with its unlock key (UnlockWith)", ErrLocked)
	}
	k, err = parseUnlockKey(a.UnlockWith)
	return k, true, err
}

// UnlockKey is the arbiter's unlock key when it joined with AutoLock; the
// first call takes the key off the disk, so keep what it returns: a
// restarted arbiter needs it (UnlockWith).
func (a *Arbiter) UnlockKey() (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case a.store == nil:
		return "", ErrNotStarted
	case !a.autoLk:
		return "", errors.New("swarm: autolock is off: this arbiter has no unlock key")
	}
	if err := atomicfile.Remove(filepath.Join(a.Dir, arbiterKEKNextFile)); err != nil {
		return "", err
	}
	return formatUnlockKey(a.kek), nil
}
