package raftstore

import (
	"errors"
	"fmt"
)

// Sentinel errors. Typed errors below wrap them, so errors.Is works on both.
var (
	ErrNotFound      = errors.New("raftstore: object not found")
	ErrExists        = errors.New("raftstore: object already exists")
	ErrConflict      = errors.New("raftstore: version conflict")
	ErrNoTable       = errors.New("raftstore: no such table")
	ErrNoIndex       = errors.New("raftstore: no such index")
	ErrNotLeader     = errors.New("raftstore: not the leader")
	ErrNoQuorum      = errors.New("raftstore: no quorum: the change may not be committed; a majority of members is unreachable")
	ErrResync        = errors.New("raftstore: watcher fell behind; read the state again with View and watch from its Index")
	ErrCorrupt       = errors.New("raftstore: data is corrupt")
	ErrBadKey        = errors.New("raftstore: wrong key-encryption key")
	ErrInvalidConfig = errors.New("raftstore: invalid configuration")
	ErrNotStarted    = errors.New("raftstore: store not started")
	ErrTooLarge      = errors.New("raftstore: transaction too large")
	// ErrDirLocked is wrapped by a DirLockedError: another store has the dir.
	ErrDirLocked = errors.New("raftstore: data dir in use")
)

// ConflictError reports an optimistic-concurrency failure: the object changed
// (or appeared, or vanished) since the version the caller read.
type ConflictError struct {
	Table, ID string
	// Expected is the version the change was based on (0: expected absent).
	Expected uint64
	// Actual is the version in the store (0: absent).
	Actual uint64
	// Index and Key are set when the change would give a key of a unique
	// index to a second object; HeldBy is the object that has it.
	Index, Key, HeldBy string
}

func (e *ConflictError) Error() string {
	switch {
	case e.Key != "":
		return fmt.Sprintf("raftstore: conflict on %s/%s: %s %q is taken by %s", e.Table, e.ID, e.Index, e.Key, e.HeldBy)
	case e.Expected == 0:
		return fmt.Sprintf("raftstore: version conflict on %s/%s: it already exists (version %d)", e.Table, e.ID, e.Actual)
	case e.Actual == 0:
		return fmt.Sprintf("raftstore: version conflict on %s/%s: it was deleted (expected version %d)", e.Table, e.ID, e.Expected)
	default:
		return fmt.Sprintf("raftstore: version conflict on %s/%s: expected version %d, store has %d; read it again and retry", e.Table, e.ID, e.Expected, e.Actual)
	}
}

func (e *ConflictError) Unwrap() error { return ErrConflict }

// NotLeaderError is returned by writes and linearizable reads on a member that
// is not the leader. Leader fields are empty when no leader is known.
type NotLeaderError struct {
	LeaderID, LeaderAddr string
}

func (e *NotLeaderError) Error() string {
	if e.LeaderAddr == "" {
		return "raftstore: not the leader, and no leader is known (election in progress or no quorum)"
	}
	return fmt.Sprintf("raftstore: not the leader; the leader is %s at %s", e.LeaderID, e.LeaderAddr)
}

func (e *NotLeaderError) Unwrap() error { return ErrNotLeader }

// CorruptError names a data file that cannot be read.
type CorruptError struct {
	File string
	Err  error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("raftstore: %s is corrupt or truncated: %v (restore the data dir from a backup, or remove this member and join it again)", e.File, e.Err)
}

func (e *CorruptError) Unwrap() []error { return []error{ErrCorrupt, e.Err} }
