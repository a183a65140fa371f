package containerd

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"

	ctrd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/errdefs"
)

const taskLabel = "shoal.task.id"

// Adopt loads the containers this executor's namespace already holds (left
// running by an earlier agent) without restarting them, and returns their
// task IDs. Their processes keep running; Wait, Inspect, Logs and Shutdown
// work on them as on tasks started by this agent.
func (e *Executor) Adopt(ctx context.Context) ([]string, error) {
	if e.client == nil {
		return nil, fmt.Errorf("containerd executor: not connected (call Connect)")
	}
	ctx = e.ns(ctx)
	containers, err := e.client.Containers(ctx, fmt.Sprintf("labels.%q", taskLabel))
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, ctr := range containers {
		id := ctr.ID()
		if _, err := e.get(id); err == nil {
			ids = append(ids, id)
			continue
		}
		en := &entry{container: ctr, logPath: filepath.Join(e.StateDir, "logs", id+".log"), done: make(chan struct{})}
		en.stopSignal = stopSignalOf(ctx, ctr)
		// Re-attach to the task's output FIFOs, so its log goes on.
		tl, err := e.openLog(en)
		if err != nil {
			return ids, err
		}
		task, err := ctr.Task(ctx, cio.NewAttach(cio.WithStreams(nil, tl.stream("stdout"), tl.stream("stderr"))))
		if err != nil && !errdefs.IsNotFound(err) {
			e.logger().Warn("containerd executor: cannot re-attach to the output of an adopted task; its log stops here", "task", id, "err", err)
			task, err = ctr.Task(ctx, nil)
		}
		switch {
		case errdefs.IsNotFound(err):
			// Created, never started (or already deleted): nothing runs.
		case err != nil:
			return ids, fmt.Errorf("load task %s: %w", id, err)
		default:
			exitCh, err := task.Wait(e.ns(context.Background()))
			if err != nil {
				return ids, fmt.Errorf("wait task %s: %w", id, err)
			}
			en.task = task
			growPipes(task.IO(), e.logger())
			e.watchExit(en, exitCh)
		}
		e.mu.Lock()
		e.tasks[id] = en
		e.mu.Unlock()
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids, nil
}

// Reconcile stops and removes every container of this namespace whose task
// is not in keep: tasks no longer assigned to this node.
func (e *Executor) Reconcile(ctx context.Context, keep map[string]bool) (removed []string, err error) {
	ids, err := e.Adopt(ctx)
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		if keep[id] {
			continue
		}
		if err := e.Terminate(ctx, id); err != nil {
			return removed, err
		}
		if err := e.Remove(ctx, id); err != nil {
			return removed, err
		}
		removed = append(removed, id)
	}
	return removed, nil
}

func (e *Executor) watchExit(en *entry, exitCh <-chan ctrd.ExitStatus) {
	go func() {
		st := <-exitCh
		code, at, _ := st.Result()
		// The output ends with the process: copy what is left, then say done.
		if io := en.task.IO(); io != nil {
			io.Wait()
		}
		if en.log != nil {
			en.log.flush()
		}
		e.mu.Lock()
		en.exit.Code, en.exit.ExitedAt = int(code), at
		e.mu.Unlock()
		close(en.done)
	}()
}
