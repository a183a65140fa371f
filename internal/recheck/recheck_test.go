package recheck

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// The check runs until it fails, then stop is called once and Every
// returns; a context that ends first ends it without calling stop.
func TestEvery(t *testing.T) {
	var calls, stops atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		Every(context.Background(), time.Millisecond, func() bool { return calls.Add(1) == 3 }, func() { stops.Add(1) })
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Every did not return after its check failed")
	}
	if calls.Load() != 3 || stops.Load() != 1 {
		t.Fatalf("checks %d, stops %d: want 3 and 1", calls.Load(), stops.Load())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	Every(ctx, -1, func() bool { t.Error("a check after the context ended"); return true }, func() { t.Error("stop after the context ended") })
}

// Context ends when its check fails, and not before.
func TestContext(t *testing.T) {
	var failing atomic.Bool
	ctx, cancel := Context(context.Background(), time.Millisecond, failing.Load)
	defer cancel()
	select {
	case <-ctx.Done():
		t.Fatal("the context ended while its check passed")
	case <-time.After(20 * time.Millisecond):
	}
	failing.Store(true)
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the context did not end after its check failed")
	}
}
