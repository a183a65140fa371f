package ca_test

import (
	"crypto/x509"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/shoalproject/shoal/swarm/ca"
)

func TestRenewAtIsUniformBetween50And80Percent(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, validity := range []time.Duration{90 * 24 * time.Hour, time.Minute, 7 * time.Nanosecond, 20 * 365 * 24 * time.Hour} {
		na := nb.Add(validity)
		lo, hi := nb.Add(validity/2), nb.Add(validity*4/5)
		for name, rnd := range map[string]*rand.Rand{"seeded": rand.New(rand.NewPCG(1, 2)), "global": nil} {
			const draws = 10000
			var buckets [3]int
			seen := map[time.Time]bool{}
			minAt, maxAt := na, nb
			for range draws {
				at := ca.RenewAt(nb, na, rnd)
				if at.Before(lo) || at.After(hi) {
					t.Fatalf("%v %s: %v is outside [%v, %v]", validity, name, at.Sub(nb), lo.Sub(nb), hi.Sub(nb))
				}
				seen[at] = true
				if at.Before(minAt) {
					minAt = at
				}
				if at.After(maxAt) {
					maxAt = at
				}
				buckets[min(2, int(3*float64(at.Sub(lo))/float64(hi.Sub(lo)+1)))]++
			}
			if validity < time.Microsecond {
				if len(seen) < 2 {
					t.Errorf("%v %s: always %v", validity, name, minAt.Sub(nb))
				}
				continue
			}
			if len(seen) < draws/2 {
				t.Errorf("%v %s: %d distinct instants in %d draws", validity, name, len(seen), draws)
			}
			// Uniform: the draws reach both ends and fill thirds evenly.
			span := hi.Sub(lo)
			if minAt.Sub(lo) > span/50 || hi.Sub(maxAt) > span/50 {
				t.Errorf("%v %s: draws from %v to %v of [%v, %v]", validity, name, minAt.Sub(nb), maxAt.Sub(nb), lo.Sub(nb), hi.Sub(nb))
			}
			for i, n := range buckets {
				if n < draws*3/10 || n > draws*37/100 {
					t.Errorf("%v %s: third %d has %d of %d draws", validity, name, i, n, draws)
				}
			}
		}
	}
	// A validity that is empty or inverted: renew now.
	if at := ca.RenewAt(nb, nb, nil); !at.Equal(nb) {
		t.Errorf("empty validity: %v", at)
	}
	if at := ca.RenewAt(nb, nb.Add(-time.Hour), nil); !at.Equal(nb) {
		t.Errorf("inverted validity: %v", at)
	}
	// The same seed, the same instants.
	a := ca.RenewAt(nb, nb.Add(time.Hour), rand.New(rand.NewPCG(5, 6)))
	b := ca.RenewAt(nb, nb.Add(time.Hour), rand.New(rand.NewPCG(5, 6)))
	if !a.Equal(b) {
		t.Error("a seeded source gives different instants")
	}
}

func TestNeedsRenewal(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cert := &x509.Certificate{NotBefore: nb, NotAfter: nb.Add(100 * time.Hour)}
	for _, c := range []struct {
		at   time.Duration
		want bool
	}{
		{-time.Second, true}, // not valid yet
		{0, false},
		{50 * time.Hour, false},
		{80*time.Hour - time.Second, false},
		{80 * time.Hour, true},
		{99 * time.Hour, true},
		{100 * time.Hour, true}, // expired
		{1000 * time.Hour, true},
	} {
		if got := ca.NeedsRenewal(cert, nb.Add(c.at)); got != c.want {
			t.Errorf("at %v of 100h: %v, want %v", c.at, got, c.want)
		}
	}
	if !ca.NeedsRenewal(nil, nb) {
		t.Error("no certificate does not need one")
	}
	// A fresh certificate does not.
	r := newRoot(t, "c1")
	if ca.NeedsRenewal(issue(t, r, "n1", ca.RoleWorker, 0).cert, time.Now()) {
		t.Error("a new certificate needs renewal")
	}
}
