package swarm

import (
	"context"
	"errors"
	"net/url"
	"slices"
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

// A manager that gave no answer (cut off by a partition, where a dial
// hangs until its timeout) is left out of the next calls while another
// may answer, and a refusal naming it as the leader (a follower's stale
// word) is not followed; when every manager is silent, all are tried.
func TestSilentManagerLeftOut(t *testing.T) {
	m := &managers{addrs: []string{"m0:2377", "m1:2377", "m2:2377"}}
	lost := func(addr string) error {
		return &url.Error{Op: "Post", URL: "https://" + addr + "/", Err: errors.New("http2: client connection lost")}
	}
	call := func(answer func(addr string) error) ([]string, error) {
		var tried []string
		err := m.each(context.Background(), func(addr string) error {
			tried = append(tried, addr)
			return answer(addr)
		})
		return tried, err
	}
	tried, err := call(func(addr string) error {
		if addr == "m0:2377" {
			return lost(addr)
		}
		return nil
	})
	if err != nil || !slices.Equal(tried, []string{"m0:2377", "m1:2377"}) {
		t.Fatalf("first call tried %v (%v): want m0 (silent), then m1", tried, err)
	}
	tried, err = call(func(addr string) error {
		if addr == "m1:2377" {
			return &NotLeaderError{Addr: addr, Leader: "m0:2377", msg: "not the leader; the leader is m0"}
		}
		return nil
	})
	if err != nil || !slices.Equal(tried, []string{"m1:2377", "m2:2377"}) {
		t.Fatalf("second call tried %v (%v): want m1, then m2, and not the silent m0 m1 named", tried, err)
	}
	tried, _ = call(lost)
	if tried, _ = call(lost); len(tried) != 3 {
		t.Fatalf("with every manager silent, a call tried %v: want all three", tried)
	}
}
