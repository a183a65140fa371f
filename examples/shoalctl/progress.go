package main

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// progress shows a service converge: its tasks per state, on one line
// rewritten in place on a terminal, a line per change otherwise, until the
// tasks it wants all run (and an update is over). Ctrl-C stops watching,
// not the service.
func (c *cli) progress(cmd *cobra.Command, cl *swarm.Client, serviceID string) error {
	ctx := cmd.Context()
	tty := c.progressTerminalOut || isTerminal(c.out)
	interval := c.progressInterval
	if interval == 0 {
		interval = 300 * time.Millisecond
	}
	start := time.Now()
	last := ""
	defer func() {
		if tty && last != "" {
			fmt.Fprintln(c.out)
		}
	}()
	for {
		line, done, err := c.convergence(ctx, cl, serviceID)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		line = fmt.Sprintf("%s  (%.0fs)", line, time.Since(start).Seconds())
		if tty {
			fmt.Fprintf(c.out, "\r\033[K%s", line)
			last = line
		} else if stripTime(line) != stripTime(last) {
			fmt.Fprintln(c.out, line)
			last = line
		}
		if done {
			if tty {
				fmt.Fprintf(c.out, "\r\033[K%s\n", line)
				last = ""
			}
			fmt.Fprintln(c.out, "verify: Service converged")
			return nil
		}
		select {
		case <-ctx.Done():
			if tty {
				fmt.Fprintln(c.out)
				last = ""
			}
			fmt.Fprintln(c.out, "stopped watching: the service keeps converging (shoalctl service ps shows it)")
			return nil
		case <-time.After(interval):
		}
	}
}

func stripTime(s string) string {
	if i := strings.LastIndex(s, "  ("); i >= 0 {
		return s[:i]
	}
	return s
}

// convergence describes where a service stands and whether it is done.
func (c *cli) convergence(ctx context.Context, cl *swarm.Client, id string) (string, bool, error) {
	cctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	svc, err := cl.Service(cctx, id)
	if err != nil {
		return "", false, err
	}
	tasks, err := cl.Tasks(cctx, swarm.Filter{Services: []string{id}})
	if err != nil {
		return "", false, err
	}
	by := map[string]int{}
	running, wanted := 0, 0
	var lastErr *api.Task
	for _, t := range tasks {
		if t.DesiredState == api.TaskRunning {
			wanted++
			by[t.Status.State.String()]++
			if t.Status.State == api.TaskRunning {
				running++
			}
		}
		if t.Status.Err != "" && (lastErr == nil || t.Status.Timestamp.After(lastErr.Status.Timestamp)) {
			lastErr = t
		}
		if t.Status.State == api.TaskPending && t.Status.Message != "" && t.DesiredState == api.TaskRunning {
			lastErr = t
		}
	}
	target := wanted
	if r := svc.Spec.Mode.Replicated; r != nil {
		target = int(r.Replicas)
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(by)) {
		parts = append(parts, fmt.Sprintf("%d %s", by[k], k))
	}
	line := fmt.Sprintf("%s: %d/%d running", svc.Spec.Name, running, target)
	if len(parts) > 0 && !(len(parts) == 1 && by["running"] > 0) {
		line += " [" + strings.Join(parts, ", ") + "]"
	}
	updating := false
	if u := svc.UpdateStatus; u != nil {
		switch u.State {
		case api.UpdateUpdating, api.UpdateRollbackStarted:
			updating = true
			line += " update: " + string(u.State)
		case api.UpdatePaused, api.UpdateRollbackPaused:
			line += " update: " + string(u.State)
			if u.Message != "" {
				line += " (" + u.Message + ")"
			}
			return line, false, fmt.Errorf("%s: the update is %s: %s", svc.Spec.Name, u.State, u.Message)
		}
	}
	if lastErr != nil && running < target {
		msg := lastErr.Status.Err
		if msg == "" {
			msg = lastErr.Status.Message
		}
		line += " last problem: " + msg
	}
	done := running == target && wanted == target && !updating && (target > 0 || svc.Spec.Mode.Replicated != nil)
	return line, done, nil
}

func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
