package swarm

import (
	"errors"
	"fmt"
	"net"

	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm/api"
)

// Errors of the managers and workers. Calls that fail because of the
// cluster's state (no leader, locked, not started) wrap these; calls that
// fail on their input wrap api.ErrInvalidSpec.
var (
	// ErrNameInUse is returned for a name another object of its kind has.
	ErrNameInUse = errors.New("swarm: name in use")
	// ErrNotFound is returned for an object that does not exist.
	ErrNotFound = errors.New("swarm: not found")
	// ErrNotManagerLeader is returned by a manager that cannot act now
	// because another manager leads (or none does).
	ErrNotManagerLeader = errors.New("swarm: this manager is not the leader")
	// ErrNotStarted is returned by the methods of a Manager or Worker
	// called before Start.
	ErrNotStarted = errors.New("swarm: not started (call Start first)")
	// ErrLocked is returned by a manager with autolock that waits for its
	// unlock key.
	ErrLocked = errors.New("swarm: manager is locked; unlock it with its unlock key (docker swarm unlock)")
	// ErrBadUnlockKey is returned by Unlock for a key that does not open
	// the manager's data.
	ErrBadUnlockKey = errors.New("swarm: wrong unlock key")
	// ErrUnavailable is returned by a manager that cannot serve now
	// (closing, locked, starting, failing); another may.
	ErrUnavailable = errors.New("swarm: manager unavailable")
	// ErrNotAManagerNow is returned by CheckManagerCert for a manager
	// certificate whose node was demoted or removed since it was issued.
	ErrNotAManagerNow = errors.New("swarm: this certificate's node is no longer a manager of the cluster")
)

// Retryable reports whether a call that failed with err may succeed on
// another manager or later: no leader (yet), a manager that is not the
// leader, closed, locked or unreachable. An error about the request itself
// (a bad spec, a conflict, a missing object) is not retryable: sending it
// elsewhere gives the same answer.
func Retryable(err error) bool {
	if err == nil {
		return false
	}
	var netErr net.Error
	switch {
	case errors.Is(err, api.ErrInvalidSpec), errors.Is(err, ErrNameInUse), errors.Is(err, ErrNotFound),
		errors.Is(err, raftstore.ErrConflict), errors.Is(err, ErrBadUnlockKey):
		return false
	case errors.Is(err, ErrNotManagerLeader), errors.Is(err, raftstore.ErrNotLeader), errors.Is(err, raftstore.ErrNoQuorum),
		errors.Is(err, net.ErrClosed), errors.Is(err, ErrNotStarted), errors.Is(err, raftstore.ErrNotStarted),
		errors.Is(err, ErrLocked), errors.Is(err, ErrUnavailable), errors.As(err, &netErr):
		return true
	}
	return false
}

func notFound(kind, id string) error { return fmt.Errorf("%w: %s %q", ErrNotFound, kind, id) }
