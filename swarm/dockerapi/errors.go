package dockerapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"

	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// Errors of the handler and the conversions.
var (
	// ErrUnsupported is wrapped by every refusal of a Docker feature that
	// Shoal does not have (an endpoint, or a field of a spec).
	ErrUnsupported = errors.New("dockerapi: not supported by Shoal")
	// ErrBadRequest is wrapped by errors about a malformed request: bad
	// JSON, filters or query parameters.
	ErrBadRequest = errors.New("dockerapi: bad request")
)

// errNotManager is dockerd's answer on a worker.
var errNotManager = &httpError{status: http.StatusServiceUnavailable,
	msg: "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. Please run this command on a manager node or promote the current node to a manager."}

// UnsupportedField is a field of a Docker spec that Shoal cannot
// represent, by its path in Docker's JSON (TaskTemplate.ContainerSpec.TTY).
type UnsupportedField struct {
	Path string
	// Hint names the docker CLI flag that sets it, when there is one.
	Hint string
}

// UnsupportedFieldsError lists every field of a Docker spec that Shoal
// cannot represent: the spec is refused, never taken with them dropped.
type UnsupportedFieldsError struct {
	Fields []UnsupportedField
}

func (e *UnsupportedFieldsError) Error() string {
	parts := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		parts[i] = f.Path
		if f.Hint != "" {
			parts[i] += " (" + f.Hint + ")"
		}
	}
	return "dockerapi: not supported by Shoal: " + strings.Join(parts, ", ")
}

// Unwrap makes it an ErrUnsupported.
func (e *UnsupportedFieldsError) Unwrap() error { return ErrUnsupported }

// httpError is an answer with its own status.
type httpError struct {
	status int
	msg    string
	err    error // wrapped, for errors.Is
}

func (e *httpError) Error() string { return e.msg }
func (e *httpError) Unwrap() error { return e.err }

// notSupported answers 501 for what Shoal does not serve.
func notSupported(format string, args ...any) error {
	return &httpError{status: http.StatusNotImplemented, msg: "not supported by Shoal: " + fmt.Sprintf(format, args...), err: ErrUnsupported}
}

// notYet answers 501 for what Shoal will serve later.
func notYet(format string, args ...any) error {
	return &httpError{status: http.StatusNotImplemented, msg: "not supported by Shoal yet: " + fmt.Sprintf(format, args...), err: ErrUnsupported}
}

func badRequest(format string, args ...any) error {
	return &httpError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...), err: ErrBadRequest}
}

func notFound(format string, args ...any) error {
	return &httpError{status: http.StatusNotFound, msg: fmt.Sprintf(format, args...), err: swarm.ErrNotFound}
}

// statusOf is the HTTP status that says what err is.
func statusOf(err error) int {
	var he *httpError
	switch {
	case errors.As(err, &he):
		return he.status
	case errors.Is(err, ErrUnsupported), errors.Is(err, ErrBadRequest), errors.Is(err, api.ErrInvalidSpec):
		return http.StatusBadRequest
	case errors.Is(err, swarm.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, swarm.ErrNameInUse), errors.Is(err, raftstore.ErrConflict):
		return http.StatusConflict
	case errors.Is(err, swarm.ErrNotManagerLeader), errors.Is(err, raftstore.ErrNotLeader), errors.Is(err, raftstore.ErrNoQuorum),
		errors.Is(err, swarm.ErrUnavailable), errors.Is(err, swarm.ErrLocked), errors.Is(err, swarm.ErrNotStarted),
		errors.Is(err, raftstore.ErrNotStarted), errors.Is(err, net.ErrClosed), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable
	case errors.Is(err, swarm.ErrBadUnlockKey):
		return http.StatusBadRequest
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// managerPrefix is how the Go client names the manager that answered; the
// docker CLI user needs the answer, not which manager gave it.
var managerPrefix = regexp.MustCompile(`swarm: manager [^ ]+: `)

// messageOf is err as a person reads it in "Error response from daemon: ...".
func messageOf(err error) string {
	var rve *swarm.RemoteValidationError
	if errors.As(err, &rve) {
		return rve.ValidationError.Error()
	}
	// errors.Join puts one manager's answer a line: one line for the CLI.
	var lines []string
	for _, l := range strings.Split(err.Error(), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, trimPrefixes(collapseRepeats(managerPrefix.ReplaceAllString(l, ""))))
		}
	}
	msg := strings.Join(lines, "; ")
	switch {
	case errors.Is(err, raftstore.ErrConflict):
		msg += " (the object changed since it was read: read it again and retry)"
	}
	return msg
}

// trimPrefixes drops package prefixes: they say where an error comes
// from to a Go caller; the CLI user reads the rest.
func trimPrefixes(msg string) string {
	for _, p := range []string{"dockerapi: ", "api: invalid spec: ", "swarm: ", "raftstore: "} {
		msg = strings.TrimPrefix(msg, p)
	}
	return msg
}

// collapseRepeats drops a leading run of ": "-separated parts that the
// next parts repeat ("swarm: name in use: swarm: name in use: service
// ..."), as errors wrapped on both ends of the control API read; the
// repeat may say more at its end.
func collapseRepeats(msg string) string {
	parts := strings.Split(msg, ": ")
	for k := len(parts) / 2; k >= 1; k-- {
		if slices.Equal(parts[:k-1], parts[k:2*k-1]) && strings.HasPrefix(parts[2*k-1], parts[k-1]) {
			return collapseRepeats(strings.Join(parts[k:], ": "))
		}
	}
	return msg
}
