package dockerapi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"

	"github.com/shoalproject/shoal/swarm"
)

// Service and task logs (docker service logs): the lines the managers
// gather from the nodes, as dockerd writes them: the stdcopy multiplexed
// stream (an 8-byte header per frame: the stream, three zero bytes, the
// length), each line "[TIMESTAMP ][DETAILS ]LINE\n". The docker CLI asks
// for details and reads com.docker.swarm.node.id, service.id and task.id
// from them to print its "NAME.SLOT.TASKID@NODE |" prefix. Shoal has no
// TTY tasks, so the stream is always multiplexed.

// logTimeFormat is dockerd's timestamp of log lines (fixed width).
const logTimeFormat = "2006-01-02T15:04:05.000000000Z07:00"

// logQuery is a logs request's parameters.
type logQuery struct {
	opts       swarm.LogOptions
	timestamps bool
	details    bool
}

// parseLogQuery reads follow, tail, since, timestamps, stdout, stderr and
// details as dockerd does, with clear refusals.
func parseLogQuery(r *http.Request) (logQuery, error) {
	var q logQuery
	var err error
	bools := map[string]*bool{"follow": &q.opts.Follow, "stdout": &q.opts.Stdout, "stderr": &q.opts.Stderr,
		"timestamps": &q.timestamps, "details": &q.details}
	for name, p := range bools {
		if *p, err = queryBool(r, name); err != nil {
			return q, err
		}
	}
	if !q.opts.Stdout && !q.opts.Stderr {
		return q, badRequest("Bad parameters: you must choose at least one stream (stdout=1 or stderr=1)")
	}
	switch tail := r.URL.Query().Get("tail"); tail {
	case "", "all":
	default:
		n, err := strconv.Atoi(tail)
		switch {
		case err != nil:
			return q, badRequest("invalid value for tail: %q: give a number of lines or \"all\"", tail)
		case n < 0:
			return q, badRequest("invalid value for tail: %d: negative tail values are not supported; give a number of lines or \"all\"", n)
		case n == 0:
			q.opts.Tail = swarm.TailNone
		case n > swarm.MaxLogTail:
			return q, badRequest("invalid value for tail: %d: at most %d lines per task", n, swarm.MaxLogTail)
		default:
			q.opts.Tail = n
		}
	}
	if since := r.URL.Query().Get("since"); since != "" && since != "0" {
		if q.opts.Since, err = parseLogSince(since); err != nil {
			return q, err
		}
	}
	return q, nil
}

// parseLogSince reads since as the CLI sends it (seconds since the epoch,
// with up to nine decimals), or as an RFC 3339 time.
func parseLogSince(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	secs, frac, _ := strings.Cut(s, ".")
	sec, err := strconv.ParseInt(secs, 10, 64)
	var nsec int64
	if err == nil && frac != "" {
		if len(frac) > 9 || strings.TrimLeft(frac, "0123456789") != "" {
			err = errors.New("bad fraction")
		} else {
			nsec, _ = strconv.ParseInt((frac + "000000000")[:9], 10, 64)
		}
	}
	if err != nil || sec < 0 || sec > math.MaxInt64/int64(time.Second)-1 {
		return time.Time{}, badRequest("invalid value for since: %q: give a Unix time in seconds (1700000000.5) or an RFC 3339 time", s)
	}
	return time.Unix(sec, nsec), nil
}

// serviceLogs answers docker service logs SERVICE.
func (h *Handler) serviceLogs(w http.ResponseWriter, r *http.Request) error {
	q, err := parseLogQuery(r)
	if err != nil {
		return err
	}
	svc, err := h.findService(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	s, err := h.Backend.ServiceLogs(r.Context(), svc.ID, q.opts)
	if err != nil {
		return err
	}
	return h.writeLogs(w, s, q)
}

// taskLogs answers docker service logs TASK.
func (h *Handler) taskLogs(w http.ResponseWriter, r *http.Request) error {
	q, err := parseLogQuery(r)
	if err != nil {
		return err
	}
	t, err := h.findTask(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	s, err := h.Backend.TaskLogs(r.Context(), t.ID, q.opts)
	if err != nil {
		return err
	}
	return h.writeLogs(w, s, q)
}

// writeLogs copies a log stream as dockerd writes one. A task whose logs
// could not be read is named as dockerd names it: without follow in one
// system-error frame at the end ("warning: incomplete log stream ...",
// which the CLI prints as an error); with follow in a line on the task's
// stderr at once, so that the rest goes on.
func (h *Handler) writeLogs(w http.ResponseWriter, s *swarm.LogStream, q logQuery) error {
	defer s.Close()
	w.Header().Set("Content-Type", "application/vnd.docker.multiplexed-stream")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	rc.Flush()
	fw := &frameWriter{w: w}
	var incomplete []string
	// A reader goroutine lets the writer flush whenever nothing more is
	// waiting: one flush per burst, not per line. Closing s (on return)
	// ends it.
	type recv struct {
		m   swarm.LogMessage
		err error
	}
	msgs := make(chan recv, 64)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			m, err := s.Recv()
			select {
			case msgs <- recv{m, err}:
			case <-stop:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	for {
		var got recv
		select {
		case got = <-msgs:
		default:
			if rc.Flush() != nil {
				return nil
			}
			got = <-msgs
		}
		m, err := got.m, got.err
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			fw.frame(stdcopy.Systemerr, "Error grabbing logs: "+strings.TrimPrefix(messageOf(err), "swarm: manager unavailable: ")+"\n")
			rc.Flush()
			return nil
		}
		stream, line := stdcopy.Stdout, m.Line
		switch {
		case m.Warning != "" && !q.opts.Follow:
			incomplete = append(incomplete, fmt.Sprintf("task %s: %s", m.TaskID, m.Warning))
			continue
		case m.Warning != "":
			stream, line = stdcopy.Stderr, "warning: the logs of this task could not be read: "+m.Warning
		case m.Stream == swarm.StreamStderr:
			stream = stdcopy.Stderr
		}
		var b strings.Builder
		if q.timestamps {
			b.WriteString(m.Time.UTC().Format(logTimeFormat))
			b.WriteByte(' ')
		}
		if q.details {
			b.WriteString(logDetails(m))
			b.WriteByte(' ')
		}
		b.WriteString(line)
		b.WriteByte('\n')
		if fw.frame(stream, b.String()) != nil {
			return nil // the client went away
		}
	}
	if len(incomplete) > 0 {
		fw.frame(stdcopy.Systemerr, "Error grabbing logs: warning: incomplete log stream. some logs could not be retrieved for the following reasons: "+
			strings.Join(incomplete, ", ")+"\n")
	}
	rc.Flush()
	return nil
}

// logDetails are the attributes dockerd puts before a swarm log line with
// details=true, URL-escaped, comma-separated.
func logDetails(m swarm.LogMessage) string {
	attrs := [][2]string{{"com.docker.swarm.node.id", m.NodeID}, {"com.docker.swarm.service.id", m.ServiceID}, {"com.docker.swarm.task.id", m.TaskID}}
	parts := make([]string, len(attrs))
	for i, a := range attrs {
		parts[i] = url.QueryEscape(a[0]) + "=" + url.QueryEscape(a[1])
	}
	return strings.Join(parts, ",")
}

// frameWriter writes stdcopy frames.
type frameWriter struct {
	w   io.Writer
	hdr [8]byte
}

func (f *frameWriter) frame(stream stdcopy.StdType, payload string) error {
	f.hdr = [8]byte{byte(stream)}
	binary.BigEndian.PutUint32(f.hdr[4:], uint32(len(payload)))
	if _, err := f.w.Write(f.hdr[:]); err != nil {
		return err
	}
	_, err := io.WriteString(f.w, payload)
	return err
}
