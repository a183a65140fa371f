package agent

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/shoalproject/shoal/swarm/api"
)

// Executor runs tasks on one node. The containerd executor (package
// agent/containerd) is the real one; FakeExecutor is for tests and
// simulations of many nodes in one process.
type Executor interface {
	// Prepare gets everything ready to start the task: image, container,
	// mounts. An error here rejects the task.
	Prepare(ctx context.Context, t *api.Task) error
	// Start starts the task's process.
	Start(ctx context.Context, taskID string) error
	// Wait blocks until the task's process ends.
	Wait(ctx context.Context, taskID string) (ExitStatus, error)
	// Shutdown asks the process to stop (the task's stop signal), and kills
	// it when grace runs out.
	Shutdown(ctx context.Context, taskID string, grace time.Duration) error
	// Terminate kills the process at once.
	Terminate(ctx context.Context, taskID string) error
	// Remove deletes the container and everything prepared for it.
	Remove(ctx context.Context, taskID string) error
	// Inspect reports what the executor knows of the task.
	Inspect(ctx context.Context, taskID string) (Inspection, error)
	// Logs writes the task's output to w.
	Logs(ctx context.Context, taskID string, opts LogOptions, w io.Writer) error
	// Exec runs a command inside the task's container (health checks) and
	// returns its exit code and the start of its output; ctx bounds it.
	Exec(ctx context.Context, taskID string, cmd []string) (exitCode int, output []byte, err error)
	// Metrics reports the task's resource use.
	Metrics(ctx context.Context, taskID string) (Metrics, error)
}

// Metrics is a task's resource use (cgroup v1 and v2 alike).
type Metrics struct {
	// CPUNanos is CPU time used since the task started.
	CPUNanos         uint64
	MemoryBytes      uint64
	MemoryLimitBytes uint64
	Pids             uint64
}

// MaxExecOutput bounds the output Exec keeps, as Docker does for health
// check output.
const MaxExecOutput = 4096

// ExitStatus is how a process ended.
type ExitStatus struct {
	Code     int
	ExitedAt time.Time
}

// Inspection is an executor's view of a task.
type Inspection struct {
	ContainerID string
	PID         int
	Running     bool
	Exit        *ExitStatus
}

// LogOptions select log lines.
type LogOptions struct {
	// Tail keeps only the last Tail lines; 0 means all.
	Tail int
}

// Errors executors return.
var (
	ErrNotFound      = errors.New("agent: task not found on this node")
	ErrImageNotFound = errors.New("agent: image not found")
)

// SecretSource gives the data of the secrets and configs a task references;
// on a worker it is what the managers sent with the assignment, held in
// memory only.
type SecretSource interface {
	SecretData(ctx context.Context, ref api.SecretReference) ([]byte, error)
	ConfigData(ctx context.Context, ref api.ConfigReference) ([]byte, error)
}
