// Package waitfor is the test kit's one way to wait for a condition: poll
// it until it holds or a deadline passes. Tests use it instead of sleeping
// and hoping; a failure says what was awaited and for how long.
package waitfor

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// DefaultTimeout is how long True waits when the test gives no deadline of
// its own: generous, because CI machines are slow and shared.
const DefaultTimeout = 30 * time.Second

// Interval is how often a condition is polled.
const Interval = 10 * time.Millisecond

// True polls cond until it returns true and returns how long that took; it
// fails the test (from the test's goroutine only) when DefaultTimeout
// passes first. describe, when given, adds the state at the deadline to the
// failure.
func True(t testing.TB, what string, cond func() bool, describe ...func() string) time.Duration {
	t.Helper()
	return Within(t, DefaultTimeout, what, cond, describe...)
}

// Within is True with its own timeout.
func Within(t testing.TB, timeout time.Duration, what string, cond func() bool, describe ...func() string) time.Duration {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := Poll(ctx, cond); err != nil {
		msg := fmt.Sprintf("timed out after %v waiting for: %s", timeout, what)
		for _, d := range describe {
			msg += "\n" + d()
		}
		t.Fatal(msg)
	}
	return time.Since(start)
}

// Poll polls cond until it holds (nil) or ctx ends (ctx's error). It is
// safe from any goroutine: it never touches a testing.T.
func Poll(ctx context.Context, cond func() bool) error {
	t := time.NewTicker(Interval)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}
