package agent

import (
	"context"
	"errors"
	"fmt"
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
	// Logs calls fn for each line of the task's output, oldest first; with
	// opts.Follow it goes on with new lines until the task ends or ctx does.
	Logs(ctx context.Context, taskID string, opts LogOptions, fn func(LogLine) error) error
	// Exec runs a command inside the task's container (health checks) and
	// returns its exit code and the start of its output; ctx bounds it.
	Exec(ctx context.Context, taskID string, cmd []string) (exitCode int, output []byte, err error)
	// Metrics reports the task's resource use.
	Metrics(ctx context.Context, taskID string) (Metrics, error)
}

// Adopter is an Executor that can take over the tasks an earlier agent
// left on this node: containers outlive the agent that started them. A
// worker that starts calls Adopt before it applies its first assignments,
// watches the adopted tasks that are still assigned (Runner.Resume), and
// stops and removes the others.
type Adopter interface {
	// Adopt loads the tasks the executor's store holds, running or not,
	// without restarting them, and returns their IDs.
	Adopt(ctx context.Context) ([]string, error)
}

// ReservedLabelPrefix starts the container labels executors set
// themselves (shoal.task.id, shoal.service.id, shoal.stop-signal ...):
// what they tell (which task and service a container is, its logs' service,
// how an agent restarted after stops it) must not come from a task's spec.
// Executors drop spec labels with this prefix; the control API refuses
// them in specs (api validation), so the user hears of it.
const ReservedLabelPrefix = api.ReservedLabelPrefix

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
	// Tail keeps only the last Tail lines; 0 means all, a negative
	// number none (with Follow: only the lines written from now on).
	Tail int
	// Since drops lines written before it.
	Since time.Time
	// Follow waits for new lines until the task ends or ctx is done.
	Follow bool
}

// LogLine is one line of a task's output, tagged so that the managers can
// merge the lines of all of a service's tasks.
type LogLine struct {
	Time      time.Time
	Stream    string // "stdout" or "stderr"
	Line      string
	TaskID    string
	ServiceID string
}

// WriteLogs writes lines to w as text, with an RFC 3339 timestamp first when
// timestamps is true (docker logs -t).
func WriteLogs(w io.Writer, timestamps bool) func(LogLine) error {
	return func(l LogLine) error {
		var err error
		if timestamps {
			_, err = fmt.Fprintf(w, "%s %s\n", l.Time.UTC().Format(time.RFC3339Nano), l.Line)
		} else {
			_, err = fmt.Fprintln(w, l.Line)
		}
		return err
	}
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
