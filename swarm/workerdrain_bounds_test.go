package swarm

import (
	"testing"
	"time"
)

// Which side decides a worker's drain bounds: its host when it set them,
// else the managers' session, else (a session from a manager that does not
// send them) the defaults; a session cannot set them past the caps.
func TestWorkerDrainBounds(t *testing.T) {
	for _, c := range []struct {
		name                   string
		hostTimeout, hostDelay time.Duration // the worker's own settings
		sess                   Session
		wantTimeout, wantDelay time.Duration
	}{
		{"old manager", 0, 0, Session{}, DefaultWorkerDrainTimeout, DefaultDrainDelay},
		{"managers decide", 0, 0, Session{DrainTimeout: 2 * time.Second, DrainDelay: 300 * time.Millisecond},
			2*time.Second + DrainTimeoutMargin, 300 * time.Millisecond},
		{"no linger", 0, 0, Session{DrainDelay: -1}, DefaultWorkerDrainTimeout, -1},
		{"host decides", 40 * time.Second, -1, Session{DrainTimeout: 2 * time.Second, DrainDelay: time.Second},
			40 * time.Second, -1},
		{"broken answer", 0, 0, Session{DrainTimeout: 1000 * time.Hour, DrainDelay: 1000 * time.Hour},
			maxSessionDrainTimeout + DrainTimeoutMargin, maxSessionDrainDelay},
		{"negative timeout", 0, 0, Session{DrainTimeout: -time.Second}, DefaultWorkerDrainTimeout, DefaultDrainDelay},
	} {
		w := &Worker{DrainTimeout: c.hostTimeout, DrainDelay: c.hostDelay}
		w.drains.set(c.sess)
		if got := w.drainTimeout(); got != c.wantTimeout {
			t.Errorf("%s: drain timeout %v, want %v", c.name, got, c.wantTimeout)
		}
		if got := w.drainDelay(true); got != c.wantDelay {
			t.Errorf("%s: linger %v, want %v", c.name, got, c.wantDelay)
		}
		if c.wantDelay == DefaultDrainDelay {
			// The default of a worker that cannot count connections.
			if got := w.drainDelay(false); got != DefaultFixedDrainDelay {
				t.Errorf("%s: linger without counting %v, want %v", c.name, got, DefaultFixedDrainDelay)
			}
		}
	}
}

// A DrainDelay the managers were not given goes to the workers as 0, so
// that each picks its default (whether it can count connections); an
// explicit one goes as set.
func TestSessionDrainDelayUnsetIsZero(t *testing.T) {
	if timeout, delay := (&dispatcher{}).drainBounds(); timeout != DefaultDrainTimeout || delay != 0 {
		t.Fatalf("unset bounds sent as %v and %v, want %v and 0", timeout, delay, DefaultDrainTimeout)
	}
	if _, delay := (&dispatcher{drainDelay: 300 * time.Millisecond}).drainBounds(); delay != 300*time.Millisecond {
		t.Fatalf("a set linger sent as %v", delay)
	}
}
