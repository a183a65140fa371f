package netagent

import (
	"testing"
	"time"
)

// PublicKey does not wait for the agent's lock: a worker asks for it with
// each heartbeat, and wiring tasks holds the lock for seconds on a busy
// node (the node was marked down over and over while it started tasks).
func TestPublicKeyDoesNotWaitForTheLock(t *testing.T) {
	a := &Agent{}
	if k := a.PublicKey(); k != "" {
		t.Fatalf("key before Start: %q", k)
	}
	k := "the-key"
	a.pubKey.Store(&k)
	a.mu.Lock()
	defer a.mu.Unlock()
	got := make(chan string, 1)
	go func() { got <- a.PublicKey() }()
	select {
	case g := <-got:
		if g != k {
			t.Fatalf("key %q, want %q", g, k)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("PublicKey waited for the agent's lock")
	}
}
