package raftstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// r is the running raft (RecoverAlone replaces it).
func (s *Store) r() *raft.Raft { return s.raftPtr.Load() }

// ErrIsLeader is returned by RecoverAlone on a member that leads: it has a
// quorum and needs no recovery.
var ErrIsLeader = errors.New("raftstore: this member leads: it has a quorum and needs no recovery")

// RecoverAlone makes this member the only voter of the cluster without a
// quorum's consent, and returns once it leads alone with that
// configuration in its log. It is the unilateral step of a two-voter
// cluster whose other voter is known to be stopped (fenced: powered off
// or cut off); anywhere else it can make two leaders. Call it only then.
//
// Raft cannot change its configuration without a quorum, so this stops
// raft, rewrites the local state with raft.RecoverCluster (every entry in
// this member's log is applied into a new snapshot that holds the
// one-voter configuration, and the log behind it is dropped), and starts
// raft again on the same transport and state: the store's state, watchers
// (who see ErrResync once) and Ready carry on. Entries of this log that
// were never committed are kept (they were never acknowledged either);
// entries only the other voter held are lost with it, and when it comes
// back it is not a member: the leader must add it again, and it then
// takes this member's log, its own uncommitted tail truncated. The
// restarted raft elects itself after LeaderLeaseTimeout instead of the
// heartbeat timeout (it has no one to wait for); once it leads, the usual
// timeouts come back and it appends the new configuration to the log as
// a configuration entry of its new term.
//
// Calls in flight on the old raft fail with ErrNoQuorum. A crash midway
// is safe: the snapshot with the new configuration is written before the
// log is cut, and a restart from any point is a member of one
// configuration or the other with every committed entry (in the old one,
// call RecoverAlone again). RecoverAlone needs Dir.
func (s *Store) RecoverAlone(ctx context.Context) error {
	if err := s.running(); err != nil {
		return err
	}
	if s.Dir == "" {
		return fmt.Errorf("%w: RecoverAlone needs Dir (an in-memory member has nothing to recover from)", ErrInvalidConfig)
	}
	s.recoverMu.Lock()
	defer s.recoverMu.Unlock()
	old := s.r()
	if old.State() == raft.Leader {
		return ErrIsLeader
	}
	addr := s.raftTrans.LocalAddr()
	if f := old.GetConfiguration(); f.Error() == nil {
		for _, srv := range f.Configuration().Servers {
			if srv.ID == raft.ServerID(s.ID) {
				addr = srv.Address
			}
		}
	}
	alone := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(s.ID), Address: addr}}}
	s.logger().Warn("raftstore: recovering as the only voter", "id", s.ID, "last_index", old.LastIndex(), "term", old.CurrentTerm())
	old.DeregisterObserver(s.observer)
	// raft's Shutdown waits for its calls in flight, and a vote request
	// to a powered-off peer waits out the transport's timeout (10 s).
	s.calls.stop()
	if err := old.Shutdown().Error(); err != nil {
		return fmt.Errorf("raftstore: stopping raft to recover: %w", err)
	}
	// A scratch FSM replays the log into the new snapshot; the store's own
	// FSM takes that snapshot when raft starts again.
	scratch, err := newFSM(s.Schema, newEventRing(16, s.Schema.tableNames()...), s.logger())
	if err != nil {
		return s.restartRaft(*s.raftConf, err)
	}
	conf := *s.raftConf
	if err := raft.RecoverCluster(&conf, scratch, recoveryLog(s.logStore), s.stable, s.snapStore, s.raftTrans, alone); err != nil {
		return s.restartRaft(*s.raftConf, fmt.Errorf("raftstore: recover: %w", err))
	}
	quick := *s.raftConf
	quick.HeartbeatTimeout, quick.ElectionTimeout = quick.LeaderLeaseTimeout, quick.LeaderLeaseTimeout
	if err := s.restartRaft(quick, nil); err != nil {
		return err
	}
	return s.settleAlone(ctx, string(addr))
}

// restartRaft starts raft again with conf on the store's state and
// transport, and returns cause (or the start's error with it).
func (s *Store) restartRaft(conf raft.Config, cause error) error {
	s.calls = newStoppable(s.raftTrans)
	r, err := raft.NewRaft(&conf, s.fsm, s.logStore, s.stable, s.snapStore, s.calls)
	if err != nil {
		// The store has no raft now: it can only be closed.
		return errors.Join(cause, fmt.Errorf("raftstore: restarting raft (close the store and start it again from %s): %w", s.Dir, err))
	}
	s.raftPtr.Store(r)
	s.barrierAt.Store(0)
	s.observe(r)
	return cause
}

// settleAlone waits until the restarted raft leads, restores the usual
// timeouts and records the one-voter configuration in the log.
func (s *Store) settleAlone(ctx context.Context, addr string) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for s.r().State() != raft.Leader {
		select {
		case <-ctx.Done():
			return fmt.Errorf("raftstore: recovered, not leading yet: %w", ctx.Err())
		case <-s.done:
			return fmt.Errorf("raftstore: closed while recovering: %w", net.ErrClosed)
		case <-t.C:
		}
	}
	r, c := s.r(), s.raftConf
	if err := r.ReloadConfig(raft.ReloadableConfig{TrailingLogs: c.TrailingLogs, SnapshotInterval: c.SnapshotInterval,
		SnapshotThreshold: c.SnapshotThreshold, HeartbeatTimeout: c.HeartbeatTimeout, ElectionTimeout: c.ElectionTimeout}); err != nil {
		return fmt.Errorf("raftstore: restoring the timeouts after recovery: %w", err)
	}
	// The configuration lives in the recovery snapshot; an entry of the
	// new term puts it in the log too (raft writes one for any change,
	// this one included).
	if err := s.AddVoter(ctx, s.ID, addr); err != nil {
		return fmt.Errorf("raftstore: recording the one-voter configuration: %w", err)
	}
	srvs, err := s.Servers(ctx)
	if err != nil {
		return err
	}
	if len(srvs) != 1 || !slices.ContainsFunc(srvs, func(x Server) bool { return x.ID == s.ID && x.Voter }) {
		return fmt.Errorf("raftstore: after recovery the configuration is %+v, not this member alone", srvs)
	}
	s.logger().Warn("raftstore: recovered: this member is the only voter", "id", s.ID, "term", r.CurrentTerm(), "index", r.LastIndex())
	return nil
}

// stoppable is the transport one raft instance runs on: its calls to
// peers (votes, heartbeats, appends outside a pipeline, snapshot
// installs, leadership handovers) return at once with an error when stop
// is called, while the call itself finishes in the background into a
// private answer. raft's
// Shutdown waits for its calls in flight, and one to a host that is off
// waits out the transport's timeout; RecoverAlone stops the calls first.
type stoppable interface {
	raft.Transport
	stop()
}

type stopTransport struct {
	raft.Transport
	stopped chan struct{}
	once    sync.Once
}

type stopTransportPreVote struct {
	*stopTransport
	pv raft.WithPreVote
}

var _ raft.WithPreVote = stopTransportPreVote{}

func newStoppable(t raft.Transport) stoppable {
	s := &stopTransport{Transport: t, stopped: make(chan struct{})}
	if pv, ok := t.(raft.WithPreVote); ok {
		return stopTransportPreVote{stopTransport: s, pv: pv}
	}
	return s
}

var errCallStopped = errors.New("raftstore: raft is restarting: call abandoned")

func (t *stopTransport) stop() { t.once.Do(func() { close(t.stopped) }) }

// call runs fn unless or until stop is called.
func (t *stopTransport) call(fn func() error) error {
	select {
	case <-t.stopped:
		return errCallStopped
	default:
	}
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		return err
	case <-t.stopped:
		return errCallStopped
	}
}

func (t *stopTransport) RequestVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	var out raft.RequestVoteResponse
	err := t.call(func() error { return t.Transport.RequestVote(id, target, args, &out) })
	if err == nil {
		*resp = out
	}
	return err
}

func (t *stopTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	var out raft.AppendEntriesResponse
	err := t.call(func() error { return t.Transport.AppendEntries(id, target, args, &out) })
	if err == nil {
		*resp = out
	}
	return err
}

func (t *stopTransport) TimeoutNow(id raft.ServerID, target raft.ServerAddress, args *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	var out raft.TimeoutNowResponse
	err := t.call(func() error { return t.Transport.TimeoutNow(id, target, args, &out) })
	if err == nil {
		*resp = out
	}
	return err
}

// InstallSnapshot streams a snapshot to a peer, which takes long enough
// (a large snapshot, a peer that went off mid-transfer) to hold raft's
// Shutdown for the transport's timeout. The call left behind reads data
// through a gate: once the call is abandoned, reads fail, so nothing reads
// the snapshot after raft closes it.
func (t *stopTransport) InstallSnapshot(id raft.ServerID, target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	var out raft.InstallSnapshotResponse
	gate := &stopReader{r: data}
	err := t.call(func() error { return t.Transport.InstallSnapshot(id, target, args, &out, gate) })
	if errors.Is(err, errCallStopped) {
		gate.close()
	}
	if err == nil {
		*resp = out
	}
	return err
}

// stopReader passes reads to r until closed; close waits for a read in
// progress (of a local snapshot file: short).
type stopReader struct {
	mu     sync.Mutex
	r      io.Reader
	closed bool
}

func (g *stopReader) Read(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return 0, errCallStopped
	}
	return g.r.Read(p)
}

func (g *stopReader) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

func (t stopTransportPreVote) RequestPreVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	var out raft.RequestPreVoteResponse
	err := t.call(func() error { return t.pv.RequestPreVote(id, target, args, &out) })
	if err == nil {
		*resp = out
	}
	return err
}
