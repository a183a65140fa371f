package raftstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Defaults for Store fields left zero. The timeouts are tighter than
// hashicorp/raft's (1 s) so a dead leader is replaced in about a second.
const (
	DefaultHeartbeatTimeout   = 500 * time.Millisecond
	DefaultElectionTimeout    = 500 * time.Millisecond
	DefaultLeaderLeaseTimeout = 250 * time.Millisecond
	DefaultSnapshotThreshold  = 8192
	DefaultTrailingLogs       = 10240
	DefaultWatchBuffer        = 1 << 17
	DefaultWatchBufferBytes   = 32 << 20
	DefaultMaxEntryBytes      = 256 << 10
	// MaxTxBytes bounds one transaction's log entry; use Batch beyond it.
	MaxTxBytes = 64 << 20
)

// Server is one member of the Raft configuration.
type Server struct {
	ID      string
	Address string
	// Voter is false for a non-voter: it receives the log but does not vote
	// or count toward quorum.
	Voter bool
}

// LeaderInfo describes the current leader; empty fields mean none is known.
type LeaderInfo struct {
	ID, Address string
	// Self is true when this member is the leader.
	Self bool
	// Term is this member's Raft term when the leader was observed: a
	// member that lost and won leadership between two looks at it sees a
	// new term.
	Term uint64
}

// FormerLeader is the last leader other than this member that this member
// saw lose leadership (fall silent or be replaced). A new leader can count
// that member's silence from LastContact, which it knows although it never
// led while the member was alive.
type FormerLeader struct {
	ID string
	// LastContact is Raft's last contact when the change was seen: the
	// former leader's last message, or something later (a vote this member
	// granted, the next leader's first message), never earlier.
	LastContact time.Time
}

// BatchResult is what a Batch achieved: how many changes committed, and the
// changes skipped because their object changed first.
type BatchResult struct {
	Applied   int
	Conflicts []*ConflictError
	// Index is the Raft index of the batch's last entry.
	Index uint64
}

// Store is one member of a replicated, transactional, watchable object
// store. Set the fields, then call Start. A Store is safe for concurrent use.
type Store struct {
	// ID names this member in the Raft configuration; required.
	ID string
	// Dir holds the log, stable state, key file and snapshots. Empty keeps
	// everything in memory (tests, simulations): nothing survives a restart.
	// One store has it at a time: Start and Recover lock it, and a second
	// one gets a DirLockedError.
	Dir string
	// Schema lists the tables; it must be the same on every member.
	Schema *Schema
	// Transport carries Raft messages; required. See MemNetwork,
	// NewNetworkTransport and TLSStreamLayer.
	Transport raft.Transport
	// Bootstrap is the initial configuration, used only when Dir holds no
	// state. A member that joins an existing cluster leaves it empty and is
	// added by the leader with AddVoter or AddNonvoter.
	Bootstrap []Server
	// KeyEncryptionKey (KeySize bytes) turns on encryption at rest: log
	// entries and snapshots are sealed with data keys wrapped by it. Sealer
	// overrides it with a caller's implementation. Both need Dir.
	KeyEncryptionKey []byte
	Sealer           Sealer
	// Timing; zero means the Default value.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	// SnapshotThreshold is how many entries since the last snapshot trigger
	// a new one; TrailingLogs how many stay in the log after it.
	SnapshotThreshold uint64
	TrailingLogs      uint64
	// WatchBuffer is how many recent events are kept for watchers that are
	// behind; one further behind must resync. WatchBufferBytes bounds the
	// previous versions of objects those events hold (the new versions are
	// the state's own), so the oldest events also go once the objects they
	// replaced add up to more.
	WatchBuffer      int
	WatchBufferBytes int
	// MaxEntryBytes is the size a Batch fills a log entry to.
	MaxEntryBytes int
	// WALSegmentBytes is the size of the log's segment files, allocated
	// whole when made; 0 means 64 MiB. A member that compacts often (an
	// arbiter) needs less. Segments already on disk keep their size.
	WALSegmentBytes int64
	// WALCacheBytes bounds the recent log entries kept in memory for
	// replication; 0 means 16 MiB. A member that rarely leads (an
	// arbiter) needs little.
	WALCacheBytes int
	// Logger receives the store's and Raft's logs; nil discards.
	Logger *slog.Logger

	mu      sync.Mutex
	started bool
	closed  bool

	fsm    *fsm
	events *eventRing
	logs   *WAL
	// raftPtr is the running raft: RecoverAlone replaces it, so every
	// use loads it (s.r()).
	raftPtr atomic.Pointer[raft.Raft]
	// What raft runs on, kept for RecoverAlone's restart.
	raftConf  *raft.Config
	stable    raft.StableStore
	snapStore raft.SnapshotStore
	raftTrans raft.Transport
	calls     stoppable // the running raft's transport: RecoverAlone cuts its calls short
	unlockDir func()    // releases Dir's lock (lockDir)
	recoverMu sync.Mutex
	logStore  raft.LogStore // the cached log, for covered()
	keyring   *KeyRing
	snaps     *sealedSnapshotStore
	pruneMu   sync.Mutex
	ready     chan struct{}
	done      chan struct{}
	bgWG      sync.WaitGroup
	bgMu      sync.Mutex // guards bgStopped, so no bgWG.Add follows Close's Wait
	bgStopped bool
	observer  *raft.Observer
	// beforeObserve, when set (tests), runs between NewRaft and the
	// observer's registration.
	beforeObserve func(*raft.Raft)
	barrierAt     atomic.Uint64 // the term whose barrier completed: linearizable reads may skip it

	dictMu sync.Mutex
	// newDicts are dictionaries this member proposed that may not be
	// applied yet, by table: entries carry them until they are.
	newDicts map[string]*dict

	leaderMu   sync.Mutex
	leaderSubs map[chan LeaderInfo]struct{}
	leaderLast LeaderInfo
	former     FormerLeader
	// LeaderDrops counts leader changes dropped for a slow subscriber (the
	// subscriber still gets the newest value).
	leaderDrops atomic.Uint64
	// leaderChanges counts the leader changes this member observed.
	leaderChanges atomic.Uint64
	seen          leaderSeen // LastLeader (leaderseen.go)
}

// Start opens the data dir, restores state and joins the Raft cluster. It
// returns once the member runs; Ready closes when it has caught up with a
// leader. A second Start is a no-op. On failure everything opened is closed.
func (s *Store) Start(ctx context.Context) (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("raftstore: start: %w", net.ErrClosed)
	}
	if s.started {
		return nil
	}
	if err := s.validate(); err != nil {
		return err
	}
	var cleanup []func()
	defer func() {
		if err != nil {
			for i := len(cleanup) - 1; i >= 0; i-- {
				cleanup[i]()
			}
		}
	}()

	s.events = newEventRing(cmp(s.WatchBuffer, DefaultWatchBuffer), s.Schema.tableNames()...)
	s.events.maxBytes = cmp(s.WatchBufferBytes, DefaultWatchBufferBytes)
	logger := s.logger()
	if s.fsm, err = newFSM(s.Schema, s.events, logger); err != nil {
		return err
	}
	logStore, stableStore, snaps, transport, closeLogs, err := s.openStorage(logger)
	if err != nil {
		return err
	}
	if closeLogs != nil {
		cleanup = append(cleanup, closeLogs)
	}
	// No raft.LogCache: the WAL keeps recent entries itself, bounded by size.
	cached := logStore
	s.logStore = cached

	conf := s.raftConfig()

	existing, err := raft.HasExistingState(cached, stableStore, snaps)
	if err != nil {
		return fmt.Errorf("raftstore: reading state in %s: %w", s.Dir, err)
	}
	s.calls = newStoppable(transport)
	r, err := raft.NewRaft(conf, s.fsm, cached, stableStore, snaps, s.calls)
	if err != nil {
		return fmt.Errorf("raftstore: start raft (data dir %q): %w", s.Dir, err)
	}
	s.raftPtr.Store(r)
	s.raftConf, s.stable, s.snapStore, s.raftTrans = conf, stableStore, snaps, transport
	cleanup = append(cleanup, func() { r.Shutdown().Error() })
	if !existing && len(s.Bootstrap) > 0 {
		cfg := raftConfiguration(s.Bootstrap)
		// The other members of a new cluster may already run and reach this
		// one between NewRaft and here: then it has their log (or term) and
		// no longer needs bootstrapping; raft refuses it as not new.
		if err := r.BootstrapCluster(cfg).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			return fmt.Errorf("raftstore: bootstrap: %w", err)
		}
	}
	s.ready = make(chan struct{})
	s.done = make(chan struct{})
	s.leaderSubs = map[chan LeaderInfo]struct{}{}
	obsCh := make(chan raft.Observation, 16)
	s.observer = raft.NewObserver(obsCh, false, func(o *raft.Observation) bool {
		s.seen.note(s.ID, o)
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	s.observe(r)
	s.bgWG.Add(2)
	go s.watchLeader(obsCh)
	go s.waitReady()
	s.started = true
	logger.Info("raftstore started", "id", s.ID, "dir", s.Dir, "existing_state", existing, "encrypted", s.Sealer != nil || s.keyring != nil)
	return nil
}

// openStorage opens what a member keeps: the sealed WAL, its stable state
// and the snapshots in Dir, or memory when Dir is empty. The transport it
// returns holds back commits past the durable log. closeLogs (nil in
// memory) closes the WAL on a failed start.
func (s *Store) openStorage(logger *slog.Logger) (logStore raft.LogStore, stableStore raft.StableStore, snaps raft.SnapshotStore, transport raft.Transport, closeLogs func(), err error) {
	transport = s.Transport
	if s.Dir == "" {
		mem := raft.NewInmemStore()
		return mem, mem, raft.NewInmemSnapshotStore(), transport, nil, nil
	}
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return nil, nil, nil, nil, nil, fmt.Errorf("raftstore: data dir: %w", err)
	}
	// Held until closeLogs (Recover, a failed Start) or Close.
	if s.unlockDir, err = lockDir(s.Dir); err != nil {
		return nil, nil, nil, nil, nil, err
	}
	sealer := s.Sealer
	if sealer == nil && s.KeyEncryptionKey != nil {
		if s.keyring, err = OpenKeyRing(filepath.Join(s.Dir, "keys.json"), s.KeyEncryptionKey); err != nil {
			s.unlockDir()
			return nil, nil, nil, nil, nil, err
		}
		sealer = s.keyring
	}
	if s.logs, err = openLog(s.Dir, sealer, logger, cmp(s.WALSegmentBytes, defaultSegBytes)); err != nil {
		s.unlockDir()
		return nil, nil, nil, nil, nil, err
	}
	closeLogs = func() { s.logs.Close(); s.unlockDir() }
	s.logs.recentMax = cmp(s.WALCacheBytes, recentMaxBytes)
	leading := func() bool {
		r := s.raftPtr.Load()
		return r != nil && r.State() == raft.Leader
	}
	s.logs.leading.Store(&leading)
	s.fsm.durable = s.logs.waitDurable
	if transport != nil {
		transport = guardCommits(transport, s.logs.durableIndex)
	}
	snapDir := filepath.Join(s.Dir, "snapshots")
	fss, err := raft.NewFileSnapshotStoreWithLogger(s.Dir, 2, newHCLogger(s.Logger, "raft-snap"))
	if err != nil {
		closeLogs()
		return nil, nil, nil, nil, nil, fmt.Errorf("raftstore: snapshots in %s: %w", snapDir, err)
	}
	snaps = fss
	if sealer != nil {
		ss := &sealedSnapshotStore{inner: fss, sealer: sealer, dir: snapDir}
		if s.keyring != nil {
			ss.onClose = func() {
				// Keys retired before this snapshot may be unused now
				// (or after the next compaction; pruning is cautious).
				// Tracked so that Close waits for it: a prune after
				// Close would touch files of a store whose dir the
				// owner may be removing.
				// (Its own lock: this runs inside raft, also under
				// Recover, which holds s.mu.)
				s.bgMu.Lock()
				defer s.bgMu.Unlock()
				if s.bgStopped {
					return
				}
				s.bgWG.Add(1)
				go func() {
					defer s.bgWG.Done()
					if pruned, err := s.PruneDataKeys(); err != nil {
						s.logger().Warn("raftstore: pruning data keys", "err", err)
					} else if len(pruned) > 0 {
						s.logger().Info("raftstore: retired data keys pruned", "keys", pruned)
					}
				}()
			}
		}
		s.snaps = ss
		snaps = ss
	}
	return s.logs, s.logs, snaps, transport, closeLogs, nil
}

// maxAppendEntries bounds the entries raft gathers into one local write,
// one AppendEntries request and one FSM apply. hashicorp/raft also sizes
// slices by it on every call: each member's commit makes one of this many
// pointers and each send to a follower another, so at one writer 256 cost
// about 10 KB of garbage per write across three members, more than the
// write's own data. 128 halves that and was level with 256 at 256
// writers (raftbench, two pairs each: 29.5k and 28.1k writes/s against
// 29.9k and 27.8k); 64 lost 10 to 20% there (followers sync once per
// request, and requests got smaller).
const maxAppendEntries = 128

// raftConfig is raft's configuration from the store's fields.
func (s *Store) raftConfig() *raft.Config {
	conf := raft.DefaultConfig()
	conf.LocalID = raft.ServerID(s.ID)
	conf.HeartbeatTimeout = cmp(s.HeartbeatTimeout, DefaultHeartbeatTimeout)
	conf.ElectionTimeout = cmp(s.ElectionTimeout, DefaultElectionTimeout)
	conf.LeaderLeaseTimeout = cmp(s.LeaderLeaseTimeout, DefaultLeaderLeaseTimeout)
	conf.CommitTimeout = 5 * time.Millisecond
	conf.SnapshotThreshold = cmp(s.SnapshotThreshold, DefaultSnapshotThreshold)
	conf.TrailingLogs = cmp(s.TrailingLogs, DefaultTrailingLogs)
	conf.SnapshotInterval = 10 * time.Second
	conf.MaxAppendEntries = maxAppendEntries
	conf.BatchApplyCh = true
	conf.Logger = newHCLogger(s.Logger, "raft")
	conf.NoLegacyTelemetry = true

	return conf
}

func (s *Store) validate() error {
	switch {
	case s.ID == "":
		return fmt.Errorf("%w: ID is required", ErrInvalidConfig)
	case s.Transport == nil:
		return fmt.Errorf("%w: Transport is required", ErrInvalidConfig)
	case s.Dir == "" && (s.KeyEncryptionKey != nil || s.Sealer != nil):
		return fmt.Errorf("%w: encryption at rest needs Dir", ErrInvalidConfig)
	}
	return s.Schema.init()
}

func (s *Store) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

func cmp[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Ready is closed once this member knows a leader and has applied every
// entry committed when it learnt of it.
func (s *Store) Ready() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ready == nil {
		s.ready = make(chan struct{})
	}
	return s.ready
}

func (s *Store) waitReady() {
	defer s.bgWG.Done()
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		addr, _ := s.r().LeaderWithID()
		if addr == "" {
			continue
		}
		if commit := s.r().CommitIndex(); commit > 0 && s.covered(commit) {
			close(s.ready)
			return
		}
	}
}

func (s *Store) watchLeader(ch chan raft.Observation) {
	defer s.bgWG.Done()
	for {
		select {
		case <-s.done:
			return
		case o := <-ch:
			lo := o.Data.(raft.LeaderObservation)
			info := LeaderInfo{ID: string(lo.LeaderID), Address: string(lo.LeaderAddr), Self: lo.LeaderID == raft.ServerID(s.ID), Term: s.r().CurrentTerm()}
			s.logger().Info("raftstore leader changed", "leader", info.ID, "address", info.Address, "self", info.Self)
			s.leaderChanges.Add(1)
			s.leaderMu.Lock()
			if prev := s.leaderLast; prev.ID != "" && prev.ID != info.ID {
				// The leader changed. Losing its own leadership says
				// nothing of another member.
				s.former = FormerLeader{}
				if !prev.Self {
					s.former = FormerLeader{ID: prev.ID, LastContact: s.r().LastContact()}
				}
			}
			s.leaderLast = info
			for sub := range s.leaderSubs {
				sendLatest(sub, info, &s.leaderDrops)
			}
			s.leaderMu.Unlock()
		}
	}
}

// sendLatest puts v in a one-slot channel, replacing an unread older value.
func sendLatest[T any](ch chan T, v T, drops *atomic.Uint64) {
	for {
		select {
		case ch <- v:
			return
		default:
		}
		select {
		case <-ch:
			drops.Add(1)
		default:
		}
	}
}

// WatchLeader returns a channel that receives the leader each time it
// changes, starting with the current one. It never blocks the store: a slow
// reader sees only the newest value (LeaderDrops counts those skipped). It
// closes when ctx ends or the store shuts down.
func (s *Store) WatchLeader(ctx context.Context) (<-chan LeaderInfo, error) {
	if err := s.running(); err != nil {
		return nil, err
	}
	ch := make(chan LeaderInfo, 1)
	s.leaderMu.Lock()
	s.leaderSubs[ch] = struct{}{}
	addr, id := s.r().LeaderWithID()
	sendLatest(ch, LeaderInfo{ID: string(id), Address: string(addr), Self: id == raft.ServerID(s.ID), Term: s.r().CurrentTerm()}, &s.leaderDrops)
	s.leaderMu.Unlock()
	out := make(chan LeaderInfo, 1)
	go func() {
		defer close(out)
		defer func() { s.leaderMu.Lock(); delete(s.leaderSubs, ch); s.leaderMu.Unlock() }()
		for {
			select {
			case <-ctx.Done():
				return
			case <-s.done:
				return
			case v := <-ch:
				select {
				case out <- v:
				case <-ctx.Done():
					return
				case <-s.done:
					return
				}
			}
		}
	}()
	return out, nil
}

// LeaderDrops counts leader changes skipped for slow WatchLeader readers.
func (s *Store) LeaderDrops() uint64 { return s.leaderDrops.Load() }

// Stats are a member's Raft figures, for metrics.
type Stats struct {
	// State is the member's Raft state: Follower, Candidate, Leader or
	// Shutdown.
	State string
	// Term is the current term; CommitIndex, AppliedIndex and LastIndex
	// are the indexes of the last entry committed, applied and in the log.
	Term, CommitIndex, AppliedIndex, LastIndex uint64
	// LeaderChanges counts the leader changes this member observed since
	// it started (losing a leader counts too).
	LeaderChanges uint64
}

// Stats returns the member's Raft figures (zero when it is not running).
func (s *Store) Stats() Stats {
	if s.running() != nil {
		return Stats{State: "Shutdown"}
	}
	r := s.r()
	return Stats{State: r.State().String(), Term: r.CurrentTerm(), CommitIndex: r.CommitIndex(), AppliedIndex: r.AppliedIndex(),
		LastIndex: r.LastIndex(), LeaderChanges: s.leaderChanges.Load()}
}

// Leader returns the leader as this member knows it.
func (s *Store) Leader() LeaderInfo {
	if s.running() != nil {
		return LeaderInfo{}
	}
	addr, id := s.r().LeaderWithID()
	return LeaderInfo{ID: string(id), Address: string(addr), Self: id == raft.ServerID(s.ID), Term: s.r().CurrentTerm()}
}

// FormerLeader returns the last leader other than this member that this
// member saw lose leadership, and when it last heard from it; zero when the
// last leader lost was this member, or none was.
func (s *Store) FormerLeader() FormerLeader {
	s.leaderMu.Lock()
	defer s.leaderMu.Unlock()
	return s.former
}

// IsLeader reports whether this member is the leader now.
func (s *Store) IsLeader() bool {
	return s.running() == nil && s.r().State() == raft.Leader
}

func (s *Store) running() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return fmt.Errorf("raftstore: %w", net.ErrClosed)
	case !s.started:
		return ErrNotStarted
	}
	return nil
}

func (s *Store) notLeader() error {
	addr, id := s.r().LeaderWithID()
	return &NotLeaderError{LeaderID: string(id), LeaderAddr: string(addr)}
}

// View runs fn on a consistent snapshot of this member's state. It may lag
// the leader (a stale read); use LinearizableView when it must not.
func (s *Store) View(fn func(tx *ReadTx) error) error {
	if err := s.running(); err != nil {
		return err
	}
	tx := s.fsm.view()
	return fn(&tx)
}

// Barrier waits until this member, the leader, has applied every entry
// committed before the call, those of earlier terms included. A new leader
// calls it before it acts on its state: until an entry of its own term
// commits, it may not have applied all that the old leader committed.
func (s *Store) Barrier(ctx context.Context) error {
	return s.LinearizableView(ctx, func(*ReadTx) error { return nil })
}

// LinearizableView runs fn on a state that includes every change committed
// before the call (the ReadIndex method: leadership confirmed by a quorum,
// then the local state caught up to the commit index). Only the leader
// serves it; others return a *NotLeaderError.
func (s *Store) LinearizableView(ctx context.Context, fn func(tx *ReadTx) error) error {
	if err := s.running(); err != nil {
		return err
	}
	if s.r().State() != raft.Leader {
		return s.notLeader()
	}
	// A new leader may not know the commit index of earlier terms until an
	// entry of its own term commits: a barrier per term settles it.
	if term := s.r().CurrentTerm(); s.barrierAt.Load() != term {
		if err := s.wait(ctx, s.r().Barrier(0)); err != nil {
			return err
		}
		s.barrierAt.Store(term)
	}
	readIndex := s.r().CommitIndex()
	if err := s.wait(ctx, s.r().VerifyLeader()); err != nil {
		return err
	}
	if err := s.waitApplied(ctx, readIndex); err != nil {
		return err
	}
	return s.View(fn)
}

// WaitIndex waits until this member has applied the entry at index.
func (s *Store) WaitIndex(ctx context.Context, index uint64) error {
	if err := s.running(); err != nil {
		return err
	}
	return s.waitApplied(ctx, index)
}

// covered reports whether the state holds every change up to index. Raft
// hands the FSM commands and configuration entries but not its no-ops, so
// the FSM's own index can trail an index that is only a no-op: look at the
// few entries in between that are still in the log.
func (s *Store) covered(index uint64) bool {
	applied, _ := s.fsm.appliedIndex()
	if applied >= index {
		return true
	}
	if s.r().AppliedIndex() < index || index-applied > 64 {
		return false
	}
	// Entries below the log's first index are gone into a snapshot that
	// raft has applied (it applied up to index): the state holds them,
	// even when the snapshot's index is above the FSM's own (an offline
	// Recover run twice writes its snapshot at the last log index, a
	// configuration entry the FSM index never counted).
	first, err := s.logStore.FirstIndex()
	if err != nil {
		return false
	}
	var l raft.Log
	for i := max(applied+1, first); i <= index; i++ {
		if err := s.logStore.GetLog(i, &l); err != nil || l.Type == raft.LogCommand || l.Type == raft.LogConfiguration {
			return false
		}
	}
	return true
}

func (s *Store) waitApplied(ctx context.Context, index uint64) error {
	poll := time.NewTicker(2 * time.Millisecond)
	defer poll.Stop()
	for {
		_, ch := s.fsm.appliedIndex()
		if s.covered(index) {
			return nil
		}
		select {
		case <-ch:
		case <-poll.C:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.done:
			return fmt.Errorf("raftstore: %w", net.ErrClosed)
		}
	}
}

// wait waits for a raft future, translating its errors.
func (s *Store) wait(ctx context.Context, f raft.Future) error {
	// Even with a context that cannot cancel, wait beside s.done: raft
	// answers no future still queued when it shuts down.
	errc := make(chan error, 1)
	go func() { errc <- f.Error() }()
	select {
	case err := <-errc:
		return s.raftErr(err)
	case <-ctx.Done():
		return fmt.Errorf("raftstore: gave up waiting (the change may still commit): %w", ctx.Err())
	case <-s.done:
		// raft answers no future that was still queued when it shut down:
		// without this, a caller would wait for ever.
		return fmt.Errorf("raftstore: closed while waiting (the change may have committed): %w", net.ErrClosed)
	}
}

func (s *Store) raftErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrNotVoter):
		return s.notLeader()
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("%w (leadership lost before the change was confirmed)", ErrNoQuorum)
	case errors.Is(err, raft.ErrRaftShutdown) && s.running() == nil:
		// RecoverAlone stopped the raft the call went to.
		return fmt.Errorf("%w (raft restarted to recover alone)", ErrNoQuorum)
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("raftstore: %w", net.ErrClosed)
	}
	return err
}

func timeoutOf(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return max(time.Until(dl), time.Millisecond)
	}
	return 0
}

// Update runs fn in a read-write transaction and commits its changes as one
// log entry, all or nothing. If an object fn based a change on was changed
// by someone else first, nothing commits and a *ConflictError is returned:
// run the whole Update again. On success the objects passed to Create and
// Update carry their new version. Only the leader accepts writes.
func (s *Store) Update(ctx context.Context, fn func(tx *Tx) error) error {
	if err := s.running(); err != nil {
		return err
	}
	if s.r().State() != raft.Leader {
		return s.notLeader()
	}
	tx := &Tx{ReadTx: s.fsm.view()}
	if err := fn(tx); err != nil {
		return err
	}
	ops := tx.ops()
	if len(ops) == 0 {
		return nil
	}
	entry := newEntry(entryTx, 256)
	var carry []*dict
	for _, o := range ops {
		if o.obj != nil {
			t, _ := s.Schema.table(o.table)
			data, err := s.Schema.Codec.Marshal(o.table, o.obj)
			if err != nil {
				return fmt.Errorf("raftstore: encode %s/%s: %w", o.table, o.id, err)
			}
			var d *dict
			o.dictID, o.data, d = s.pack(t, data, nil)
			if d != nil && !slices.Contains(carry, d) {
				carry = append(carry, d)
			}
			o.keys = t.indexKeys(o.obj)
			if err := checkRecordBounds(o.table, o.id, o.keys); err != nil {
				return err
			}
		}
	}
	// Dictionaries the members may not have yet go first.
	for _, d := range carry {
		entry = appendOp(entry, &op{kind: opDict, table: d.table, data: d.raw})
	}
	for _, o := range ops {
		entry = appendOp(entry, o)
		if len(entry) > MaxTxBytes {
			return fmt.Errorf("%w: over %d MiB in one entry; use Batch", ErrTooLarge, MaxTxBytes>>20)
		}
	}
	setCount(entry, len(carry)+len(ops))
	index, resp, err := s.apply(ctx, entry)
	if err != nil {
		return err
	}
	if err, ok := resp.(error); ok {
		return err
	}
	for _, o := range ops {
		if o.obj != nil {
			o.obj.SetObjectVersion(index)
		}
	}
	return nil
}

// pack compresses an encoded object of table t (if t.Compress) and returns
// the op's dictionary ID and data, and the dictionary when the entry must
// carry it (it may not be applied on every member yet). The compressed
// data is written in dst's room when it has some.
func (s *Store) pack(t *Table, data, dst []byte) (uint64, []byte, *dict) {
	if !t.Compress {
		return 0, data, nil
	}
	var carry *dict
	d := s.fsm.dicts.forTable(t.Name)
	if d == nil {
		s.dictMu.Lock()
		if d = s.newDicts[t.Name]; d == nil {
			// The first object of the table becomes its dictionary.
			if d = newDict(t.Name, slices.Clone(data)); d == nil {
				s.dictMu.Unlock()
				return 0, data, nil
			}
			if s.newDicts == nil {
				s.newDicts = map[string]*dict{}
			}
			s.newDicts[t.Name] = d
		}
		s.dictMu.Unlock()
		if s.fsm.dicts.get(d.id) == nil {
			carry = d
		}
	}
	var c []byte
	if dst != nil {
		c = d.compressInto(dst, data)
	} else {
		c = d.compress(data)
	}
	if c == nil {
		return 0, data, nil
	}
	return d.id, c, carry
}

func (s *Store) apply(ctx context.Context, entry []byte) (uint64, any, error) {
	f := s.r().Apply(entry, timeoutOf(ctx))
	if err := s.wait(ctx, f); err != nil {
		return 0, nil, err
	}
	return f.Index(), f.Response(), nil
}

// Batch collects many independent changes and commits them in as few log
// entries as fit MaxEntryBytes, proposing each entry as soon as it is full.
// Unlike Update, a batch is not atomic: each change commits unless its object
// changed first, and those skipped are listed in the result. Use it for bulk
// work such as the scheduler's thousands of assignments.
func (s *Store) Batch(ctx context.Context, fn func(b *Batch) error) (BatchResult, error) {
	if err := s.running(); err != nil {
		return BatchResult{}, err
	}
	if s.r().State() != raft.Leader {
		return BatchResult{}, s.notLeader()
	}
	b := &Batch{s: s, fsm: s.fsm, ctx: ctx, limit: cmp(s.MaxEntryBytes, DefaultMaxEntryBytes)}
	err := fn(b)
	if err == nil {
		err = b.flush()
	}
	b.release()
	var res BatchResult
	for i, f := range b.futures {
		werr := s.wait(ctx, f)
		// Applied (and taken) by now, or it never will be here: forget
		// its objects.
		b.fsm.handed.take(b.handed[i])
		if werr != nil {
			err = errors.Join(err, werr)
			continue
		}
		switch r := f.Response().(type) {
		case BatchResult:
			res.Applied += r.Applied
			res.Conflicts = append(res.Conflicts, r.Conflicts...)
			res.Index = max(res.Index, f.Index())
		case error:
			err = errors.Join(err, r)
		}
	}
	return res, err
}

// Batch accumulates changes for Store.Batch.
type Batch struct {
	s       *Store
	fsm     *fsm
	ctx     context.Context
	limit   int
	scratch *[]byte // from entryPool: body is built in it
	body    []byte
	n       int
	carried []*dict // dictionaries already in body
	futures []raft.ApplyFuture
	err     error

	encBuf  *bytes.Buffer // encodings, reused (encode)
	packBuf []byte        // compressed encodings, reused

	handOver bool
	objs     []Object // by op of body, when handOver
	handed   [][]byte // by future: its entry if proposed with objects
}

// HandOver gives the objects of the batch's later changes to the store:
// once a change applies on this member, its readers and watchers get the
// object itself (its version set to the change's) rather than a decoding
// of the committed bytes, which saves the leader decoding what it just
// wrote. The caller must not change an object after handing it to
// Create or Update (nor keep it to change later): it becomes shared and
// read-only like any object read from the store. Other members decode
// as usual, so an object must encode to what a decoding would return
// (no fields the codec drops).
func (b *Batch) HandOver() { b.handOver = true }

// Create adds an object (skipped as a conflict if its ID exists by then).
func (b *Batch) Create(table string, obj Object) error {
	return b.add(&op{kind: opCreate, table: table, obj: obj})
}

// Update replaces an object whose stored version must still be obj's.
func (b *Batch) Update(table string, obj Object) error {
	return b.add(&op{kind: opUpdate, table: table, obj: obj, expect: obj.ObjectVersion()})
}

// Delete removes an object whose stored version must still be version.
func (b *Batch) Delete(table, id string, version uint64) error {
	return b.add(&op{kind: opDelete, table: table, id: id, expect: version})
}

func (b *Batch) add(o *op) error {
	if b.err != nil {
		return b.err
	}
	t, err := b.s.Schema.table(o.table)
	if err != nil {
		return err
	}
	var carry *dict
	if o.obj != nil {
		o.keys = t.indexKeys(o.obj)
		o.id = o.obj.ObjectID()
		if o.id == "" {
			return errors.New("raftstore: object has no ID")
		}
		if err := checkRecordBounds(o.table, o.id, o.keys); err != nil {
			return err
		}
		data, err := b.encode(o)
		if err != nil {
			return fmt.Errorf("raftstore: encode %s/%s: %w", o.table, o.id, err)
		}
		// appendOp copies o.data into the body below: the buffers are
		// free again for the next change.
		o.dictID, o.data, carry = b.s.pack(t, data, b.packBuf[:0])
		// Keep a grown compression buffer, never the encoding itself:
		// uncompressed (dictID 0), o.data is the encode buffer, and
		// compressing the next change from it into it would write over
		// its own input.
		if o.dictID != 0 && cap(o.data) > cap(b.packBuf) && cap(o.data) <= maxScratch {
			b.packBuf = o.data[:0]
		}
	}
	if len(b.body) == 0 {
		if b.scratch == nil {
			b.scratch = entryPool.Get().(*[]byte)
			if *b.scratch == nil {
				*b.scratch = make([]byte, 0, b.limit+b.limit/4)
			}
			b.body = *b.scratch
		}
		b.body = appendEntryHeader(b.body[:0], entryBatch)
	}
	if carry != nil && !slices.Contains(b.carried, carry) {
		b.body = appendOp(b.body, &op{kind: opDict, table: carry.table, data: carry.raw})
		b.carried = append(b.carried, carry)
		b.n++
		if b.handOver {
			b.objs = append(b.objs, nil)
		}
	}
	b.body = appendOp(b.body, o)
	b.n++
	if b.handOver {
		b.objs = append(b.objs, o.obj)
	}
	if len(b.body) >= b.limit {
		b.err = b.flush()
	}
	return b.err
}

func (b *Batch) flush() error {
	if b.n == 0 {
		return nil
	}
	setCount(b.body, b.n)
	// Raft keeps the entry (in the WAL's cache of recent entries too):
	// it gets a copy of the exact size, and the scratch buffer builds the
	// next one. Handing raft the buffer itself kept 320 KiB with every
	// entry, however small (a node's status report, a heartbeat's "ready").
	entry := bytes.Clone(b.body)
	var handed []byte
	if b.handOver {
		handed = entry
		b.fsm.handed.put(entry, b.objs)
		b.objs = nil
	}
	b.handed = append(b.handed, handed)
	b.futures = append(b.futures, b.s.r().Apply(entry, timeoutOf(b.ctx)))
	b.body, b.n, b.carried = b.body[:0], 0, b.carried[:0]
	return nil
}

// maxScratch bounds the encoding and compression buffers a Batch keeps
// for its next change.
const maxScratch = 1 << 20

// encode encodes a change's object, in the batch's reused buffer when the
// codec can (the data is valid until the next encode).
func (b *Batch) encode(o *op) ([]byte, error) {
	am, ok := b.s.Schema.Codec.(appendMarshaler)
	if !ok {
		return b.s.Schema.Codec.Marshal(o.table, o.obj)
	}
	if b.encBuf == nil || b.encBuf.Cap() > maxScratch {
		b.encBuf = new(bytes.Buffer)
	}
	b.encBuf.Reset()
	if err := am.marshalInto(b.encBuf, o.table, o.obj); err != nil {
		return nil, err
	}
	return b.encBuf.Bytes(), nil
}

// entryPool holds Batch's scratch buffers.
var entryPool = sync.Pool{New: func() any { return new([]byte) }}

// release gives the scratch buffer back, unless an outsized change grew
// it (a pool would keep that for good).
func (b *Batch) release() {
	if b.scratch == nil {
		return
	}
	if cap(b.body) <= 2*(b.limit+b.limit/4) {
		*b.scratch = b.body[:0]
		entryPool.Put(b.scratch)
	}
	b.scratch, b.body = nil, nil
}

// Watch streams committed changes with index > fromIndex, filtered by filter
// (nil: all). fromIndex 0 on a fresh store means from the start; usually
// it is a ReadTx.Index. If the changes after fromIndex are no longer kept it
// returns ErrResync at once.
func (s *Store) Watch(ctx context.Context, fromIndex uint64, filter func(Event) bool) (*Watcher, error) {
	if err := s.running(); err != nil {
		return nil, err
	}
	seq, ok := s.events.seqAfter(fromIndex)
	if !ok {
		return nil, ErrResync
	}
	ctx, cancel := context.WithCancel(ctx)
	w := &Watcher{ch: make(chan Event, 256), cancel: cancel}
	go w.run(ctx, s.events, s.Schema.Codec, seq, filter, fmt.Errorf("raftstore: %w", net.ErrClosed))
	return w, nil
}

// AppliedIndex is the index of the last change applied on this member.
func (s *Store) AppliedIndex() uint64 {
	if s.running() != nil {
		return 0
	}
	i, _ := s.fsm.appliedIndex()
	return i
}

// AddVoter adds (or promotes) a voting member. Leader only.
func (s *Store) AddVoter(ctx context.Context, id, addr string) error {
	if err := s.running(); err != nil {
		return err
	}
	return s.wait(ctx, s.r().AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeoutOf(ctx)))
}

// AddNonvoter adds a member that replicates the log without voting.
func (s *Store) AddNonvoter(ctx context.Context, id, addr string) error {
	if err := s.running(); err != nil {
		return err
	}
	return s.wait(ctx, s.r().AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeoutOf(ctx)))
}

// DemoteVoter turns a voter into a non-voter.
func (s *Store) DemoteVoter(ctx context.Context, id string) error {
	if err := s.running(); err != nil {
		return err
	}
	return s.wait(ctx, s.r().DemoteVoter(raft.ServerID(id), 0, timeoutOf(ctx)))
}

// PromoteNonvoter lets a member that replicates without voting vote. Unlike
// AddVoter it never adds a member: if id left the configuration (a demotion
// or a removal raced with the promotion), it fails with ErrNotFound rather
// than bringing id back. A member that already votes is left as it is.
func (s *Store) PromoteNonvoter(ctx context.Context, id string) error {
	if err := s.running(); err != nil {
		return err
	}
	for {
		f := s.r().GetConfiguration()
		if err := s.wait(ctx, f); err != nil {
			return err
		}
		i := slices.IndexFunc(f.Configuration().Servers, func(srv raft.Server) bool { return srv.ID == raft.ServerID(id) })
		if i < 0 {
			return fmt.Errorf("%w: %s is not a member", ErrNotFound, id)
		}
		srv := f.Configuration().Servers[i]
		if srv.Suffrage == raft.Voter {
			return nil
		}
		// prevIndex makes the change conditional: if the configuration
		// moved on since it was read, raft refuses and it is read again.
		err := s.wait(ctx, s.r().AddVoter(srv.ID, srv.Address, f.Index(), timeoutOf(ctx)))
		if err == nil || !strings.Contains(err.Error(), "configuration changed since") {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// RemoveServer removes a member from the configuration.
func (s *Store) RemoveServer(ctx context.Context, id string) error {
	if err := s.running(); err != nil {
		return err
	}
	return s.wait(ctx, s.r().RemoveServer(raft.ServerID(id), 0, timeoutOf(ctx)))
}

// TransferLeadership hands leadership to the member id, or to the most
// up-to-date voter when id is empty.
func (s *Store) TransferLeadership(ctx context.Context, id string) error {
	if err := s.running(); err != nil {
		return err
	}
	if id == "" {
		return s.wait(ctx, s.r().LeadershipTransfer())
	}
	srvs, err := s.Servers(ctx)
	if err != nil {
		return err
	}
	for _, srv := range srvs {
		if srv.ID == id {
			return s.wait(ctx, s.r().LeadershipTransferToServer(raft.ServerID(id), raft.ServerAddress(srv.Address)))
		}
	}
	return fmt.Errorf("raftstore: transfer leadership: no member %q", id)
}

// Servers returns the current Raft configuration.
func (s *Store) Servers(ctx context.Context) ([]Server, error) {
	if err := s.running(); err != nil {
		return nil, err
	}
	f := s.r().GetConfiguration()
	if err := s.wait(ctx, f); err != nil {
		return nil, err
	}
	var out []Server
	for _, srv := range f.Configuration().Servers {
		out = append(out, Server{ID: string(srv.ID), Address: string(srv.Address), Voter: srv.Suffrage == raft.Voter})
	}
	return out, nil
}

// Snapshot takes a snapshot now and compacts the log behind it.
func (s *Store) Snapshot(ctx context.Context) error {
	if err := s.running(); err != nil {
		return err
	}
	err := s.wait(ctx, s.r().Snapshot())
	if errors.Is(err, raft.ErrNothingNewToSnapshot) {
		return nil
	}
	return err
}

// RotateDataKey starts sealing new log entries and snapshots with a fresh
// data key; older data stays readable with the older keys.
func (s *Store) RotateDataKey() (uint32, error) {
	if s.keyring == nil {
		return 0, fmt.Errorf("%w: encryption at rest is not on (set KeyEncryptionKey)", ErrInvalidConfig)
	}
	return s.keyring.Rotate()
}

// PruneDataKeys forgets retired data keys that no log entry and no
// snapshot on disk is sealed with any more, and returns their IDs. It runs
// by itself after each snapshot; a key retired by RotateDataKey goes once a
// snapshot and log compaction have left it unused.
func (s *Store) PruneDataKeys() ([]uint32, error) {
	if s.keyring == nil || s.logs == nil {
		return nil, fmt.Errorf("%w: encryption at rest is not on (set KeyEncryptionKey)", ErrInvalidConfig)
	}
	s.pruneMu.Lock()
	defer s.pruneMu.Unlock()
	oldest := s.keyring.CurrentKeyID()
	if id, ok, err := s.logs.firstKeyID(); err != nil {
		return nil, err
	} else if ok {
		oldest = min(oldest, id)
	}
	if s.snaps != nil {
		if id, ok, err := s.snaps.oldestKeyID(); err != nil {
			return nil, err
		} else if ok {
			oldest = min(oldest, id)
		}
	}
	return s.keyring.Prune(oldest)
}

// RewrapKeys wraps the data keys with a new key-encryption key.
func (s *Store) RewrapKeys(newKEK []byte) error {
	if s.keyring == nil {
		return fmt.Errorf("%w: encryption at rest is not on (set KeyEncryptionKey)", ErrInvalidConfig)
	}
	return s.keyring.Rewrap(newKEK)
}

// Shutdown stops the member gracefully: a leader first hands leadership to
// another voter, so the cluster does not wait for an election timeout.
func (s *Store) Shutdown(ctx context.Context) error {
	if s.IsLeader() {
		if srvs, err := s.Servers(ctx); err == nil && len(srvs) > 1 {
			if err := s.TransferLeadership(ctx, ""); err != nil {
				s.logger().Warn("raftstore: leadership transfer before shutdown failed", "err", err)
			}
		}
	}
	return s.Close()
}

// Close stops the member at once. A second Close returns an error wrapping
// net.ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return fmt.Errorf("raftstore: close: %w", net.ErrClosed)
	}
	s.closed = true
	started := s.started
	s.mu.Unlock()
	if !started {
		return nil
	}
	close(s.done)
	// A recovery under way ends (it watches done) before raft stops, so
	// the raft it started is the one stopped.
	s.recoverMu.Lock()
	defer s.recoverMu.Unlock()
	s.r().DeregisterObserver(s.observer)
	s.calls.stop() // a call to a peer that is off would hold Shutdown for the transport's timeout
	err := s.r().Shutdown().Error()
	if c, ok := s.Transport.(io.Closer); ok {
		err = errors.Join(err, c.Close())
	}
	s.events.close()
	s.bgMu.Lock()
	s.bgStopped = true
	s.bgMu.Unlock()
	s.bgWG.Wait()
	if s.logs != nil {
		err = errors.Join(err, s.logs.Close())
		s.unlockDir()
	}
	return err
}
