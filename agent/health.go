package agent

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/shoalproject/shoal/swarm/api"
)

// Docker's health check defaults.
const (
	DefaultHealthInterval = 30 * time.Second
	DefaultHealthTimeout  = 30 * time.Second
	DefaultHealthRetries  = 3
)

// Health states as reported in api.TaskStatus.Health.
const (
	HealthStarting  = "starting"
	HealthHealthy   = "healthy"
	HealthUnhealthy = "unhealthy"
)

// healthReport is one change of a task's health.
type healthReport struct {
	state  string
	detail string // the last probe's outcome, for an unhealthy task
}

// healthCommand turns a health check's test into a command line, or nil
// when there is nothing to run.
func healthCommand(h *api.HealthConfig) []string {
	if h == nil || len(h.Test) == 0 {
		return nil
	}
	switch h.Test[0] {
	case "CMD":
		return h.Test[1:]
	case "CMD-SHELL":
		return []string{"/bin/sh", "-c", strings.Join(h.Test[1:], " ")}
	}
	return nil
}

// monitorHealth probes a running task and sends each change of its health:
// starting, then healthy, and unhealthy once retries probes in a row failed
// after the start period (a success during the start period ends it). It
// stops after unhealthy, or when ctx ends.
func monitorHealth(ctx context.Context, ex Executor, taskID string, h *api.HealthConfig, out chan<- healthReport) {
	cmd := healthCommand(h)
	if cmd == nil {
		return
	}
	interval, timeout, retries := h.Interval, h.Timeout, h.Retries
	if interval <= 0 {
		interval = DefaultHealthInterval
	}
	if timeout <= 0 {
		timeout = DefaultHealthTimeout
	}
	if retries <= 0 {
		retries = DefaultHealthRetries
	}
	send := func(r healthReport) bool {
		select {
		case out <- r:
			return true
		case <-ctx.Done():
			return false
		}
	}
	if !send(healthReport{state: HealthStarting}) {
		return
	}
	started := time.Now()
	state, failures := HealthStarting, 0
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		pctx, cancel := context.WithTimeout(ctx, timeout)
		code, output, err := ex.Exec(pctx, taskID, cmd)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil && code == 0 {
			failures = 0
			if state != HealthHealthy {
				state = HealthHealthy
				if !send(healthReport{state: state}) {
					return
				}
			}
			continue
		}
		if state == HealthStarting && time.Since(started) < h.StartPeriod {
			continue // failures in the start period do not count
		}
		failures++
		if failures >= retries {
			detail := fmt.Sprintf("health check failed %d times in a row (exit code %d): %s", failures, code, strings.TrimSpace(string(output)))
			if err != nil {
				detail = fmt.Sprintf("health check failed %d times in a row: %v", failures, err)
			}
			send(healthReport{state: HealthUnhealthy, detail: detail})
			return
		}
	}
}

// HasHealthcheck reports whether a task with this health check is probed:
// such a task is healthy only once a probe said so (before that, its
// health is empty, then starting).
func HasHealthcheck(h *api.HealthConfig) bool { return healthCommand(h) != nil }
