package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoalproject/shoal/swarm"
)

// logsFlags are the flags of service logs, as docker service logs has
// them, plus --stdout and --stderr to pick a stream.
type logsFlags struct {
	follow, timestamps, details, raw bool
	noTaskIDs, noTrunc, noResolve    bool
	stdout, stderr                   bool
	tail, since                      string
}

func serviceLogs(c *cli) *cobra.Command {
	f := &logsFlags{}
	cmd := &cobra.Command{Use: "logs [OPTIONS] SERVICE|TASK", Short: "Show the logs of a service's tasks, or of one task", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return f.run(c, cmd, args[0]) }}
	fl := cmd.Flags()
	fl.BoolVarP(&f.follow, "follow", "f", false, "go on with new lines (and new tasks) until interrupted")
	fl.StringVarP(&f.tail, "tail", "n", "all", `lines to show from the end of each task's log ("all", or a number)`)
	fl.StringVar(&f.since, "since", "", "lines since a time (2026-01-02T13:23:37Z) or a duration ago (42m)")
	fl.BoolVarP(&f.timestamps, "timestamps", "t", false, "show each line's time")
	fl.BoolVar(&f.details, "details", false, "show the task, node and service IDs of each line")
	fl.BoolVar(&f.raw, "raw", false, "print the lines alone, without the task prefix")
	fl.BoolVar(&f.noTaskIDs, "no-task-ids", false, "leave task IDs out of the prefix")
	fl.BoolVar(&f.noTrunc, "no-trunc", false, "full task IDs in the prefix")
	fl.BoolVar(&f.noResolve, "no-resolve", false, "IDs instead of service and node names in the prefix")
	fl.BoolVar(&f.stdout, "stdout", false, "only the tasks' standard output")
	fl.BoolVar(&f.stderr, "stderr", false, "only the tasks' standard error")
	return cmd
}

// options turns the flags into log options.
func (f *logsFlags) options(now time.Time) (swarm.LogOptions, error) {
	o := swarm.LogOptions{Follow: f.follow, Stdout: f.stdout, Stderr: f.stderr}
	switch f.tail {
	case "", "all":
	default:
		n, err := strconv.Atoi(f.tail)
		if err != nil || n < 0 {
			return o, fmt.Errorf("--tail %q: give a number of lines (0 or more) or \"all\"", f.tail)
		}
		o.Tail = n
		if n == 0 {
			o.Tail = swarm.TailNone
		}
	}
	if f.since != "" {
		if t, err := time.Parse(time.RFC3339Nano, f.since); err == nil {
			o.Since = t
		} else if d, err := time.ParseDuration(f.since); err == nil && d >= 0 {
			o.Since = now.Add(-d)
		} else {
			return o, fmt.Errorf("--since %q: give a time (2026-01-02T13:23:37Z) or a duration ago (42m)", f.since)
		}
	}
	return o, o.Validate()
}

func (f *logsFlags) run(c *cli, cmd *cobra.Command, target string) error {
	opts, err := f.options(time.Now())
	if err != nil {
		return err
	}
	cl, err := c.connect()
	if err != nil {
		return err
	}
	// The lookups are bounded by --timeout; the stream is not (a follow
	// runs until interrupted, a long log takes its time).
	lctx, cancel := c.ctx(cmd)
	defer cancel()
	ctx := cmd.Context()
	var s *swarm.LogStream
	if svc, serr := cl.Service(lctx, target); serr == nil {
		s, err = cl.ServiceLogs(ctx, svc.ID, opts)
	} else if !errors.Is(serr, swarm.ErrNotFound) {
		return serr
	} else if t, terr := cl.Task(lctx, target); terr == nil {
		s, err = cl.TaskLogs(ctx, t.ID, opts)
	} else if errors.Is(terr, swarm.ErrNotFound) {
		return fmt.Errorf("no such service or task: %s", target)
	} else {
		return terr
	}
	if err != nil {
		return err
	}
	defer s.Close()
	p := &logPrinter{c: c, cl: cl, f: f, names: map[string]string{}}
	var incomplete []string
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil // interrupted
			}
			return err
		}
		if m.Warning != "" {
			incomplete = append(incomplete, m.TaskID)
			fmt.Fprintf(c.err, "warning: %s: the logs of this task could not be read: %s\n", p.prefix(lctx, m), m.Warning)
			continue
		}
		if err := p.print(lctx, m); err != nil {
			return err
		}
	}
	if len(incomplete) > 0 {
		return fmt.Errorf("incomplete logs: %d task(s) could not be read (%s)", len(incomplete), strings.Join(incomplete, ", "))
	}
	return nil
}

// logPrinter prints log lines as docker service logs does, or as JSON
// lines with --format json.
type logPrinter struct {
	c     *cli
	cl    *swarm.Client
	f     *logsFlags
	names map[string]string // service and node IDs to names
}

func (p *logPrinter) print(ctx context.Context, m swarm.LogMessage) error {
	if p.c.format == "json" {
		return json.NewEncoder(p.c.out).Encode(m)
	}
	w := p.c.out
	if m.Stream == swarm.StreamStderr {
		w = p.c.err
	}
	var b strings.Builder
	if p.f.timestamps {
		b.WriteString(m.Time.UTC().Format(time.RFC3339Nano) + " ")
	}
	if !p.f.raw {
		b.WriteString(p.prefix(ctx, m) + "    | ")
	}
	if p.f.details {
		fmt.Fprintf(&b, "node=%s,service=%s,task=%s ", m.NodeID, m.ServiceID, m.TaskID)
	}
	b.WriteString(m.Line + "\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// prefix is NAME.SLOT[.TASKID]@NODE.
func (p *logPrinter) prefix(ctx context.Context, m swarm.LogMessage) string {
	out := p.name(ctx, "s", m.ServiceID) + "." + strconv.FormatUint(m.Slot, 10)
	if !p.f.noTaskIDs {
		id := m.TaskID
		if !p.f.noTrunc && len(id) > 12 {
			id = id[:12]
		}
		out += "." + id
	}
	return out + "@" + p.name(ctx, "n", m.NodeID)
}

// name resolves a service (kind "s") or node ("n") ID once.
func (p *logPrinter) name(ctx context.Context, kind, id string) string {
	if p.f.noResolve || id == "" {
		return id
	}
	if n, ok := p.names[kind+id]; ok {
		return n
	}
	n := id
	if kind == "s" {
		if svc, err := p.cl.Service(ctx, id); err == nil {
			n = svc.Spec.Name
		}
	} else if node, err := p.cl.Node(ctx, id); err == nil && node.Description.Hostname != "" {
		n = node.Description.Hostname
	}
	p.names[kind+id] = n
	return n
}
