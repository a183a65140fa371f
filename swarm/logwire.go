package swarm

import (
	"context"
	"fmt"
	"time"

	"github.com/shoalproject/shoal/swarm/api"
)

// LogDispatcher is the log path between a worker and the leader, beside
// the Dispatcher's assignment path: the leader tells the node which of its
// tasks' logs to read (LogSubscriptions), and the node sends the lines
// back (PublishLogs). *Manager, RemoteDispatcher and Failover implement
// it; a worker whose Dispatcher does not serves no logs.
type LogDispatcher interface {
	// LogSubscriptions streams the log subscriptions that concern the
	// node, while this manager leads. The channel closes when ctx ends or
	// the session does; the node then drops the subscriptions it serves
	// (the leader that made them is gone) and calls again.
	LogSubscriptions(ctx context.Context, nodeID string) (<-chan LogSubscription, error)
	// PublishLogs sends a batch of lines of one subscription. It blocks
	// while the reader is behind (the node's log files hold the rest). An
	// error wrapping ErrNotFound means the subscription has ended: stop
	// reading for it.
	PublishLogs(ctx context.Context, nodeID string, p LogPublication) error
}

var (
	_ LogDispatcher = (*Manager)(nil)
	_ LogDispatcher = (*RemoteDispatcher)(nil)
	_ LogDispatcher = (*Failover)(nil)
)

// LogSubscription asks a node for the logs of some of its tasks. A
// subscription with Follow may come again with more tasks (new tasks of
// the service on the node); Close ends it.
type LogSubscription struct {
	ID      string     `json:"id"`
	Tasks   []string   `json:"tasks,omitempty"`
	Options LogOptions `json:"options"`
	Close   bool       `json:"close,omitempty"`
}

// LogPublication is a batch of a subscription's lines from a node.
type LogPublication struct {
	Subscription string    `json:"subscription"`
	Lines        []LogLine `json:"lines,omitempty"`
	// Failed are tasks whose logs the node could not read, with why.
	Failed []TaskLogError `json:"failed,omitempty"`
	// Done says the node has sent everything (without Follow).
	Done bool `json:"done,omitempty"`
}

// LogLine is one line of a task's output as a node sends it.
type LogLine struct {
	TaskID string    `json:"t"`
	Stream string    `json:"s"`
	Time   time.Time `json:"ts"`
	Line   string    `json:"l"`
}

// TaskLogError is a task whose logs a node could not read (or not all).
type TaskLogError struct {
	TaskID string `json:"task"`
	Err    string `json:"err"`
}

// Bounds of the log path.
const (
	// maxLogBatchLines and maxLogBatchBytes bound one publication.
	maxLogBatchLines = 1000
	maxLogBatchBytes = 256 << 10
	// maxLogSubTasks bounds the tasks of one subscription to one node.
	maxLogSubTasks = 10_000
)

// check refuses a publication larger than a node sends.
func (p *LogPublication) check() error {
	switch {
	case p.Subscription == "" || len(p.Subscription) > 128:
		return fmt.Errorf("%w: log publication names subscription %q", api.ErrInvalidSpec, clip(p.Subscription))
	case len(p.Lines) > maxLogBatchLines || len(p.Failed) > maxLogSubTasks:
		return fmt.Errorf("%w: log publication of %d lines and %d failures, at most %d and %d", api.ErrInvalidSpec, len(p.Lines), len(p.Failed), maxLogBatchLines, maxLogSubTasks)
	}
	for i := range p.Lines {
		if s := p.Lines[i].Stream; s != StreamStdout && s != StreamStderr {
			return fmt.Errorf("%w: log line of stream %q, want stdout or stderr", api.ErrInvalidSpec, clip(s))
		}
	}
	return nil
}
