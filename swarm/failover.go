package swarm

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/swarm/api"
)

// Failover is a Dispatcher over several managers: a call goes to the
// manager that took the last one and, when it fails in a way another
// manager may not (not the leader, no quorum, closed, unreachable: see
// Retryable), to the next, until one takes it. An error about the request
// itself is returned at once: every manager would give it.
type Failover struct {
	// Managers are tried in turn; at least one is required.
	Managers []Dispatcher

	mu  sync.Mutex
	cur int
}

var _ Dispatcher = (*Failover)(nil)

func (f *Failover) call(fn func(d Dispatcher) error) error {
	if len(f.Managers) == 0 || slices.Contains(f.Managers, nil) {
		return errors.New("swarm: failover dispatcher needs managers, none of them nil")
	}
	f.mu.Lock()
	start := f.cur
	f.mu.Unlock()
	var errs []error
	for i := range f.Managers {
		k := (start + i) % len(f.Managers)
		err := fn(f.Managers[k])
		if err == nil {
			f.mu.Lock()
			f.cur = k
			f.mu.Unlock()
			return nil
		}
		if !Retryable(err) {
			return err
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Register registers with the first manager that takes it.
func (f *Failover) Register(ctx context.Context, nodeID string, desc api.NodeDescription) (Session, error) {
	var s Session
	err := f.call(func(d Dispatcher) (err error) {
		s, err = d.Register(ctx, nodeID, desc)
		return err
	})
	return s, err
}

// Heartbeat reaches the leader.
func (f *Failover) Heartbeat(ctx context.Context, nodeID string) (time.Duration, error) {
	var p time.Duration
	err := f.call(func(d Dispatcher) (err error) {
		p, err = d.Heartbeat(ctx, nodeID)
		return err
	})
	return p, err
}

// Assignments streams from the manager that took the last call.
func (f *Failover) Assignments(ctx context.Context, nodeID string) (<-chan *api.Assignment, error) {
	var ch <-chan *api.Assignment
	err := f.call(func(d Dispatcher) (err error) {
		ch, err = d.Assignments(ctx, nodeID)
		return err
	})
	return ch, err
}

// UpdateStatus reaches the leader.
func (f *Failover) UpdateStatus(ctx context.Context, nodeID string, updates []agent.StatusUpdate) error {
	return f.call(func(d Dispatcher) error { return d.UpdateStatus(ctx, nodeID, updates) })
}
