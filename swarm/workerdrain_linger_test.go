package swarm

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/syncbuf"
)

// fakeClientCounter answers counts of a task's client connections from a
// script, then repeats its last answer.
type fakeClientCounter struct {
	mu     sync.Mutex
	script []fakeCount
	calls  int
}

type fakeCount struct {
	n   int
	err error
}

func (f *fakeClientCounter) ClientConnections(_ context.Context, _ string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := f.script[min(f.calls, len(f.script)-1)]
	f.calls++
	return a.n, a.err
}

// lingerOnce runs a drained task's linger to its end (linger returns when
// it stopped the task or gave up) and reports how often the task was
// stopped, how often its connections were counted, and the worker's logs.
func lingerOnce(t *testing.T, closed bool, done bool, bound time.Duration, cc *fakeClientCounter) (stops, counts int, logs string) {
	t.Helper()
	var buf syncbuf.Buffer
	w := &Worker{Logger: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), closed: closed}
	rt := &taskRun{stop: func() { stops++ }, done: make(chan struct{})}
	if done {
		close(rt.done)
	}
	sched := lingerSchedule{floor: 20 * time.Millisecond, first: 5 * time.Millisecond, most: 10 * time.Millisecond}
	if cc == nil {
		w.linger("t1", rt, bound, nil, sched)
		return stops, 0, buf.String()
	}
	w.linger("t1", rt, bound, cc, sched)
	return stops, cc.calls, buf.String()
}

func TestLingerEndsWhenTheClientsAreDone(t *testing.T) {
	// Two clients, then one, then none (read twice): stopped at the
	// fourth count, long before the bound.
	cc := &fakeClientCounter{script: []fakeCount{{n: 2}, {n: 1}, {n: 0}, {n: 0}, {n: 5}}}
	stops, counts, logs := lingerOnce(t, false, false, time.Minute, cc)
	if stops != 1 || counts != 4 || !strings.Contains(logs, "no client connection left") {
		t.Fatalf("stops %d, counts %d, want 1 and 4; logs:\n%s", stops, counts, logs)
	}
}

func TestLingerReadsAZeroTwice(t *testing.T) {
	// A zero that the next read contradicts (a socket skipped while the
	// kernel's table changed) does not end the linger.
	cc := &fakeClientCounter{script: []fakeCount{{n: 0}, {n: 1}, {n: 1}, {n: 0}, {n: 0}}}
	stops, counts, _ := lingerOnce(t, false, false, time.Minute, cc)
	if stops != 1 || counts != 5 {
		t.Fatalf("stops %d, counts %d, want 1 and 5", stops, counts)
	}
}

func TestLingerBoundCutsOpenConnections(t *testing.T) {
	cc := &fakeClientCounter{script: []fakeCount{{n: 3}}}
	stops, counts, logs := lingerOnce(t, false, false, 150*time.Millisecond, cc)
	if stops != 1 || counts < 2 || !strings.Contains(logs, "client connections still open") || !strings.Contains(logs, "connections=3") {
		t.Fatalf("stops %d, counts %d; logs:\n%s", stops, counts, logs)
	}
}

func TestLingerCountFailureFallsBackToTheFixedLinger(t *testing.T) {
	cc := &fakeClientCounter{script: []fakeCount{{err: errors.New("proc masked")}}}
	stops, counts, logs := lingerOnce(t, false, false, time.Minute, cc)
	if stops != 1 || counts != 1 || !strings.Contains(logs, "level=WARN") || !strings.Contains(logs, "proc masked") {
		t.Fatalf("stops %d, counts %d, want 1 and 1 with a warning; logs:\n%s", stops, counts, logs)
	}
}

func TestLingerWithoutCounterWaitsTheBound(t *testing.T) {
	start := time.Now()
	stops, _, _ := lingerOnce(t, false, false, 100*time.Millisecond, nil)
	if stops != 1 || time.Since(start) < 100*time.Millisecond {
		t.Fatalf("stops %d after %v, want 1 after the bound", stops, time.Since(start))
	}
}

func TestLingerOfAClosedWorkerStopsNothing(t *testing.T) {
	// The worker started after a closed one decides about its tasks.
	cc := &fakeClientCounter{script: []fakeCount{{n: 1}}}
	stops, counts, _ := lingerOnce(t, true, false, time.Minute, cc)
	if stops != 0 || counts != 0 {
		t.Fatalf("a closed worker's linger: stops %d, counts %d, want none", stops, counts)
	}
	stops, _, _ = lingerOnce(t, true, false, 50*time.Millisecond, nil)
	if stops != 0 {
		t.Fatalf("a closed worker's linger without counting: %d stops", stops)
	}
}

func TestLingerOfATaskThatEnded(t *testing.T) {
	cc := &fakeClientCounter{script: []fakeCount{{n: 1}}}
	stops, counts, logs := lingerOnce(t, false, true, time.Minute, cc)
	if stops != 1 || counts != 0 || !strings.Contains(logs, "ended on its own") {
		t.Fatalf("stops %d, counts %d; logs:\n%s", stops, counts, logs)
	}
}
