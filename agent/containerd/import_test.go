package containerd_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/shoalproject/shoal/agent/containerd"
	"github.com/shoalproject/shoal/internal/syncbuf"
)

// Tasks that find their image missing at the same moment (replicas landing
// on a fresh node) share one import of the image directory: every one
// prepares, and the image is imported once, not once per task (concurrent
// imports of the same blobs left 50 replicas preparing for minutes).
func TestConcurrentFirstUseImportsOnce(t *testing.T) {
	_, d := setupDaemon(t)
	var logs syncbuf.Buffer
	e := &containerd.Executor{Address: d.Address, Namespace: d.Namespace("imports"), StateDir: t.TempDir(), ImageDir: imageDir,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	ctx := context.Background()
	if err := e.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	const n = 12
	errs := make(chan error, n)
	for i := range n {
		go func() { errs <- e.Prepare(ctx, appTask(fmt.Sprintf("first-use-%d", i), "sleep")) }()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Errorf("prepare: %v", err)
		}
	}
	for i := range n {
		e.Remove(ctx, fmt.Sprintf("first-use-%d", i))
	}
	if got := strings.Count(logs.String(), "imported image"); got != 1 {
		t.Fatalf("the image was imported %d times by %d tasks preparing at once, want once; log:\n%s", got, n, logs.String())
	}
}
