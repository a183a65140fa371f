package raftstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// LockFile is the file in Dir whose flock says a member (Start, for the
// store's life) or a recovery (Recover, for its duration) has the dir.
// The kernel drops the lock with the holder's last descriptor, so a
// member killed with SIGKILL leaves the dir free; the PID in the file is
// only a hint for the error message. The file stays when the lock is
// released; a caller that undoes a failed first Start removes it with
// the rest.
const LockFile = "raftstore.lock"

// DirLockedError is returned by Start and Recover when another store, in
// this process or another, has Dir open: two members on one data dir, or
// a recovery under a running member, would corrupt it.
type DirLockedError struct {
	Dir string
	// PID is the holder's process ID as it wrote it in the lock file; 0
	// when unknown.
	PID int
}

func (e *DirLockedError) Error() string {
	holder := "another process"
	switch {
	case e.PID == os.Getpid():
		holder = fmt.Sprintf("another store in this process (%d)", e.PID)
	case e.PID > 0:
		holder = fmt.Sprintf("process %d", e.PID)
	}
	return fmt.Sprintf("raftstore: data dir %s is in use by %s (a running member or a recovery): stop it (or close that Store) first", e.Dir, holder)
}

func (e *DirLockedError) Unwrap() error { return ErrDirLocked }

// lockDir takes Dir's lock without waiting; release gives it back.
func lockDir(dir string) (release func(), err error) {
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("raftstore: data dir lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("raftstore: locking %s: %w", path, err)
		}
		b, _ := os.ReadFile(path)
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return nil, &DirLockedError{Dir: dir, PID: pid}
	}
	// Best effort: the PID only names the holder in the error above.
	if f.Truncate(0) == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() { f.Close() }, nil
}
