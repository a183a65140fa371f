package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// phases follows the service's tasks through the manager's event stream
// while the bench runs, to say where the time to running goes: for each
// state, when the manager first had a task in it (its commit, seen here),
// and the worker's own timestamp of the state. A worker batches its
// reports, so the manager may never see a short state: those show fewer
// tasks than the replicas.
type phases struct {
	mu    sync.Mutex
	tasks map[string]*taskTimes
	start time.Time
}

// taskTimes are one task's times: seen[s] when the manager's commit of
// state s arrived here, reported[s] the worker's timestamp of it.
type taskTimes struct {
	seen, reported map[api.TaskState]time.Time
}

// watchPhases follows the task events until ctx ends.
func watchPhases(ctx context.Context, c *swarm.Client) (*phases, error) {
	ch, err := c.Events(ctx, 0, "task")
	if err != nil {
		return nil, err
	}
	p := &phases{tasks: map[string]*taskTimes{}}
	go func() {
		for ev := range ch {
			now := time.Now()
			var t api.Task
			if ev.Action == "remove" || json.Unmarshal(ev.Object, &t) != nil {
				continue
			}
			p.mu.Lock()
			tt := p.tasks[t.ID]
			if tt == nil {
				tt = &taskTimes{seen: map[api.TaskState]time.Time{}, reported: map[api.TaskState]time.Time{}}
				p.tasks[t.ID] = tt
			}
			if _, ok := tt.seen[t.Status.State]; !ok {
				tt.seen[t.Status.State] = now
				tt.reported[t.Status.State] = t.Status.Timestamp
			}
			p.mu.Unlock()
		}
	}()
	return p, nil
}

// mark sets the time the figures count from (service create).
func (p *phases) mark() {
	p.mu.Lock()
	p.start = time.Now()
	p.mu.Unlock()
}

// print writes, per state, how many tasks the manager saw in it and the
// median and 90th percentile of the time from `service create` to the
// manager's commit and to the worker's timestamp.
func (p *phases) print(w io.Writer) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(w, "Shoal, per task state, time from `service create` (manager: commit seen; worker: its timestamp):\n")
	fmt.Fprintf(w, "  %-10s %5s %10s %10s %10s %10s\n", "state", "tasks", "mgr p50", "mgr p90", "wkr p50", "wkr p90")
	for s := api.TaskNew; s <= api.TaskRunning; s++ {
		var seen, reported []time.Duration
		for _, tt := range p.tasks {
			if at, ok := tt.seen[s]; ok {
				seen = append(seen, at.Sub(p.start))
				if r := tt.reported[s]; !r.IsZero() {
					reported = append(reported, r.Sub(p.start))
				}
			}
		}
		if len(seen) == 0 {
			continue
		}
		fmt.Fprintf(w, "  %-10s %5d %9.2fs %9.2fs %9.2fs %9.2fs\n", s, len(seen),
			quantile(seen, .5).Seconds(), quantile(seen, .9).Seconds(), quantile(reported, .5).Seconds(), quantile(reported, .9).Seconds())
	}
	// Per task, between the worker's timestamps: what Prepare took
	// (image, network, container) and what Start took (task, process).
	for _, span := range [][2]api.TaskState{{api.TaskAccepted, api.TaskStarting}, {api.TaskStarting, api.TaskRunning}} {
		var ds []time.Duration
		for _, tt := range p.tasks {
			from, to := tt.reported[span[0]], tt.reported[span[1]]
			if span[0] == api.TaskAccepted && from.IsZero() {
				from = tt.reported[api.TaskPreparing]
			}
			if !from.IsZero() && !to.IsZero() {
				ds = append(ds, to.Sub(from))
			}
		}
		fmt.Fprintf(w, "  %s -> %s per task (worker): %d tasks, p50 %.2fs, p90 %.2fs\n", span[0], span[1], len(ds),
			quantile(ds, .5).Seconds(), quantile(ds, .9).Seconds())
	}
}

func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[int(q*float64(len(ds)-1)+.5)]
}
