// Package recheck runs a check again, at a period, while something lasts:
// the servers use it to end a stream whose caller lost the right to it
// (a manager demoted while it follows events).
package recheck

import (
	"context"
	"time"
)

// Every calls failed every period until ctx ends; the first time failed
// returns true, it calls stop and returns. A period of 0 or less is
// taken as a second. Run it in its own goroutine; it holds one ticker.
func Every(ctx context.Context, period time.Duration, failed func() bool, stop func()) {
	if period <= 0 {
		period = time.Second
	}
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if failed() {
				stop()
				return
			}
		}
	}
}

// Context returns a context of parent that ends the first time failed
// returns true (checked every period, as Every) or when cancel is called;
// call cancel when what it guards is over, which also ends the checks.
func Context(parent context.Context, period time.Duration, failed func() bool) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(parent)
	go Every(ctx, period, failed, cancel)
	return ctx, cancel
}
