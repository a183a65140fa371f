package swarm

import (
	"fmt"
	"testing"
	"time"

	"github.com/shoalproject/shoal/raftstore"
)

// Each turn of the two-node fence, and the rule that keeps two survivors
// out: for every pair of views the two managers can hold at once, their
// fences start a delay or more apart. (The pairs left out cannot happen:
// each saw the other lead last, or each led last with no vote asked
// since; see fenceTurn.)
func TestFenceTurn(t *testing.T) {
	const d = 5 * time.Second
	a, b := Peer{ID: "aaa"}, Peer{ID: "bbb"} // a has the lower ID
	for _, c := range []struct {
		self string
		peer Peer
		ll   raftstore.LastLeader
		want time.Duration
		why  string
	}{
		{"aaa", b, raftstore.LastLeader{ID: "bbb"}, 0, turnPeerLed},
		{"bbb", a, raftstore.LastLeader{ID: "aaa"}, 0, turnPeerLed},
		{"bbb", a, raftstore.LastLeader{ID: "aaa", VotedSince: true}, 0, turnPeerLed},
		{"aaa", b, raftstore.LastLeader{ID: "aaa"}, d, turnLedLast},
		{"bbb", a, raftstore.LastLeader{ID: "bbb"}, d, turnLedLast},
		{"aaa", b, raftstore.LastLeader{ID: "aaa", VotedSince: true}, 2 * d, turnUnsure},
		{"bbb", a, raftstore.LastLeader{ID: "bbb", VotedSince: true}, 3 * d, turnUnsure},
		{"aaa", b, raftstore.LastLeader{ID: "gone"}, 2 * d, turnUnsure},
		{"bbb", a, raftstore.LastLeader{ID: "gone"}, 3 * d, turnUnsure},
	} {
		got, why := fenceTurn(c.self, c.peer, c.ll, d)
		if got != c.want || why != c.why {
			t.Errorf("%s with peer %s, last leader %+v: %v (%s), want %v (%s)", c.self, c.peer.ID, c.ll, got, why, c.want, c.why)
		}
	}

	views := map[string]raftstore.LastLeader{
		"peer led":         {ID: "peer"},
		"led":              {ID: "self"},
		"led, then voted":  {ID: "self", VotedSince: true},
		"a third led last": {ID: "gone"},
	}
	resolve := func(v raftstore.LastLeader, self, peer string) raftstore.LastLeader {
		switch v.ID {
		case "peer":
			v.ID = peer
		case "self":
			v.ID = self
		}
		return v
	}
	epoch := time.Unix(1e9, 0)
	for na, va := range views {
		for nb, vb := range views {
			if na == nb && (na == "peer led" || na == "led") {
				continue // impossible, see fenceTurn
			}
			wa, _ := fenceTurn("aaa", b, resolve(va, "aaa", "bbb"), d)
			wb, _ := fenceTurn("bbb", a, resolve(vb, "bbb", "aaa"), d)
			if gap := wa - wb; gap < d && -gap < d {
				t.Errorf("%s: lower ID %q fences after %v, higher ID %q after %v: less than a delay apart", fmt.Sprint(d), na, wa, nb, wb)
			}
			// Their retries keep the same distance: every attempt of one
			// (first turn, then each retry after a failure that took up
			// to the timeout) against every attempt of the other.
			attempts := func(first time.Duration) []time.Duration {
				out := []time.Duration{first}
				at := first
				for range 4 {
					at = fenceRetry(epoch.Add(at), d, epoch.Add(at+3*time.Second)).Sub(epoch)
					out = append(out, at)
				}
				return out
			}
			for _, x := range attempts(wa) {
				for _, y := range attempts(wb) {
					if gap := x - y; gap < d && -gap < d {
						t.Errorf("lower ID %q attempts at %v, higher ID %q at %v: less than a delay apart", na, x, nb, y)
					}
				}
			}
		}
	}
}
