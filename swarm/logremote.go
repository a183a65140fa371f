package swarm

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// The log path over the network: the nodes' log streams and publications
// on the dispatcher's endpoints, and the logs requests of the control API.

// logRoutes adds the log endpoints to mux: a node's subscription stream
// and its publications (as itself), and the control API's logs requests
// (managers; a follower passes them to the leader).
func (c *controlAPI) logRoutes(mux *http.ServeMux) {
	m := c.m
	mux.HandleFunc("GET "+dispatcherPrefix+"logsubs", m.asNode(func(w http.ResponseWriter, r *http.Request, node string) error {
		subs, err := m.LogSubscriptions(r.Context(), node)
		if err != nil {
			return err
		}
		rc, enc := startNDJSON(w)
		keepalive := time.NewTicker(assignmentKeepalive)
		defer keepalive.Stop()
		for {
			var s LogSubscription // empty: a keepalive
			select {
			case v, ok := <-subs:
				if !ok {
					return nil
				}
				s = v
			case <-keepalive.C:
			}
			if enc.Encode(s) != nil || rc.Flush() != nil {
				return nil
			}
		}
	}))
	mux.HandleFunc("POST "+dispatcherPrefix+"logs", m.asNode(func(w http.ResponseWriter, r *http.Request, node string) error {
		var p LogPublication
		if err := decodeBody(r, &p); err != nil {
			return err
		}
		if err := m.PublishLogs(r.Context(), node, p); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}))
	serve := func(resolve func(ref string) (logTarget, error)) http.HandlerFunc {
		return c.asManager(true, func(w http.ResponseWriter, r *http.Request) error {
			opts, err := logOptionsFromQuery(r.URL.Query())
			if err != nil {
				return err
			}
			target, err := resolve(r.PathValue("id"))
			if err != nil {
				return err
			}
			return c.streamLogs(w, r, target, opts)
		})
	}
	mux.HandleFunc("GET "+controlPrefix+"services/{id}/logs", serve(func(ref string) (logTarget, error) {
		svc, err := m.Service(ref)
		if err != nil {
			return logTarget{}, err
		}
		return logTarget{serviceID: svc.ID}, nil
	}))
	mux.HandleFunc("GET "+controlPrefix+"tasks/{id}/logs", serve(func(ref string) (logTarget, error) {
		t, err := m.Task(ref)
		if err != nil {
			return logTarget{}, err
		}
		return logTarget{taskID: t.ID}, nil
	}))
}

// startNDJSON begins an NDJSON stream answer.
func startNDJSON(w http.ResponseWriter) (*http.ResponseController, *json.Encoder) {
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	rc.Flush()
	return rc, json.NewEncoder(w)
}

// logFrame is one line of a logs answer (NDJSON): a message, or the end
// of the stream, or the error that cut it short.
type logFrame struct {
	Msg   *LogMessage `json:"msg,omitempty"`
	End   bool        `json:"end,omitempty"`
	Error string      `json:"error,omitempty"`
}

// streamLogs answers a logs request on this (leading) manager. Errors
// found before the first byte are answered as errors; later ones end the
// stream with an error frame.
func (c *controlAPI) streamLogs(w http.ResponseWriter, r *http.Request, target logTarget, opts LogOptions) error {
	b, st, err := c.m.logBroker()
	if err != nil {
		return err
	}
	rc, enc := startNDJSON(w)
	err = b.serve(r.Context(), st, target, opts, func(msg LogMessage) error {
		return enc.Encode(logFrame{Msg: &msg})
	}, rc.Flush)
	if r.Context().Err() != nil {
		return nil // the caller went away
	}
	end := logFrame{End: err == nil}
	if err != nil {
		end.Error = err.Error()
	}
	enc.Encode(end)
	rc.Flush()
	return nil
}

// logQuery and logOptionsFromQuery carry LogOptions in a URL.
func logQuery(o LogOptions) url.Values {
	q := url.Values{}
	if o.Follow {
		q.Set("follow", "1")
	}
	if o.Tail != 0 {
		q.Set("tail", strconv.Itoa(o.Tail))
	}
	if !o.Since.IsZero() {
		q.Set("since", o.Since.UTC().Format(time.RFC3339Nano))
	}
	if o.Stdout {
		q.Set("stdout", "1")
	}
	if o.Stderr {
		q.Set("stderr", "1")
	}
	return q
}

func logOptionsFromQuery(q url.Values) (LogOptions, error) {
	var o LogOptions
	var err error
	bad := func(k string, why string) error {
		return fmt.Errorf("%w: %s=%q: %s", errBadQuery, k, q.Get(k), why)
	}
	for _, k := range []string{"follow", "stdout", "stderr"} {
		if v := q.Get(k); v != "" {
			b, perr := strconv.ParseBool(v)
			if perr != nil {
				return o, bad(k, "want true or false")
			}
			switch k {
			case "follow":
				o.Follow = b
			case "stdout":
				o.Stdout = b
			case "stderr":
				o.Stderr = b
			}
		}
	}
	if v := q.Get("tail"); v != "" {
		if o.Tail, err = strconv.Atoi(v); err != nil {
			return o, bad("tail", "want a number of lines")
		}
	}
	if v := q.Get("since"); v != "" {
		if o.Since, err = time.Parse(time.RFC3339Nano, v); err != nil {
			return o, bad("since", "want an RFC 3339 time")
		}
	}
	return o, o.Validate()
}

var errBadQuery = badRequest{errors.New("swarm: bad query")}

// LogSubscriptions streams this node's log subscriptions from the leader
// (a follower names it, and the stream goes there). A stream silent for
// three keepalives is dead: the channel closes, and the worker calls
// again.
func (d *RemoteDispatcher) LogSubscriptions(ctx context.Context, nodeID string) (<-chan LogSubscription, error) {
	out := make(chan LogSubscription)
	err := d.follow(ctx, dispatcherPath("logsubs", nodeID), maxBody, func(ctx context.Context, line []byte) bool {
		var s LogSubscription
		if json.Unmarshal(line, &s) != nil {
			return false
		}
		if s.ID == "" {
			return true // a keepalive
		}
		select {
		case out <- s:
			return true
		case <-ctx.Done():
			return false
		}
	}, func() { close(out) })
	if err != nil {
		return nil, err
	}
	return out, nil
}

// PublishLogs sends a batch of log lines to the leader.
func (d *RemoteDispatcher) PublishLogs(ctx context.Context, nodeID string, p LogPublication) error {
	return d.post(ctx, "logs", nodeID, p, nil)
}

// LogSubscriptions streams from the manager that took the last call.
func (f *Failover) LogSubscriptions(ctx context.Context, nodeID string) (<-chan LogSubscription, error) {
	var ch <-chan LogSubscription
	err := f.call(func(d Dispatcher) (err error) {
		ld, ok := d.(LogDispatcher)
		if !ok {
			return fmt.Errorf("%w: this manager's dispatcher carries no logs", ErrUnavailable)
		}
		ch, err = ld.LogSubscriptions(ctx, nodeID)
		return err
	})
	return ch, err
}

// PublishLogs reaches the leader.
func (f *Failover) PublishLogs(ctx context.Context, nodeID string, p LogPublication) error {
	return f.call(func(d Dispatcher) error {
		ld, ok := d.(LogDispatcher)
		if !ok {
			return fmt.Errorf("%w: this manager's dispatcher carries no logs", ErrUnavailable)
		}
		return ld.PublishLogs(ctx, nodeID, p)
	})
}

// LogStream is a logs answer being read: call Recv until it returns an
// error; io.EOF means every line was read. Close it when done (it ends a
// Follow).
type LogStream struct {
	body   io.ReadCloser
	cancel context.CancelFunc
	sc     *bufio.Scanner
	err    error
}

// Recv returns the next message. At the end it returns io.EOF; a stream
// cut short (the leader changed, the connection dropped) returns an
// error wrapping ErrUnavailable: ask again, with Since past the last line.
func (s *LogStream) Recv() (LogMessage, error) {
	if s.err != nil {
		return LogMessage{}, s.err
	}
	for s.sc.Scan() {
		var f logFrame
		if err := json.Unmarshal(s.sc.Bytes(), &f); err != nil {
			s.err = fmt.Errorf("%w: a bad logs answer: %v", ErrUnavailable, err)
			break
		}
		switch {
		case f.Msg != nil:
			return *f.Msg, nil
		case f.End:
			s.err = io.EOF
		case f.Error != "":
			s.err = fmt.Errorf("%w: logs: %s", ErrUnavailable, f.Error)
		default:
			continue
		}
		break
	}
	if s.err == nil {
		s.err = fmt.Errorf("%w: the logs answer was cut short: %v", ErrUnavailable, s.sc.Err())
	}
	s.Close()
	return LogMessage{}, s.err
}

// Close ends the stream.
func (s *LogStream) Close() error {
	s.cancel()
	return s.body.Close()
}

// ServiceLogs reads the logs of a service's tasks (by ID or name) from
// every node that ran them. A task whose logs could not be read (its node
// down or not answering) comes as a message with Warning set: without
// Follow after all the lines, with Follow at once.
func (c *Client) ServiceLogs(ctx context.Context, idOrName string, opts LogOptions) (*LogStream, error) {
	return c.logs(ctx, "services/"+url.PathEscape(idOrName)+"/logs", opts)
}

// TaskLogs reads one task's logs; see ServiceLogs.
func (c *Client) TaskLogs(ctx context.Context, taskID string, opts LogOptions) (*LogStream, error) {
	return c.logs(ctx, "tasks/"+url.PathEscape(taskID)+"/logs", opts)
}

func (c *Client) logs(ctx context.Context, path string, opts LogOptions) (*LogStream, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	q := logQuery(opts)
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	resp, err := c.managers().stream(ctx, controlPrefix+path)
	if err != nil {
		cancel()
		return nil, err
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4*maxLogLineBytes)
	return &LogStream{body: resp.Body, cancel: cancel, sc: sc}, nil
}

// maxLogLineBytes is the longest line an executor writes (longer ones are
// split), with room for its JSON escaping.
const maxLogLineBytes = 64 << 10
