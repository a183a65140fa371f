package swarm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shoalproject/shoal/internal/atomicfile"
	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/scheduler"
	"github.com/shoalproject/shoal/swarm/ca"
)

// DefaultHeartbeatPeriod is how often workers report; a node silent for
// three periods is down and its tasks are replaced elsewhere (Docker waits
// about 15 s; a few seconds here).
const DefaultHeartbeatPeriod = time.Second

// DefaultMaxTasksPerPass bounds the tasks one reconcile pass creates and
// commits. A pass holds the leader loop (other services' changes and node
// changes wait for it) and its tasks in memory: on a 2-core machine
// 100,000 tasks take a pass about 1.4 s and 300 MB. A bigger service is
// created over several passes.
const DefaultMaxTasksPerPass = 100_000

// DefaultPassStep is the most tasks one step of a pass creates: a pass
// commits in steps, each its own few Raft entries, which the store
// applies while the leader places and encodes the next step.
const DefaultPassStep = 10_000

// Manager keeps the cluster's desired state in Raft (raftstore) and drives
// it. Its parts, one concept per file:
//   - the control API (control.go): services, nodes and the cluster
//     object, validated and stored;
//   - the dispatcher (dispatcher.go): worker registration, heartbeats,
//     assignments and task status;
//   - the leader loop (leader.go, reconcile.go): on the leader only, the
//     orchestrators (orchestrator.go, updater.go, enforcer.go) and the
//     scheduler (assign.go) turn changes into tasks;
//   - identity and keys (identity.go): the node ID and the key that seals
//     the Raft data at rest, with optional autolock.
//
// Several managers form one Raft cluster; only the leader reconciles and
// takes writes, and a new leader takes over where the old one stopped.
//
// A zero Manager is a single manager with its state in memory. Set Dir to
// keep state across restarts: the manager keeps its ID and data there and
// seals the Raft data at rest.
type Manager struct {
	// ID is the manager's node ID and Raft member ID. Empty means the ID
	// saved in Dir, or a new one (saved there). A non-empty ID that does
	// not match Dir's is an error.
	ID string
	// Dir keeps the identity, the Raft log and snapshots; empty keeps state
	// in memory (tests, simulations).
	Dir string
	// Transport carries Raft traffic; nil means an in-memory transport
	// (a single manager).
	Transport raft.Transport
	// Bootstrap lists the managers of a new cluster (this one included),
	// used only when Dir holds no state; empty means this manager alone,
	// unless JoinExisting is set.
	Bootstrap []raftstore.Server
	// JoinExisting makes a manager with no state wait to be added to an
	// existing cluster by its leader, instead of starting a cluster alone.
	JoinExisting bool
	// HeartbeatPeriod is how often workers must report in a small
	// cluster; 0 means DefaultHeartbeatPeriod. Workers learn it from their
	// session.
	HeartbeatPeriod time.Duration
	// HeartbeatsPerSecond bounds the heartbeats the leader takes: with
	// more nodes, the period grows. 0 means DefaultHeartbeatsPerSecond.
	HeartbeatsPerSecond int
	// Scheduler places tasks; nil means spread.
	Scheduler *scheduler.Scheduler
	// AutoLock keeps the key that unseals the Raft data off the disk: a
	// new manager makes an unlock key (see UnlockKey) for the operator to
	// keep, and after a restart waits, locked, for Unlock. It is read when
	// Dir holds no state; later, SetAutoLock changes it. Needs Dir.
	AutoLock bool
	// UnlockWith unlocks a manager with autolock at Start (a wrong key
	// makes Start fail with ErrBadUnlockKey); empty leaves it locked until
	// Unlock.
	UnlockWith string
	// MaxTasksPerPass bounds the tasks one reconcile pass creates (in
	// steps of at most DefaultPassStep); 0 means DefaultMaxTasksPerPass.
	MaxTasksPerPass int
	// passStepSize, when positive, replaces DefaultPassStep (tests).
	passStepSize int
	// stepHook, when set (by tests), runs before each step of a pass
	// after the first, on the pass's goroutine: a test changes the store
	// there as another writer would between two steps.
	stepHook func(step int)
	// DrainTimeout bounds how long a stopping task that is a backend
	// waits for every node to confirm it took the task out (drain.go);
	// 0 or negative means DefaultDrainTimeout. The managers decide it:
	// it goes to the workers in their sessions, and a worker's own bound
	// for when no leader answers is this plus DrainTimeoutMargin (unless
	// the worker's host sets Worker.DrainTimeout), so the leader, which
	// knows which nodes are down, decides first.
	DrainTimeout time.Duration
	// DrainDelay bounds how long a drained task keeps running before its
	// stop, for the requests under way (the linger, which ends as soon as
	// the task has no client connection left where the worker can count
	// them; see Worker.DrainDelay); told to the workers in their
	// sessions, it applies on those whose host did not set
	// Worker.DrainDelay. 0 means each worker's default (DefaultDrainDelay,
	// or DefaultFixedDrainDelay where it cannot count); negative means
	// none.
	DrainDelay time.Duration
	// Raft tunes the Raft store; zero fields mean raftstore's defaults.
	Raft RaftTuning
	// RootCA is a new cluster's root CA, with its key, recorded when the
	// first leader creates the cluster object; nil makes one then. Nodes
	// bring their own (they need a certificate before the manager runs).
	RootCA *ca.Root
	// TwoNode turns on two-node mode (fence.go): when the Raft
	// configuration has exactly two voters, both managers, and the other
	// one is lost, this manager fences it and goes on alone. Needs Dir.
	TwoNode *TwoNode
	// Logger receives the manager's logs; nil discards.
	Logger *slog.Logger

	mu        sync.Mutex
	started   bool
	closed    bool
	locked    bool
	autoLk    bool   // autolock is on (identity)
	kek       []byte // the key-encryption key in use, nil in memory
	store     *raftstore.Store
	disp      *dispatcher
	cancel    context.CancelFunc
	done      chan struct{}
	ready     chan struct{}
	addrs     atomic.Pointer[cachedAddrs]
	arbHealth arbiterHealth // which arbiters this manager cannot reach
	fence     fenceState    // two-node mode: why it is read-only

	// reconcileTime and scheduleTime time the leader's passes (Stats).
	reconcileTime, scheduleTime latency
}

// RaftTuning holds the Raft store's timing and sizes (see raftstore.Store
// for each): elections, snapshots, and how many recent changes are kept
// for watchers that fall behind.
type RaftTuning struct {
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	SnapshotThreshold  uint64
	TrailingLogs       uint64
	WatchBuffer        int
}

// Start opens the manager's data dir (or memory), joins the Raft cluster
// and starts reconciling when it leads. A manager with autolock and no
// UnlockWith starts locked: Start returns nil, Locked reports true, and
// Unlock opens it. A second Start does nothing; Start after Close fails
// with an error wrapping net.ErrClosed. On failure everything opened is
// closed again.
func (m *Manager) Start(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.closed:
		return fmt.Errorf("swarm: start: %w", net.ErrClosed)
	case m.started:
		return nil
	}
	if err := m.validateTwoNode(); err != nil {
		return err
	}
	if err := checkDrainBounds(m.DrainTimeout, m.DrainDelay); err != nil {
		return err
	}
	keys, err := m.resolveIdentity()
	if err != nil {
		return err
	}
	if m.locked {
		m.started = true
		m.logger().Warn("swarm: manager is locked; unlock it with its unlock key", "manager", m.ID)
		return nil
	}
	if err := m.open(ctx, keys); err != nil {
		if len(keys) == 1 && keys[0].fresh && m.Dir != "" {
			removeFresh(m.Dir)
		}
		return err
	}
	m.started = true
	return nil
}

// open starts the store with the first key that opens it, and the loops.
func (m *Manager) open(ctx context.Context, keys []kekCandidate) error {
	var st *raftstore.Store
	var used kekCandidate
	var err error
	for _, k := range keys {
		st, err = m.startStore(ctx, k.key)
		if err == nil {
			used = k
			break
		}
		if !errors.Is(err, raftstore.ErrBadKey) {
			return err
		}
	}
	if err != nil {
		if !m.autoLk {
			return fmt.Errorf("swarm: %s does not open this manager's data (%v): restore the key file from a backup", filepath.Join(m.Dir, kekFile), err)
		}
		return fmt.Errorf("%w (%v)", ErrBadUnlockKey, err)
	}
	switch {
	case used.next:
		if err := m.finishInterruptedSwitch(used.key); err != nil {
			st.Close()
			return err
		}
	case used.fresh:
	case m.Dir != "":
		// A key of an interrupted switch that did not open the data is
		// stale.
		if err := atomicfile.Remove(filepath.Join(m.Dir, kekNextFile)); err != nil {
			st.Close()
			return err
		}
	}
	m.kek, m.store, m.locked = used.key, st, false
	m.disp = &dispatcher{store: st, period: m.heartbeatPeriod(), rate: m.HeartbeatsPerSecond, logger: m.logger(),
		managers: func() []string { return managerAddrs(st) }, drainTimeout: m.DrainTimeout, drainDelay: m.DrainDelay}
	m.ready = m.readyChan()
	runCtx, cancel := context.WithCancel(context.Background())
	m.cancel, m.done = cancel, make(chan struct{})
	go m.run(runCtx)
	go m.becomeReady(runCtx, st, m.ready)
	return nil
}

// becomeReady closes ready once the store has caught up with a leader and
// holds the cluster object (which a new cluster's first leader creates).
func (m *Manager) becomeReady(ctx context.Context, st *raftstore.Store, ready chan struct{}) {
	select {
	case <-st.Ready():
	case <-ctx.Done():
		return
	}
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		n := 0
		st.View(func(tx *raftstore.ReadTx) (err error) {
			n, err = tx.Count(TableClusters)
			return err
		})
		if n > 0 {
			close(ready)
			return
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

func (m *Manager) startStore(ctx context.Context, kek []byte) (*raftstore.Store, error) {
	transport := m.Transport
	if transport == nil {
		transport = raftstore.NewMemNetwork().Transport(m.ID)
	}
	boot := m.Bootstrap
	if len(boot) == 0 && !m.JoinExisting {
		boot = []raftstore.Server{{ID: m.ID, Address: string(transport.LocalAddr()), Voter: true}}
	}
	t := m.Raft
	st := &raftstore.Store{ID: m.ID, Dir: m.Dir, Schema: Schema(), Transport: transport, Logger: m.Logger,
		Bootstrap: boot, KeyEncryptionKey: kek,
		HeartbeatTimeout: t.HeartbeatTimeout, ElectionTimeout: t.ElectionTimeout, LeaderLeaseTimeout: t.LeaderLeaseTimeout,
		SnapshotThreshold: t.SnapshotThreshold, TrailingLogs: t.TrailingLogs, WatchBuffer: t.WatchBuffer}
	if err := st.Start(ctx); err != nil {
		return nil, err
	}
	return st, nil
}

// Ready is closed once the manager is part of a working cluster: a leader
// is known, this manager has applied everything committed when it learnt
// of it, and the cluster object exists. Until then its reads may be
// stale. A locked manager is not ready.
func (m *Manager) Ready() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.readyChan()
}

func (m *Manager) readyChan() chan struct{} {
	if m.ready == nil {
		m.ready = make(chan struct{})
	}
	return m.ready
}

// Store is the manager's replicated store, for reads and watches; nil
// before Start and while locked.
func (m *Manager) Store() *raftstore.Store {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.store
}

// IsLeader reports whether this manager leads the cluster now.
func (m *Manager) IsLeader() bool {
	st, err := m.st()
	return err == nil && st.IsLeader()
}

// Shutdown stops the manager gracefully: a leader first hands leadership
// to another manager, so the cluster does not wait for an election
// timeout. ctx bounds the handover; the manager closes either way.
func (m *Manager) Shutdown(ctx context.Context) error {
	st, loops, err := m.markClosed("shutdown")
	if err != nil {
		return err
	}
	loops()
	if st == nil {
		return nil
	}
	return st.Shutdown(ctx)
}

// Close stops the manager at once, as a crash would for the cluster (no
// leadership handover; Raft state on disk is as durable as at any
// instant). A second Close returns an error wrapping net.ErrClosed.
func (m *Manager) Close() error {
	st, loops, err := m.markClosed("close")
	if err != nil {
		return err
	}
	loops()
	if st == nil {
		return nil
	}
	return st.Close()
}

// markClosed flags the manager closed and returns its store and a func
// that stops its loops.
func (m *Manager) markClosed(op string) (*raftstore.Store, func(), error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, nil, fmt.Errorf("swarm: %s: %w", op, net.ErrClosed)
	}
	m.closed = true
	cancel, done := m.cancel, m.done
	return m.store, func() {
		if cancel != nil {
			cancel()
			<-done
		}
	}, nil
}

// st returns the store of a running, unlocked manager.
func (m *Manager) st() (*raftstore.Store, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.usable()
}

func (m *Manager) usable() (*raftstore.Store, error) {
	switch {
	case m.closed:
		return nil, fmt.Errorf("swarm: manager: %w", net.ErrClosed)
	case !m.started:
		return nil, ErrNotStarted
	case m.locked:
		return nil, ErrLocked
	}
	return m.store, nil
}

func (m *Manager) dispatcher() (*dispatcher, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.usable(); err != nil {
		return nil, err
	}
	return m.disp, nil
}

func (m *Manager) heartbeatPeriod() time.Duration {
	if m.HeartbeatPeriod > 0 {
		return m.HeartbeatPeriod
	}
	return DefaultHeartbeatPeriod
}

func (m *Manager) maxTasksPerPass() int {
	if m.MaxTasksPerPass > 0 {
		return m.MaxTasksPerPass
	}
	return DefaultMaxTasksPerPass
}

func (m *Manager) passStep() int {
	if m.passStepSize > 0 {
		return m.passStepSize
	}
	return DefaultPassStep
}

func (m *Manager) logger() *slog.Logger {
	if m.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return m.Logger
}

// managerAddrs lists the managers' addresses from the Raft configuration
// (their management ports); arbiters serve no API and are left out.
func managerAddrs(st *raftstore.Store) []string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	srvs, err := st.Servers(ctx)
	if err != nil {
		return nil
	}
	arbiters := arbitersOf(st)
	out := make([]string, 0, len(srvs))
	for _, s := range srvs {
		if !arbiters[s.ID] {
			out = append(out, s.Address)
		}
	}
	return out
}
