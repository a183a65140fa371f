package swarmtest

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// link is a worker's way to one manager: it reaches whichever Manager
// runs under that ID now, and fails as a dead connection would while none
// does.
type link struct {
	mu sync.Mutex
	m  *swarm.Manager
}

var (
	_ swarm.Dispatcher    = (*link)(nil)
	_ swarm.LogDispatcher = (*link)(nil)
	_ swarm.NetworkAcker  = (*link)(nil)
)

func (l *link) set(m *swarm.Manager) {
	l.mu.Lock()
	l.m = m
	l.mu.Unlock()
}

func (l *link) get() (*swarm.Manager, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		return nil, fmt.Errorf("swarmtest: manager down: %w", net.ErrClosed)
	}
	return l.m, nil
}

func (l *link) Register(ctx context.Context, nodeID string, desc api.NodeDescription) (swarm.Session, error) {
	m, err := l.get()
	if err != nil {
		return swarm.Session{}, err
	}
	return m.Register(ctx, nodeID, desc)
}

func (l *link) Heartbeat(ctx context.Context, nodeID string) (time.Duration, error) {
	m, err := l.get()
	if err != nil {
		return 0, err
	}
	return m.Heartbeat(ctx, nodeID)
}

func (l *link) Assignments(ctx context.Context, nodeID string) (<-chan *api.Assignment, error) {
	m, err := l.get()
	if err != nil {
		return nil, err
	}
	return m.Assignments(ctx, nodeID)
}

func (l *link) UpdateStatus(ctx context.Context, nodeID string, updates []agent.StatusUpdate) error {
	m, err := l.get()
	if err != nil {
		return err
	}
	return m.UpdateStatus(ctx, nodeID, updates)
}

func (l *link) LogSubscriptions(ctx context.Context, nodeID string) (<-chan swarm.LogSubscription, error) {
	m, err := l.get()
	if err != nil {
		return nil, err
	}
	return m.LogSubscriptions(ctx, nodeID)
}

func (l *link) PublishLogs(ctx context.Context, nodeID string, p swarm.LogPublication) error {
	m, err := l.get()
	if err != nil {
		return err
	}
	return m.PublishLogs(ctx, nodeID, p)
}

func (l *link) AckNetwork(ctx context.Context, nodeID string, version uint64) error {
	m, err := l.get()
	if err != nil {
		return err
	}
	return m.AckNetwork(ctx, nodeID, version)
}
