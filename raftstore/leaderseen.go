package raftstore

import (
	"sync"

	"github.com/hashicorp/raft"
)

// LastLeader is what this member has seen of leadership since it started:
// the leader of the highest term it knows, and whether another member has
// asked for its vote since. It comes from raft's own observations,
// recorded in raft's goroutine as they happen (a leader set, a vote
// request received), so a leadership that lasted a moment, and this
// member's own, is never missed: a poll of Leader can miss one. Two-node
// mode orders its fences by it (which side led last).
type LastLeader struct {
	// ID is the leader of the highest term this member has seen lead,
	// itself included; empty until it sees one. A leader that stepped
	// down (its lease ran out) stays ID: no one has led since, as far as
	// this member knows.
	ID string
	// Term is that term: this member's term when it saw the leader.
	Term uint64
	// VotedSince is true once another member has asked for this member's
	// vote in a term after Term: the asker may have won and led without
	// this member seeing it (a vote granted, then the link cut before the
	// first heartbeat). Seeing a leader again clears it.
	VotedSince bool
	// Events counts the leaders seen and the vote requests of other
	// members since the store started (across RecoverAlone): when it has
	// not moved between two looks, neither happened in between.
	Events uint64
}

// LastLeader returns what this member has seen of leadership since it
// started. Nothing of it is kept on disk: a restarted member has seen no
// leader until it sees one.
func (s *Store) LastLeader() LastLeader {
	s.seen.mu.Lock()
	defer s.seen.mu.Unlock()
	return s.seen.last
}

// leaderSeen records LastLeader from raft's observer filter, which raft
// calls in its own goroutine, before the observation is queued (or
// dropped for a full queue): the record never misses one.
type leaderSeen struct {
	mu   sync.Mutex
	last LastLeader
}

func (l *leaderSeen) note(self string, o *raft.Observation) {
	switch d := o.Data.(type) {
	case raft.LeaderObservation:
		if d.LeaderID != "" { // a leader lost: the last one stays the last
			l.leader(string(d.LeaderID), o.Raft.CurrentTerm())
		}
	case raft.RequestVoteRequest:
		if string(d.ID) != self {
			l.voteAsked(d.Term)
		}
	}
}

// leader records a leader seen in term.
func (l *leaderSeen) leader(id string, term uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.last = LastLeader{ID: id, Term: term, Events: l.last.Events + 1}
}

// leaderIfQuiet records a leader this member knew of when its observer was
// registered (raft may have seen it between NewRaft and the
// registration), unless an observation came since events was read (it is
// newer than the caller's reading) or the record already holds a later term.
func (l *leaderSeen) leaderIfQuiet(id string, term, events uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last.Events != events || term < l.last.Term || (l.last.ID == id && l.last.Term == term) {
		return
	}
	l.last = LastLeader{ID: id, Term: term, Events: l.last.Events + 1}
}

// events is the count of observations recorded so far.
func (l *leaderSeen) events() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last.Events
}

// voteAsked records another member's vote request in term.
func (l *leaderSeen) voteAsked(term uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.last.Events++
	if l.last.ID != "" && term > l.last.Term {
		l.last.VotedSince = true
	}
}

// observe registers the store's observer on r, then records the leader r
// already knows, if any: raft runs from NewRaft on, and a leader it set
// before the observer was registered would otherwise not be seen until
// the next change of leader (a restarted manager in two-node mode would
// not fence until then).
func (s *Store) observe(r *raft.Raft) {
	if s.beforeObserve != nil {
		s.beforeObserve(r)
	}
	events := s.seen.events()
	r.RegisterObserver(s.observer)
	// The term read on both sides of the leader: if it moved (an election
	// began), the leader read may not be that term's; the observer sees
	// the next one.
	term := r.CurrentTerm()
	if _, id := r.LeaderWithID(); id != "" && r.CurrentTerm() == term {
		s.seen.leaderIfQuiet(string(id), term, events)
	}
}
