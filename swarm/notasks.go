package swarm

import (
	"context"
	"errors"
	"time"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/swarm/api"
)

// ErrNoTasks is returned for a task sent to a node that runs none (a
// manager that only manages, Node.ListedWithoutTasks).
var ErrNoTasks = errors.New("swarm: this node runs no tasks (a manager that only manages)")

// noTasks is the executor of a node listed without tasks: its worker
// registers and heartbeats like any node's, and refuses every task (the
// node registers drained, so the scheduler sends none).
type noTasks struct{}

var _ agent.Executor = noTasks{}

func (noTasks) Prepare(context.Context, *api.Task) error { return ErrNoTasks }
func (noTasks) Start(context.Context, string) error      { return ErrNoTasks }
func (noTasks) Wait(context.Context, string) (agent.ExitStatus, error) {
	return agent.ExitStatus{}, ErrNoTasks
}
func (noTasks) Shutdown(context.Context, string, time.Duration) error { return nil }
func (noTasks) Terminate(context.Context, string) error               { return nil }
func (noTasks) Remove(context.Context, string) error                  { return nil }
func (noTasks) Inspect(context.Context, string) (agent.Inspection, error) {
	return agent.Inspection{}, ErrNoTasks
}
func (noTasks) Logs(context.Context, string, agent.LogOptions, func(agent.LogLine) error) error {
	return ErrNoTasks
}
func (noTasks) Exec(context.Context, string, []string) (int, []byte, error) {
	return 0, nil, ErrNoTasks
}
func (noTasks) Metrics(context.Context, string) (agent.Metrics, error) {
	return agent.Metrics{}, ErrNoTasks
}
