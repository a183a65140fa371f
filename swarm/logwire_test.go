package swarm

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoalproject/shoal/swarm/api"
)

// Log options survive the URL of a logs request; bad values are refused
// with what is wrong.
func TestLogOptionsQuery(t *testing.T) {
	for _, o := range []LogOptions{{}, {Follow: true, Tail: TailNone}, {Tail: 7, Stdout: true},
		{Since: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), Stderr: true}} {
		got, err := logOptionsFromQuery(logQuery(o))
		if err != nil || !got.Since.Equal(o.Since) {
			t.Fatalf("%+v: got %+v, %v", o, got, err)
		}
		got.Since = o.Since
		if got != o {
			t.Fatalf("%+v came back as %+v", o, got)
		}
	}
	for q, want := range map[string]string{
		"tail=abc":      `tail="abc": want a number of lines`,
		"tail=-2":       "log tail -2",
		"tail=99999999": "log tail 99999999",
		"follow=maybe":  `follow="maybe": want true or false`,
		"since=monday":  `since="monday": want an RFC 3339 time`,
	} {
		v, _ := url.ParseQuery(q)
		if _, err := logOptionsFromQuery(v); !errors.Is(err, api.ErrInvalidSpec) && !errors.As(err, new(badRequest)) || err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error with %q", q, err, want)
		}
	}
}

// A node publishes only for a live subscription, only the tasks asked of
// it, and bounded batches; the task's service and slot come from the
// leader's store, not from the node; the streams not asked for are
// dropped.
func TestLogPublicationsAreChecked(t *testing.T) {
	b := newLogBroker()
	ctx := context.Background()
	s := &logSub{id: "sub1", opts: LogOptions{Stdout: true}, in: make(chan logBatch, 1), closed: make(chan struct{}),
		tasks: map[string]*api.Task{
			"t1": {Meta: api.Meta{ID: "t1"}, ServiceID: "svc", Slot: 3, NodeID: "n1"},
			"t2": {Meta: api.Meta{ID: "t2"}, ServiceID: "svc", Slot: 4, NodeID: "n2"}},
		nodes: map[string]*logPart{"n1": {tasks: map[string]bool{"t1": true}}, "n2": {tasks: map[string]bool{"t2": true}}}}
	b.subs[s.id] = s
	line := func(task, stream string) LogLine {
		return LogLine{TaskID: task, Stream: stream, Time: time.Now(), Line: "hi"}
	}
	if err := b.publish(ctx, "n1", LogPublication{Subscription: "gone", Lines: []LogLine{line("t1", "stdout")}}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("an unknown subscription: %v", err)
	}
	if err := b.publish(ctx, "n3", LogPublication{Subscription: "sub1"}); !errors.Is(err, errForbidden) {
		t.Fatalf("a node the subscription did not ask: %v", err)
	}
	if err := b.publish(ctx, "n1", LogPublication{Subscription: "sub1", Lines: []LogLine{line("t2", "stdout")}}); !errors.Is(err, errForbidden) {
		t.Fatalf("another node's task: %v", err)
	}
	if err := b.publish(ctx, "n1", LogPublication{Subscription: "sub1", Lines: []LogLine{line("t1", "stdin")}}); !errors.Is(err, api.ErrInvalidSpec) {
		t.Fatalf("a bad stream: %v", err)
	}
	big := LogPublication{Subscription: "sub1", Lines: make([]LogLine, maxLogBatchLines+1)}
	if err := b.publish(ctx, "n1", big); !errors.Is(err, api.ErrInvalidSpec) {
		t.Fatalf("a batch of %d lines: %v", len(big.Lines), err)
	}
	err := b.publish(ctx, "n1", LogPublication{Subscription: "sub1", Lines: []LogLine{line("t1", "stdout"), line("t1", "stderr")},
		Failed: []TaskLogError{{TaskID: "t1", Err: "disk on fire"}}, Done: true})
	if err != nil {
		t.Fatal(err)
	}
	got := <-s.in
	if !got.done || got.node != "n1" || len(got.msgs) != 2 {
		t.Fatalf("batch %+v", got)
	}
	if m := got.msgs[0]; m.TaskID != "t1" || m.ServiceID != "svc" || m.Slot != 3 || m.NodeID != "n1" || m.Stream != "stdout" {
		t.Fatalf("line %+v", m)
	}
	if m := got.msgs[1]; m.Warning != "node n1: disk on fire" || m.Line != "" {
		t.Fatalf("failure %+v", m)
	}
	// The reader is behind: the publication waits, until the request ends.
	b.publish(ctx, "n1", LogPublication{Subscription: "sub1", Lines: []LogLine{line("t1", "stdout")}})
	res := make(chan error, 1)
	go func() {
		res <- b.publish(ctx, "n1", LogPublication{Subscription: "sub1", Lines: []LogLine{line("t1", "stdout")}})
	}()
	select {
	case err := <-res:
		t.Fatalf("a publication past a full queue returned %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	s.close()
	if err := <-res; !errors.Is(err, ErrNotFound) {
		t.Fatalf("a waiting publication when the request ended: %v", err)
	}
	// A reader behind for long: the node is told to send again, so that
	// its call does not outlive its timeouts.
	defer func(d time.Duration) { logPublishWait = d }(logPublishWait)
	logPublishWait = 50 * time.Millisecond
	s.closed, s.closeOnce = make(chan struct{}), sync.Once{}
	if err := b.publish(ctx, "n1", LogPublication{Subscription: "sub1", Lines: []LogLine{line("t1", "stdout")}}); !errors.Is(err, ErrUnavailable) || !Retryable(err) {
		t.Fatalf("a publication past a reader behind for long: %v", err)
	}
}

// A node whose queue of subscriptions is full does not hold up the
// broker: the subscription is dropped and counted.
func TestLogListenerQueueDrops(t *testing.T) {
	b := newLogBroker()
	if _, ok := b.notify("n1", LogSubscription{ID: "x"}); ok {
		t.Fatal("a node without a stream took a subscription")
	}
	l, err := b.listen("n1")
	if err != nil {
		t.Fatal(err)
	}
	for i := range logListenerQueue {
		if _, ok := b.notify("n1", LogSubscription{ID: fmt.Sprint(i)}); !ok {
			t.Fatalf("subscription %d refused", i)
		}
	}
	if _, ok := b.notify("n1", LogSubscription{ID: "over"}); ok || b.dropped.Load() != 1 {
		t.Fatalf("past the queue: taken %v, dropped %d", ok, b.dropped.Load())
	}
	// A new stream of the node replaces the old one, which ends.
	if _, err := b.listen("n1"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.gone:
	default:
		t.Fatal("the replaced stream did not end")
	}
	b.stop()
	if _, err := b.listen("n1"); !errors.Is(err, ErrNotManagerLeader) {
		t.Fatalf("a stream after leadership ended: %v", err)
	}
}
