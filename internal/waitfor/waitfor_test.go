package waitfor_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/waitfor"
)

func TestPoll(t *testing.T) {
	var n atomic.Int32
	if err := waitfor.Poll(context.Background(), func() bool { return n.Add(1) == 3 }); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if err := waitfor.Poll(ctx, func() bool { return false }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a condition that never holds: %v", err)
	}
}
