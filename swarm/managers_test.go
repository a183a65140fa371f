package swarm

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

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
func TestSilentManagerTriedLast(t *testing.T) {
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

// A leader that missed one answer (a connection cut under load) is still
// reached when the others name it: it goes last, it is not dropped (a
// worker that dropped it failed every heartbeat for silentFor, longer than
// the grace, and its node was declared down).
func TestSilentLeaderNamedIsTried(t *testing.T) {
	m := &managers{addrs: []string{"m0:2377", "m1:2377", "m2:2377"}}
	m.answered("m0:2377", false)
	if got := m.order(); !slices.Equal(got, []string{"m1:2377", "m2:2377", "m0:2377"}) {
		t.Fatalf("order with m0 silent: %v, want m0 last", got)
	}
	var tried []string
	err := m.each(context.Background(), func(addr string) error {
		tried = append(tried, addr)
		if addr != "m0:2377" {
			return &NotLeaderError{Addr: addr, Leader: "m0:2377", msg: "not the leader; the leader is m0"}
		}
		return nil
	})
	if err != nil || !slices.Equal(tried, []string{"m1:2377", "m2:2377", "m0:2377"}) {
		t.Fatalf("tried %v (%v): want m1 and m2 (they answer), then m0 that both name", tried, err)
	}
	if got := m.order(); got[0] != "m0:2377" || m.isSilent("m0:2377") {
		t.Fatalf("after m0 answered: order %v, silent %v; want m0 first and not silent", got, m.isSilent("m0:2377"))
	}
	// A named leader that is silent goes after the others still to try,
	// even if the refusal came first.
	m = &managers{addrs: []string{"m0:2377", "m1:2377", "m2:2377"}}
	m.answered("m2:2377", false)
	tried = nil
	err = m.each(context.Background(), func(addr string) error {
		tried = append(tried, addr)
		switch addr {
		case "m0:2377":
			return &NotLeaderError{Addr: addr, Leader: "m2:2377", msg: "not the leader; the leader is m2"}
		case "m1:2377":
			return &NotLeaderError{Addr: addr, msg: "not the leader, and no leader is known"}
		}
		return nil
	})
	if err != nil || !slices.Equal(tried, []string{"m0:2377", "m1:2377", "m2:2377"}) {
		t.Fatalf("tried %v (%v): want m0, m1, then the silent m2 m0 named", tried, err)
	}
}

// The pings a worker's transport sends leave a silent manager within the
// grace of three heartbeat periods, at every period a cluster may set, and
// the transport is made again when the period falls so far that they
// would not.
func TestPingsFitTheGrace(t *testing.T) {
	for _, p := range []time.Duration{100 * time.Millisecond, 500 * time.Millisecond, 700 * time.Millisecond, 800 * time.Millisecond, time.Second, 4 * time.Second, time.Minute} {
		if got := leaveSilentAfter(p); got >= 3*p {
			t.Errorf("period %v: a silent manager left after %v, want under 3 periods (%v)", p, got, 3*p)
		}
		if got := pingTimeout(p); p >= time.Second && got != p {
			t.Errorf("period %v: ping timeout %v, want a period", p, got)
		}
	}
	m := &managers{period: 4 * time.Second}
	rebuilt := func(d time.Duration) bool {
		m.client = &http.Client{}
		m.setPeriod(d)
		return m.client == nil
	}
	for _, c := range []struct {
		d    time.Duration
		want bool
	}{
		{4 * time.Second, false},
		{3990 * time.Millisecond, false}, // a node left
		{6 * time.Second, false},
		{3400 * time.Millisecond, false},
		{3 * time.Second, true}, // 2.5 x 4 s = 10 s > 3 x 3 s
		{6 * time.Second, true}, // doubled
		{0, false},
	} {
		before := m.period
		if got := rebuilt(c.d); got != c.want {
			t.Errorf("period %v -> %v: transport made again %v, want %v", before, c.d, got, c.want)
		}
	}
}
