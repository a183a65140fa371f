package swarm

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm/api"
)

// The dispatcher over the network: JSON over HTTP/2 with mutual TLS. A
// node is who its certificate says (the common name is the node ID), so a
// worker can only register, heartbeat, read assignments and report status
// as itself.

const dispatcherPrefix = "/v1/dispatcher/"

// errorBody is every error answer.
type errorBody struct {
	Error string `json:"error"`
	// Code is "not_leader", "unavailable", "not_found", "forbidden",
	// "bad_request" or "internal".
	Code string `json:"code"`
}

// DispatcherHandler serves the dispatcher to workers. Serve it with a TLS
// config that requires and verifies client certificates.
func (m *Manager) DispatcherHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+dispatcherPrefix+"register", m.withNode(func(w http.ResponseWriter, r *http.Request, node string) error {
		var desc api.NodeDescription
		if err := decodeBody(r, &desc); err != nil {
			return err
		}
		return m.Register(r.Context(), node, desc)
	}))
	mux.HandleFunc("POST "+dispatcherPrefix+"heartbeat", m.withNode(func(w http.ResponseWriter, r *http.Request, node string) error {
		return m.Heartbeat(r.Context(), node)
	}))
	mux.HandleFunc("POST "+dispatcherPrefix+"status", m.withNode(func(w http.ResponseWriter, r *http.Request, node string) error {
		var updates []agent.StatusUpdate
		if err := decodeBody(r, &updates); err != nil {
			return err
		}
		return m.UpdateStatus(r.Context(), node, updates)
	}))
	mux.HandleFunc("GET "+dispatcherPrefix+"assignments", m.withNode(func(w http.ResponseWriter, r *http.Request, node string) error {
		sets, err := m.Assignments(r.Context(), node)
		if err != nil {
			return err
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		enc := json.NewEncoder(w)
		for set := range sets {
			if set == nil {
				set = []*api.Task{}
			}
			if enc.Encode(set) != nil || rc.Flush() != nil {
				return nil
			}
		}
		return nil
	}))
	return mux
}

type badRequest struct{ error }

func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 16<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest{fmt.Errorf("request body: %v", err)}
	}
	return nil
}

// withNode authenticates the caller by its client certificate and answers
// errors as JSON.
func (m *Manager) withNode(h func(http.ResponseWriter, *http.Request, string) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			writeError(w, http.StatusUnauthorized, "forbidden", errors.New("a node certificate is required (mutual TLS)"))
			return
		}
		node := r.TLS.PeerCertificates[0].Subject.CommonName
		if claimed := r.URL.Query().Get("node"); claimed != "" && claimed != node {
			writeError(w, http.StatusForbidden, "forbidden", fmt.Errorf("node %s cannot act as node %s", node, claimed))
			return
		}
		err := h(w, r, node)
		var br badRequest
		switch {
		case err == nil:
			if w.Header().Get("Content-Type") == "" {
				w.WriteHeader(http.StatusNoContent)
			}
		case errors.As(err, &br), errors.Is(err, api.ErrInvalidSpec):
			writeError(w, http.StatusBadRequest, "bad_request", err)
		case errors.Is(err, ErrNotFound):
			writeError(w, http.StatusNotFound, "not_found", err)
		case errors.Is(err, ErrNotManagerLeader), errors.Is(err, raftstore.ErrNotLeader):
			writeError(w, http.StatusServiceUnavailable, "not_leader", err)
		case errors.Is(err, raftstore.ErrNoQuorum), errors.Is(err, ErrLocked), errors.Is(err, ErrNotStarted):
			writeError(w, http.StatusServiceUnavailable, "unavailable", err)
		default:
			writeError(w, http.StatusInternalServerError, "internal", err)
		}
	}
}

func writeError(w http.ResponseWriter, status int, code string, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(errorBody{Error: err.Error(), Code: code})
}

// RemoteDispatcher is a Dispatcher on a manager across the network.
type RemoteDispatcher struct {
	// Addr is the manager's host:port.
	Addr string
	// TLS holds this node's certificate (its common name is the node ID)
	// and the cluster's CA.
	TLS *tls.Config

	client *http.Client
}

var _ Dispatcher = (*RemoteDispatcher)(nil)

func (d *RemoteDispatcher) httpClient() *http.Client {
	if d.client == nil {
		d.client = &http.Client{Transport: &http.Transport{TLSClientConfig: d.TLS, ForceAttemptHTTP2: true,
			TLSHandshakeTimeout: 5 * time.Second, ResponseHeaderTimeout: 10 * time.Second}}
	}
	return d.client
}

func (d *RemoteDispatcher) url(op, node string) string {
	return "https://" + d.Addr + dispatcherPrefix + op + "?node=" + node
}

func (d *RemoteDispatcher) post(ctx context.Context, op, node string, body any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.url(op, node), bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := d.httpClient().Do(req)
	if err != nil {
		return fmt.Errorf("swarm: manager %s: %w", d.Addr, err)
	}
	defer resp.Body.Close()
	return answerError(d.Addr, resp)
}

// answerError turns an error answer into an error; nil for success.
func answerError(addr string, resp *http.Response) error {
	if resp.StatusCode < 300 {
		return nil
	}
	var e errorBody
	json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&e)
	if e.Error == "" {
		e.Error = resp.Status
	}
	err := fmt.Errorf("swarm: manager %s: %s", addr, e.Error)
	switch e.Code {
	case "not_leader":
		err = fmt.Errorf("%w: %s", ErrNotManagerLeader, err)
	case "not_found":
		err = fmt.Errorf("%w: %s", ErrNotFound, err)
	case "bad_request":
		err = fmt.Errorf("%w: %s", api.ErrInvalidSpec, err)
	case "unavailable":
		err = fmt.Errorf("%w: %s", raftstore.ErrNoQuorum, err)
	}
	return err
}

// Register registers this node.
func (d *RemoteDispatcher) Register(ctx context.Context, nodeID string, desc api.NodeDescription) error {
	return d.post(ctx, "register", nodeID, desc)
}

// Heartbeat reports this node alive.
func (d *RemoteDispatcher) Heartbeat(ctx context.Context, nodeID string) error {
	return d.post(ctx, "heartbeat", nodeID, struct{}{})
}

// UpdateStatus reports task states.
func (d *RemoteDispatcher) UpdateStatus(ctx context.Context, nodeID string, updates []agent.StatusUpdate) error {
	return d.post(ctx, "status", nodeID, updates)
}

// Assignments streams this node's assignment sets until ctx ends or the
// connection drops (the channel closes; call again).
func (d *RemoteDispatcher) Assignments(ctx context.Context, nodeID string) (<-chan []*api.Task, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.url("assignments", nodeID), nil)
	if err != nil {
		return nil, err
	}
	resp, err := d.httpClient().Do(req)
	if err != nil {
		return nil, fmt.Errorf("swarm: manager %s: %w", d.Addr, err)
	}
	if err := answerError(d.Addr, resp); err != nil {
		resp.Body.Close()
		return nil, err
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-ndjson") {
		resp.Body.Close()
		return nil, fmt.Errorf("swarm: manager %s: assignments answered as %q", d.Addr, ct)
	}
	out := make(chan []*api.Task, 1)
	go func() {
		defer close(out)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 64<<20)
		for sc.Scan() {
			var set []*api.Task
			if err := json.Unmarshal(sc.Bytes(), &set); err != nil {
				return
			}
			select {
			case out <- set:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}
