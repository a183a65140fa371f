package swarm

import (
	"fmt"
	"time"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/swarm/api"
)

// Service and task logs. Workers have no listening port, so the leader
// asks them for logs over the sessions they hold with it (the log broker,
// logbroker.go): it sends a log subscription to each node that ran a
// selected task, and the node publishes the lines back in batches
// (logworker.go). Any manager takes a logs request: a follower passes it
// to the leader, which holds every worker's session. docs/ARCHITECTURE.md
// says why.

// LogOptions select the lines of a logs request.
type LogOptions struct {
	// Follow goes on with new lines (and new tasks of the service) until
	// the caller goes away, the service or task is removed, or the leader
	// changes.
	Follow bool `json:"follow,omitempty"`
	// Tail keeps the last Tail lines of each task; 0 keeps them all, and
	// TailNone none (with Follow: only lines written from now on). As in
	// Docker, it counts the lines of both streams, before Stdout and
	// Stderr select. Tasks that start during a Follow send all their
	// lines.
	Tail int `json:"tail,omitempty"`
	// Since drops lines written before it.
	Since time.Time `json:"since,omitzero"`
	// Stdout and Stderr select the streams; both false means both.
	Stdout bool `json:"stdout,omitempty"`
	Stderr bool `json:"stderr,omitempty"`
}

// TailNone is LogOptions.Tail for no past lines.
const TailNone = -1

// MaxLogTail bounds LogOptions.Tail: a tail is read from the end of a
// task's files and kept in memory until sent.
const MaxLogTail = 1_000_000

// Validate refuses options that cannot be served.
func (o LogOptions) Validate() error {
	if o.Tail < TailNone || o.Tail > MaxLogTail {
		return fmt.Errorf("%w: log tail %d: give a number of lines from 0 (all) to %d, or %d for none", api.ErrInvalidSpec, o.Tail, MaxLogTail, TailNone)
	}
	return nil
}

// wants reports whether a line of a stream is selected.
func (o LogOptions) wants(stream string) bool {
	if !o.Stdout && !o.Stderr {
		return true
	}
	return (o.Stdout && stream == StreamStdout) || (o.Stderr && stream == StreamStderr)
}

// agentOptions is what a node's executor is asked for.
func (o LogOptions) agentOptions() agent.LogOptions {
	return agent.LogOptions{Tail: o.Tail, Since: o.Since, Follow: o.Follow}
}

// The streams of a task's output.
const (
	StreamStdout = "stdout"
	StreamStderr = "stderr"
)

// LogMessage is one line of a task's output, or a warning that a task's
// logs could not be read.
type LogMessage struct {
	TaskID    string `json:"taskID"`
	NodeID    string `json:"nodeID,omitempty"`
	ServiceID string `json:"serviceID,omitempty"`
	// Slot is the task's replica number (0 for a global service's task).
	Slot uint64 `json:"slot,omitempty"`
	// Stream is StreamStdout or StreamStderr; empty for a warning.
	Stream string    `json:"stream,omitempty"`
	Time   time.Time `json:"time,omitzero"`
	// Line is the line without its newline.
	Line string `json:"line,omitempty"`
	// Warning, when set, says why the task's logs (or some of them) could
	// not be read: its node is down or did not answer, the task is gone
	// from it, lines were dropped. Line is then empty. Without Follow the
	// warnings come after every line that could be read.
	Warning string `json:"warning,omitempty"`
}

// logTarget is what a logs request reads: a service's tasks or one task.
type logTarget struct {
	serviceID string
	taskID    string
}
