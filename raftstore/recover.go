package raftstore

import (
	"context"
	"fmt"
	"net"
	"slices"

	"github.com/hashicorp/raft"
)

// Recover rewrites the Raft configuration kept in Dir to servers, with the
// member stopped: the way out of a cluster that lost its quorum for good
// (hashicorp/raft's RecoverCluster). It restores the newest snapshot,
// applies every entry of the log after it (entries that may never have
// committed included), writes a snapshot that carries servers as the
// configuration, and empties the log. It returns the configuration it
// replaced. Start the store afterwards, on this
// Store or a new one with the same fields: it then runs with servers
// alone. The store must not be started; the fields Start reads (ID, Dir,
// Schema, the keys) must be set, Transport need not be. It locks Dir for
// its duration: while a member runs on Dir (in any process) it fails with
// a DirLockedError.
//
// servers must include this member as a voter. Every member left out must
// be gone for good: one that comes back with its old data still believes
// in the old configuration (its votes are refused by the recovered
// members, since raft ignores vote requests from outside its
// configuration, but it is no longer part of the cluster and must be
// wiped and joined again).
func (s *Store) Recover(ctx context.Context, servers []Server) (before []Server, err error) {
	return s.RecoverNoting(ctx, servers, nil)
}

// RecoverNoting is Recover, calling note (if not nil) with the
// configuration about to be replaced before anything is rewritten: a
// caller that must remember the members left out (to refuse them later)
// writes them down there, so that a crash in the middle of the recovery
// cannot lose them (a second run sees only the new configuration). An
// error from note stops the recovery with nothing changed.
func (s *Store) RecoverNoting(ctx context.Context, servers []Server, note func(before []Server) error) (before []Server, err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return nil, fmt.Errorf("raftstore: recover: %w", net.ErrClosed)
	case s.started:
		return nil, fmt.Errorf("%w: recover: the store runs; close it and recover a new Store with the same fields", ErrInvalidConfig)
	case s.ID == "":
		return nil, fmt.Errorf("%w: ID is required", ErrInvalidConfig)
	case s.Dir == "":
		return nil, fmt.Errorf("%w: recover: Dir is required (a store in memory has nothing to recover)", ErrInvalidConfig)
	case !slices.ContainsFunc(servers, func(v Server) bool { return v.ID == s.ID && v.Voter && v.Address != "" }):
		return nil, fmt.Errorf("%w: recover: the new configuration must hold this member (%s) as a voter, with its address", ErrInvalidConfig, s.ID)
	}
	if err := s.Schema.init(); err != nil {
		return nil, err
	}
	logger := s.logger()
	s.events = newEventRing(1, s.Schema.tableNames()...)
	if s.fsm, err = newFSM(s.Schema, s.events, logger); err != nil {
		return nil, err
	}
	// Snapshots encode the configuration with a transport's help; the
	// member's own is not needed offline.
	_, trans := raft.NewInmemTransport("")
	defer trans.Close()
	logStore, stableStore, snaps, _, closeLogs, err := s.openStorage(logger)
	if err != nil {
		return nil, err
	}
	defer func() {
		closeLogs()
		s.logs = nil
	}()
	if s.snaps != nil {
		s.snaps.onClose = nil // no pruning behind the recovery's back: the next Start prunes
	}
	conf := s.raftConfig()
	old, err := raft.GetConfiguration(s.raftConfig(), s.fsm, logStore, stableStore, snaps, trans)
	if err != nil {
		return nil, fmt.Errorf("raftstore: recover: reading the configuration in %s: %w", s.Dir, err)
	}
	for _, v := range old.Servers {
		before = append(before, Server{ID: string(v.ID), Address: string(v.Address), Voter: v.Suffrage == raft.Voter})
	}
	if note != nil {
		if err := note(before); err != nil {
			return nil, fmt.Errorf("raftstore: recover %s: nothing changed: %w", s.Dir, err)
		}
	}
	// GetConfiguration restored the FSM; RecoverCluster needs a fresh one.
	if s.fsm, err = newFSM(s.Schema, s.events, logger); err != nil {
		return nil, err
	}
	s.fsm.durable = s.logs.waitDurable
	if err := raft.RecoverCluster(conf, s.fsm, recoveryLog(logStore), stableStore, snaps, trans, raftConfiguration(servers)); err != nil {
		return nil, fmt.Errorf("raftstore: recover %s: %w", s.Dir, err)
	}
	logger.Warn("raftstore: Raft configuration rewritten (recovery)", "id", s.ID, "dir", s.Dir, "before", before, "after", servers)
	return before, nil
}

// recoveryLog is the log a recovery rewrites. The crash tests wrap it to
// stop a recovery at its critical point (the snapshot with the new
// configuration written, the log not cut yet, or just cut) and kill the
// process there.
var recoveryLog = func(l raft.LogStore) raft.LogStore { return l }

// raftConfiguration is raft's form of a list of servers.
func raftConfiguration(servers []Server) raft.Configuration {
	var cfg raft.Configuration
	for _, srv := range servers {
		suffrage := raft.Voter
		if !srv.Voter {
			suffrage = raft.Nonvoter
		}
		cfg.Servers = append(cfg.Servers, raft.Server{ID: raft.ServerID(srv.ID), Address: raft.ServerAddress(srv.Address), Suffrage: suffrage})
	}
	return cfg
}
