package containerd_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/shoalproject/shoal/agent/containerd"
)

// lockedBuffer is a bytes.Buffer for a logger written from several
// goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Tasks that find their image missing at the same moment (replicas landing
// on a fresh node) share one import of the image directory: every one
// prepares, and the image is imported once, not once per task (concurrent
// imports of the same blobs left 50 replicas preparing for minutes).
func TestConcurrentFirstUseImportsOnce(t *testing.T) {
	_, d := setupDaemon(t)
	var logs lockedBuffer
	e := &containerd.Executor{Address: d.Address, Namespace: "imports", StateDir: t.TempDir(), ImageDir: imageDir,
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
