package swarm

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"

	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm/api"
)

// The wire format of the node and control API: JSON over HTTP/2 on the
// management port (see docs/ARCHITECTURE.md for why not gRPC). Every error
// answer is an errorBody; its code tells the client which error to return.

// maxBody bounds a request body (specs, status batches).
const maxBody = 16 << 20

// maxAnswer bounds an answer a client reads. Answers are larger than
// requests: a list of 20,000 tasks is over maxBody. They come from a
// manager the client authenticated, so the bound only stops a runaway.
const maxAnswer = 512 << 20

// errorBody is every error answer.
type errorBody struct {
	Error string `json:"error"`
	// Code is one of the codes below.
	Code string `json:"code"`
	// Problems are a bad spec's problems, with field paths.
	Problems []api.Problem `json:"problems,omitempty"`
	// Leader is the leader's address, when a manager that is not the
	// leader cannot take the call.
	Leader string `json:"leader,omitempty"`
}

// Error codes.
const (
	codeBadRequest  = "bad_request"
	codeNotFound    = "not_found"
	codeNameInUse   = "name_in_use"
	codeConflict    = "conflict"
	codeNotLeader   = "not_leader"
	codeNoQuorum    = "no_quorum"
	codeUnavailable = "unavailable" // locked, starting, closing
	codeForbidden   = "forbidden"
	codeGone        = "gone" // events no longer kept
	codeAddrNeeded  = "addr_required"
	codeTooLarge    = "too_large"
	codeInternal    = "internal"
)

type badRequest struct{ error }

func (b badRequest) Unwrap() error { return b.error }

func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest{fmt.Errorf("%w: request body: %v", api.ErrInvalidSpec, err)}
	}
	return nil
}

// writeError answers err with the status and code that say what it is.
func writeError(w http.ResponseWriter, err error) {
	status, body := http.StatusInternalServerError, errorBody{Error: err.Error(), Code: codeInternal}
	var ve *api.ValidationError
	var nl *raftstore.NotLeaderError
	var ce *raftstore.ConflictError
	switch {
	case errors.Is(err, errAddrRequired):
		status, body.Code = http.StatusBadRequest, codeAddrNeeded
	case errors.As(err, &ve):
		status, body.Code, body.Problems = http.StatusBadRequest, codeBadRequest, ve.Problems
	case errors.Is(err, api.ErrInvalidSpec), errors.As(err, new(badRequest)):
		status, body.Code = http.StatusBadRequest, codeBadRequest
	case errors.Is(err, errForbidden):
		status, body.Code = http.StatusForbidden, codeForbidden
	case errors.Is(err, ErrNotFound):
		status, body.Code = http.StatusNotFound, codeNotFound
	case errors.Is(err, ErrNameInUse):
		status, body.Code = http.StatusConflict, codeNameInUse
	case errors.As(err, &ce):
		status, body.Code = http.StatusConflict, codeConflict
	case errors.As(err, &nl):
		status, body.Code, body.Leader = http.StatusServiceUnavailable, codeNotLeader, nl.LeaderAddr
	case errors.Is(err, ErrNotManagerLeader):
		status, body.Code = http.StatusServiceUnavailable, codeNotLeader
	case errors.Is(err, raftstore.ErrNoQuorum):
		status, body.Code = http.StatusServiceUnavailable, codeNoQuorum
	case errors.Is(err, ErrLocked), errors.Is(err, ErrNotStarted), errors.Is(err, raftstore.ErrNotStarted),
		errors.Is(err, net.ErrClosed), errors.Is(err, ErrUnavailable):
		status, body.Code = http.StatusServiceUnavailable, codeUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(body)
}

var errForbidden = errors.New("swarm: forbidden")

// answerError turns an error answer into the error it stands for; nil for
// a success.
func answerError(addr string, resp *http.Response) error {
	if resp.StatusCode < 300 {
		return nil
	}
	var e errorBody
	json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&e)
	if e.Error == "" {
		e.Error = resp.Status
	}
	msg := fmt.Sprintf("swarm: manager %s: %s", addr, e.Error)
	switch e.Code {
	case codeBadRequest:
		if len(e.Problems) > 0 {
			return &RemoteValidationError{Addr: addr, ValidationError: api.ValidationError{Problems: e.Problems}}
		}
		return fmt.Errorf("%w: %s", api.ErrInvalidSpec, msg)
	case codeNotFound:
		return fmt.Errorf("%w: %s", ErrNotFound, msg)
	case codeNameInUse:
		return fmt.Errorf("%w: %s", ErrNameInUse, msg)
	case codeConflict:
		return fmt.Errorf("%w: %s", raftstore.ErrConflict, msg)
	case codeNotLeader:
		return &NotLeaderError{Addr: addr, Leader: e.Leader, msg: msg}
	case codeNoQuorum:
		return fmt.Errorf("%w: %s", raftstore.ErrNoQuorum, msg)
	case codeUnavailable:
		return fmt.Errorf("%w: %s", ErrUnavailable, msg)
	case codeForbidden:
		return fmt.Errorf("%w: %s", errForbidden, msg)
	case codeGone:
		return fmt.Errorf("%w: %s", raftstore.ErrResync, msg)
	case codeAddrNeeded:
		return fmt.Errorf("%w: %s", errAddrRequired, msg)
	}
	if resp.StatusCode >= 500 {
		// A failure of that manager (or a proxy before it), not of the
		// call: another manager may take it.
		return fmt.Errorf("%w: %s", ErrUnavailable, msg)
	}
	return errors.New(msg)
}

// RemoteValidationError is a bad spec refused by a remote manager, with
// the problems' field paths.
type RemoteValidationError struct {
	Addr string
	api.ValidationError
}

func (e *RemoteValidationError) Error() string {
	return fmt.Sprintf("swarm: manager %s: %s", e.Addr, e.ValidationError.Error())
}

// Unwrap gives the validation error (and through it api.ErrInvalidSpec).
func (e *RemoteValidationError) Unwrap() error { return &e.ValidationError }

// NotLeaderError is a remote manager's refusal because another leads; Leader
// is the leader's address when known.
type NotLeaderError struct {
	Addr, Leader string
	msg          string
}

func (e *NotLeaderError) Error() string { return e.msg }

// Unwrap makes it an ErrNotManagerLeader.
func (e *NotLeaderError) Unwrap() error { return ErrNotManagerLeader }
