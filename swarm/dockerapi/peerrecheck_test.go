package dockerapi

import (
	"testing"
	"time"
)

// A zero or negative PeerRecheck takes the documented default, not
// the recheck package's own fallback.
func TestPeerRecheckDefault(t *testing.T) {
	for set, want := range map[time.Duration]time.Duration{
		0: DefaultPeerRecheck, -time.Second: DefaultPeerRecheck, 500 * time.Millisecond: 500 * time.Millisecond,
	} {
		if got := (&Handler{PeerRecheck: set}).peerRecheck(); got != want {
			t.Errorf("PeerRecheck %v: streams re-checked every %v, want %v", set, got, want)
		}
	}
}
