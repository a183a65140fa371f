package raftstore

import (
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// Two members: each records the leader of the highest term it saw, the
// leader itself included. Cut apart, the leader steps down when its lease
// runs out and the follower loses it: Leader is empty on both, and the
// last leader on both is still the one that led (nothing seen since).
// Healed, they elect a leader again, and both record it, in its term.
func TestLastLeaderFollowsRaft(t *testing.T) {
	c := newCluster(t, 2, false, nil)
	l := c.leader()
	f := c.stores["m0"]
	if f == l {
		f = c.stores["m1"]
	}
	eventually(t, "both record the leader", func() bool {
		return l.LastLeader().ID == l.ID && f.LastLeader().ID == l.ID && f.LastLeader().Term == l.LastLeader().Term
	})
	before := map[*Store]LastLeader{l: l.LastLeader(), f: f.LastLeader()}

	c.net.Partition([]string{l.ID}, []string{f.ID})
	eventually(t, "the leader steps down and the follower loses it", func() bool {
		return l.Leader().ID == "" && f.Leader().ID == ""
	})
	for s, b := range before {
		if got := s.LastLeader(); got != b {
			t.Fatalf("%s after losing the leader: last leader %+v, want %+v as before (no leader seen since)", s.ID, got, b)
		}
	}

	c.net.Heal()
	next := c.leader()
	eventually(t, "both record the new leadership", func() bool {
		a, b := l.LastLeader(), f.LastLeader()
		return a.ID == next.ID && b.ID == next.ID && a.Term == b.Term && a.Term > before[l].Term && !a.VotedSince && !b.VotedSince
	})
}

// A vote asked by another member in a term after the last leader's sets
// VotedSince (the asker may lead unseen); one in that term or before
// does not; the next leader seen clears it. Every one counts as an event.
func TestLastLeaderVotedSince(t *testing.T) {
	var l leaderSeen
	l.voteAsked(3) // no leader seen yet: nothing to doubt
	if got := l.last; got.ID != "" || got.VotedSince || got.Events != 1 {
		t.Fatalf("a vote asked before any leader: %+v", got)
	}
	l.leader("m0", 4)
	l.voteAsked(4)
	if got := l.last; got.ID != "m0" || got.Term != 4 || got.VotedSince || got.Events != 3 {
		t.Fatalf("a vote asked in the leader's term: %+v", got)
	}
	l.voteAsked(5)
	if got := l.last; !got.VotedSince || got.Events != 4 {
		t.Fatalf("a vote asked in a later term: %+v, want VotedSince", got)
	}
	l.leader("m1", 5)
	if got := l.last; got.ID != "m1" || got.Term != 5 || got.VotedSince || got.Events != 5 {
		t.Fatalf("the next leader seen: %+v", got)
	}
}

// A leader raft sets between NewRaft and the observer's registration (a
// restarted member that hears the leader at once) is in LastLeader as
// soon as Start returns, not only after the next change of leader.
func TestLastLeaderKnownBeforeTheObserver(t *testing.T) {
	c := newCluster(t, 3, true, nil)
	l := c.leader()
	f := "m0"
	if f == l.ID {
		f = "m1"
	}
	c.kill(f)
	back := c.start(f, nil, func(s *Store) {
		s.beforeObserve = func(r *raft.Raft) {
			deadline := time.Now().Add(10 * time.Second)
			for r.Leader() == "" && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
		}
	})
	if got := back.LastLeader(); got.ID != l.ID || got.Term == 0 || got.Events == 0 {
		t.Fatalf("restarted %s, leader %s set before its observer: last leader %+v, want %s", f, l.ID, got, l.ID)
	}
}

// The leader read after the registration never replaces an observation
// made since (it is newer) nor a later term.
func TestLeaderIfQuietKeepsNewerObservations(t *testing.T) {
	var l leaderSeen
	l.leader("m1", 7)
	events := l.events()
	l.leader("m2", 8) // observed after the count was read
	l.leaderIfQuiet("m1", 7, events)
	if got := l.last; got.ID != "m2" || got.Term != 8 {
		t.Fatalf("a reading older than an observation replaced it: %+v", got)
	}
	l.leaderIfQuiet("m1", 8, events) // same term as the newer observation
	if got := l.last; got.ID != "m2" || got.Term != 8 {
		t.Fatalf("a reading older than an observation of the same term replaced it: %+v", got)
	}
	l.leaderIfQuiet("m1", 7, l.events())
	if got := l.last; got.ID != "m2" || got.Term != 8 {
		t.Fatalf("a reading of an earlier term replaced the record: %+v", got)
	}
	n := l.events()
	l.leaderIfQuiet("m2", 8, n)
	if got := l.last; got.Events != n {
		t.Fatalf("the leader already recorded counted again: %+v", got)
	}
	l.leaderIfQuiet("m0", 9, n)
	if got := l.last; got.ID != "m0" || got.Term != 9 || got.Events != n+1 {
		t.Fatalf("a quiet reading of a later term: %+v, want m0 in term 9", got)
	}
}
