package swarm

import (
	"context"
	"errors"
	"testing"

	"github.com/shoalproject/shoal/raftstore"
)

// A call that every manager refuses for a reason that passes (an
// election) is retried often enough to ride out ten refusals within
// retryFor: a doubling backoff would sleep for over 5 s by the tenth and
// give up at the deadline, after the new leader was long there.
func TestCallRidesOutAnElection(t *testing.T) {
	m := &managers{addrs: []string{"m0:2377"}, retryFor: clientRetryFor}
	calls := 0
	err := m.each(context.Background(), func(addr string) error {
		calls++
		if calls <= 10 {
			return &raftstore.NotLeaderError{}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("after %d calls: %v; want the 11th to go through within %v", calls, err, clientRetryFor)
	}
	if !errors.Is(&raftstore.NotLeaderError{}, raftstore.ErrNotLeader) {
		t.Fatal("NotLeaderError is no longer ErrNotLeader: the test refuses for a reason that does not pass")
	}
}

// Addresses added to Client.Addrs after its first call are tried too: a
// host that learns of a new manager and adds it is not left calling the
// old ones only.
func TestClientTakesAddrsAddedAfterItsFirstCall(t *testing.T) {
	c := &Client{Addrs: []string{"m0:2377"}}
	c.managers()
	c.Addrs = append(c.Addrs, "m1:2377")
	if got := c.managers().order(); len(got) != 2 || got[1] != "m1:2377" {
		t.Fatalf("managers tried: %v, want m0:2377 then m1:2377", got)
	}
}
