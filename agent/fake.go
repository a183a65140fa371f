package agent

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/shoalproject/shoal/swarm/api"
)

// FakeExecutor pretends to run tasks: no containers, no processes. It is for
// tests and for simulating thousands of nodes in one process. A task runs
// until Exit is called for it or it is shut down; images can be made to be
// missing and tasks to exit at once.
type FakeExecutor struct {
	// StartLatency delays Start, as a real runtime would.
	StartLatency time.Duration
	// MissingImages are images Prepare rejects.
	MissingImages map[string]bool
	// ExitCodes makes tasks of an image exit at once with a code.
	ExitCodes map[string]int
	// IgnoreStop makes Shutdown wait out the grace period (a process that
	// ignores its stop signal), for tasks of these images.
	IgnoreStop map[string]bool
	// StopCodes are the exit codes of tasks of an image stopped by
	// Shutdown (a program that exits 0 on SIGTERM); 143 otherwise.
	StopCodes map[string]int
	// ExecResult answers Exec (health checks); nil answers exit code 0.
	ExecResult func(taskID string, cmd []string) int

	mu      sync.Mutex
	tasks   map[string]*fakeTask
	stopped map[string]int // Shutdown and Terminate calls per task, kept past Remove
}

var (
	_ Executor = (*FakeExecutor)(nil)
	_ Adopter  = (*FakeExecutor)(nil)
)

// Adopt returns the tasks this executor holds: a worker restarted on the
// same FakeExecutor finds them as a worker restarted on the same
// containerd finds its containers.
func (f *FakeExecutor) Adopt(ctx context.Context) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ids := make([]string, 0, len(f.tasks))
	for id := range f.tasks {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids, nil
}

// Starts counts how many times a task was started, to tell an adopted
// task from one started again.
func (f *FakeExecutor) Starts(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t := f.tasks[id]; t != nil {
		return t.starts
	}
	return 0
}

type fakeTask struct {
	image     string
	serviceID string
	started   bool
	starts    int
	exit      *ExitStatus
	done      chan struct{}
	logs      []LogLine
	logged    chan struct{} // closed and replaced when a line is added
}

func (t *fakeTask) log(id, line string) { t.logStream(id, "stdout", line) }

func (t *fakeTask) logStream(id, stream, line string) {
	t.logs = append(t.logs, LogLine{Time: time.Now(), Stream: stream, Line: line, TaskID: id, ServiceID: t.serviceID})
	if t.logged != nil {
		close(t.logged)
	}
	t.logged = make(chan struct{})
}

// Log adds a line of output (stream "stdout" or "stderr") to a task, as
// its process would print it.
func (f *FakeExecutor) Log(id, stream, line string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := f.tasks[id]
	if t == nil {
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	t.logStream(id, stream, line)
	return nil
}

func (f *FakeExecutor) get(id string) (*fakeTask, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := f.tasks[id]
	if t == nil {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return t, nil
}

// Prepare records the task, or rejects it if its image is missing.
func (f *FakeExecutor) Prepare(ctx context.Context, t *api.Task) error {
	if f.MissingImages[t.Spec.Image] {
		return fmt.Errorf("%w: %s (fake)", ErrImageNotFound, t.Spec.Image)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.tasks == nil {
		f.tasks = map[string]*fakeTask{}
	}
	if _, ok := f.tasks[t.ID]; !ok {
		f.tasks[t.ID] = &fakeTask{image: t.Spec.Image, serviceID: t.ServiceID, done: make(chan struct{})}
	}
	return nil
}

// Start starts the pretend process.
func (f *FakeExecutor) Start(ctx context.Context, id string) error {
	t, err := f.get(id)
	if err != nil {
		return err
	}
	if f.StartLatency > 0 {
		select {
		case <-time.After(f.StartLatency):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f.mu.Lock()
	t.started = true
	t.starts++
	t.log(id, "started "+id)
	f.mu.Unlock()
	if code, ok := f.ExitCodes[t.image]; ok {
		f.Exit(id, code)
	}
	return nil
}

// Exit ends a running pretend process with a code.
func (f *FakeExecutor) Exit(id string, code int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t := f.tasks[id]; t != nil && t.exit == nil {
		t.exit = &ExitStatus{Code: code, ExitedAt: time.Now()}
		t.log(id, fmt.Sprintf("exited %d", code))
		close(t.done)
	}
}

// Wait waits for the pretend process to end.
func (f *FakeExecutor) Wait(ctx context.Context, id string) (ExitStatus, error) {
	t, err := f.get(id)
	if err != nil {
		return ExitStatus{}, err
	}
	select {
	case <-t.done:
		f.mu.Lock()
		defer f.mu.Unlock()
		return *t.exit, nil
	case <-ctx.Done():
		return ExitStatus{}, ctx.Err()
	}
}

// ExitAll ends every pretend process (code 137), as a machine that goes
// away: test kits call it when a test ends, so that no runner waits for
// ever on a task of a test that is over.
func (f *FakeExecutor) ExitAll() {
	f.mu.Lock()
	ids := make([]string, 0, len(f.tasks))
	for id := range f.tasks {
		ids = append(ids, id)
	}
	f.mu.Unlock()
	for _, id := range ids {
		f.Exit(id, 137)
	}
}

// Stopped counts the Shutdown and Terminate calls for a task that found
// it, even after Remove: a test can tell a task stopped for real from one
// only reported stopped.
func (f *FakeExecutor) Stopped(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stopped[id]
}

func (f *FakeExecutor) countStop(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped == nil {
		f.stopped = map[string]int{}
	}
	f.stopped[id]++
}

// Shutdown stops the process with code 143 (SIGTERM), or 137 (SIGKILL)
// after grace for images in IgnoreStop.
func (f *FakeExecutor) Shutdown(ctx context.Context, id string, grace time.Duration) error {
	t, err := f.get(id)
	if err != nil {
		return err
	}
	f.countStop(id)
	if f.IgnoreStop[t.image] {
		select {
		case <-time.After(grace):
		case <-ctx.Done():
			return ctx.Err()
		}
		f.Exit(id, 137)
		return nil
	}
	code := 143
	if c, ok := f.StopCodes[t.image]; ok {
		code = c
	}
	f.Exit(id, code)
	return nil
}

// Terminate kills the process (code 137).
func (f *FakeExecutor) Terminate(ctx context.Context, id string) error {
	if _, err := f.get(id); err != nil {
		return err
	}
	f.countStop(id)
	f.Exit(id, 137)
	return nil
}

// Remove forgets the task.
func (f *FakeExecutor) Remove(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.tasks[id] == nil {
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	delete(f.tasks, id)
	return nil
}

// Inspect reports the pretend state.
func (f *FakeExecutor) Inspect(ctx context.Context, id string) (Inspection, error) {
	t, err := f.get(id)
	if err != nil {
		return Inspection{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	in := Inspection{ContainerID: "fake-" + id, Running: t.started && t.exit == nil, Exit: t.exit}
	if t.started {
		in.PID = 1
	}
	return in, nil
}

// Logs calls fn for the pretend output; with Follow it goes on with the
// lines added later until the task exits or ctx ends.
func (f *FakeExecutor) Logs(ctx context.Context, id string, opts LogOptions, fn func(LogLine) error) error {
	t, err := f.get(id)
	if err != nil {
		return err
	}
	f.mu.Lock()
	lines := FilterLogs(append([]LogLine(nil), t.logs...), opts)
	seen := len(t.logs)
	f.mu.Unlock()
	for {
		for _, l := range lines {
			if err := fn(l); err != nil {
				return err
			}
		}
		if !opts.Follow {
			return nil
		}
		f.mu.Lock()
		if t.logged == nil {
			t.logged = make(chan struct{})
		}
		logged, done := t.logged, t.done
		if seen < len(t.logs) {
			logged = closedChan
		}
		f.mu.Unlock()
		ended := false
		select {
		case <-ctx.Done():
			return nil
		case <-logged:
		case <-done:
			ended = true
		}
		f.mu.Lock()
		lines = FilterLogs(append([]LogLine(nil), t.logs[seen:]...), LogOptions{Since: opts.Since})
		seen = len(t.logs)
		f.mu.Unlock()
		if ended {
			for _, l := range lines {
				if err := fn(l); err != nil {
					return err
				}
			}
			return nil
		}
	}
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// FilterLogs applies Since and Tail to lines in time order.
func FilterLogs(lines []LogLine, opts LogOptions) []LogLine {
	if !opts.Since.IsZero() {
		i := 0
		for i < len(lines) && lines[i].Time.Before(opts.Since) {
			i++
		}
		lines = lines[i:]
	}
	if opts.Tail < 0 {
		return nil
	}
	if opts.Tail > 0 && len(lines) > opts.Tail {
		lines = lines[len(lines)-opts.Tail:]
	}
	return lines
}

// Exec answers with ExecResult, or 0.
func (f *FakeExecutor) Exec(ctx context.Context, id string, cmd []string) (int, []byte, error) {
	if _, err := f.get(id); err != nil {
		return -1, nil, err
	}
	if f.ExecResult == nil {
		return 0, nil, nil
	}
	code := f.ExecResult(id, cmd)
	return code, []byte(fmt.Sprintf("exit %d\n", code)), nil
}

// Metrics reports one pid and nothing used.
func (f *FakeExecutor) Metrics(ctx context.Context, id string) (Metrics, error) {
	if _, err := f.get(id); err != nil {
		return Metrics{}, err
	}
	return Metrics{Pids: 1}, nil
}
