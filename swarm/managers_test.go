package swarm

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm/api"
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
// hangs until its timeout) goes after the managers that answer in the
// next calls, and a refusal naming it as the leader (maybe a follower's
// stale word) does not put it first; it is still tried when the others
// refuse, and when every manager is silent, all are tried.
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
	// Nobody leads: the silent m0 is tried too, after the others.
	tried, _ = call(func(addr string) error {
		if addr == "m0:2377" {
			return lost(addr)
		}
		return &NotLeaderError{Addr: addr, msg: "not the leader, and no leader is known"}
	})
	if !slices.Equal(tried, []string{"m2:2377", "m1:2377", "m0:2377"}) {
		t.Fatalf("with m0 silent and no leader known, a call tried %v: want m2 (answered last), m1, then m0", tried)
	}
	tried, _ = call(lost)
	if tried, _ = call(lost); len(tried) != 3 {
		t.Fatalf("with every manager silent, a call tried %v: want all three", tried)
	}
}

// Silence lasts until the manager answers (a manager cut off an hour ago
// still goes last), and the latest to fall silent goes first of the
// silent ones: it more likely missed one answer only.
func TestSilentOrder(t *testing.T) {
	m := &managers{addrs: []string{"m0:2377", "m1:2377", "m2:2377", "m3:2377"}}
	m.answered("m0:2377", false)
	m.silent["m0:2377"] = time.Now().Add(-time.Hour)
	m.answered("m2:2377", false)
	m.answered("m2:2377", false) // again: silent since the first
	m.silent["m2:2377"] = time.Now().Add(-time.Minute)
	m.answered("m1:2377", false)
	if got := m.order(); !slices.Equal(got, []string{"m3:2377", "m1:2377", "m2:2377", "m0:2377"}) {
		t.Fatalf("order: %v, want m3 (answers), then m1, m2, m0 (latest silent first)", got)
	}
	if at := m.silent["m2:2377"]; time.Since(at) < 50*time.Second {
		t.Fatalf("m2 silent since %v: a second miss moved its start", at)
	}
	m.answered("m0:2377", true)
	if m.isSilent("m0:2377") || !slices.Equal(m.order(), []string{"m0:2377", "m3:2377", "m1:2377", "m2:2377"}) {
		t.Fatalf("m0 answered: silent %v, order %v; want it among those that answer", m.isSilent("m0:2377"), m.order())
	}
}

// A leader that missed one answer (a connection cut under load) is still
// reached when the others name it: it goes last, it is not dropped (a
// worker that dropped it, for 5 s in a first version, failed every
// heartbeat for longer than the grace, and its node was declared down).
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
	// A named leader that is silent goes after the managers that answer
	// still to try, and before the other silent ones (m0, silent since
	// later, would otherwise go first of them: a dial to a manager cut
	// off costs its timeout).
	m = &managers{addrs: []string{"m0:2377", "m1:2377", "m2:2377", "m3:2377"}}
	m.answered("m2:2377", false)
	m.silent["m2:2377"] = time.Now().Add(-time.Minute)
	m.answered("m0:2377", false)
	tried = nil
	err = m.each(context.Background(), func(addr string) error {
		tried = append(tried, addr)
		switch addr {
		case "m1:2377":
			return &NotLeaderError{Addr: addr, Leader: "m2:2377", msg: "not the leader; the leader is m2"}
		case "m3:2377":
			return &NotLeaderError{Addr: addr, msg: "not the leader, and no leader is known"}
		case "m0:2377":
			return &url.Error{Op: "Post", URL: "https://m0:2377/", Err: errors.New("dial tcp: i/o timeout")}
		}
		return nil
	})
	if err != nil || !slices.Equal(tried, []string{"m1:2377", "m3:2377", "m2:2377"}) {
		t.Fatalf("tried %v (%v): want m1, m3 (they answer), then the silent m2 m1 named, before the silent m0", tried, err)
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
	// A worker's dial gives up within 1.5 periods (1.2 s to 2 s: a lost
	// SYN is sent again after 1 s); a Client's after 2 s.
	for p, want := range map[time.Duration]time.Duration{0: 2 * time.Second, 100 * time.Millisecond: 1200 * time.Millisecond,
		time.Second: 1500 * time.Millisecond, 4 * time.Second: 2 * time.Second} {
		if got := dialTimeout(p); got != want {
			t.Errorf("period %v: dial timeout %v, want %v", p, got, want)
		}
	}
	// The transport a worker's session uses is timed so; a Client's is
	// not pinged.
	for _, p := range []time.Duration{500 * time.Millisecond, time.Second, 4 * time.Second} {
		tr := (&managers{tls: &tls.Config{}, period: p}).httpClient().Transport.(*http.Transport)
		if tr.HTTP2 == nil || tr.HTTP2.SendPingTimeout != p*3/2 || tr.HTTP2.PingTimeout != pingTimeout(p) {
			t.Errorf("period %v: the transport's pings %+v, want sent after %v idle, answered within %v", p, tr.HTTP2, p*3/2, pingTimeout(p))
		}
	}
	if tr := (&managers{tls: &tls.Config{}}).httpClient().Transport.(*http.Transport); tr.HTTP2 != nil && tr.HTTP2.SendPingTimeout != 0 {
		t.Errorf("a Client's transport pings: %+v", tr.HTTP2)
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

// A failed heartbeat is tried again within a quarter period (250 ms at
// most), then less often, never less often than the period, each wait
// drawn from the upper half of its bound.
func TestHeartbeatRetry(t *testing.T) {
	for _, p := range []time.Duration{100 * time.Millisecond, time.Second, 4 * time.Second} {
		first := min(p/4, 250*time.Millisecond)
		for fails := range 12 {
			bound := min(first<<fails, p)
			for range 50 {
				if d := heartbeatRetry(p, fails); d < bound/2 || d > bound {
					t.Fatalf("period %v, %d failed: waited %v, want %v to %v", p, fails+1, d, bound/2, bound)
				}
			}
		}
	}
}

// A new leader gives a node it has not heard from three periods from when
// the node could have left the old leader (its pings); a node it heard
// from, three periods from then.
func TestNewLeaderGrace(t *testing.T) {
	p := time.Second
	lead := time.Now()
	d := &dispatcher{leadAt: lead, seen: map[string]time.Time{"heard": lead.Add(time.Second)}}
	nodes := []*api.Node{
		{Meta: api.Meta{ID: "unheard"}, Status: api.NodeStatus{State: api.NodeReady}},
		{Meta: api.Meta{ID: "heard"}, Status: api.NodeStatus{State: api.NodeReady}},
	}
	downAt := func(now time.Time) []string {
		var out []string
		for _, n := range d.expiredAt(nodes, now, p) {
			out = append(out, n.ID)
		}
		return out
	}
	if got := downAt(lead.Add(3*p + 500*time.Millisecond)); len(got) != 0 {
		t.Fatalf("3.5 periods after the election: down %v, want none", got)
	}
	if got := downAt(lead.Add(4*p + 500*time.Millisecond)); !slices.Equal(got, []string{"heard"}) {
		t.Fatalf("4.5 periods after the election: down %v, want the node last heard 1 s after it", got)
	}
	if got := downAt(lead.Add(3*p + leaveSilentAfter(p) + 100*time.Millisecond)); !slices.Equal(got, []string{"unheard", "heard"}) {
		t.Fatalf("past the grace of both: down %v", got)
	}
}
