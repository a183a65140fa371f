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
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/swarm/api"
)

// The dispatcher over the network. A node is who its certificate says (the
// common name is the node ID), so a worker registers, heartbeats, reads
// assignments and reports status only as itself.

const dispatcherPrefix = "/v1/dispatcher/"

// assignmentMsg is one message of the assignment stream: the whole set
// first (Full), then what changed.
type assignmentMsg struct {
	Full    bool        `json:"full,omitempty"`
	Tasks   []*api.Task `json:"tasks,omitempty"`
	Removed []string    `json:"removed,omitempty"`
}

type heartbeatAnswer struct {
	HeartbeatPeriod time.Duration `json:"heartbeatPeriod"`
}

// dispatcherRoutes adds the dispatcher's endpoints to mux.
func (m *Manager) dispatcherRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST "+dispatcherPrefix+"register", m.asNode(func(w http.ResponseWriter, r *http.Request, node string) error {
		var desc api.NodeDescription
		if err := decodeBody(r, &desc); err != nil {
			return err
		}
		s, err := m.Register(r.Context(), node, desc)
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, s)
	}))
	mux.HandleFunc("POST "+dispatcherPrefix+"heartbeat", m.asNode(func(w http.ResponseWriter, r *http.Request, node string) error {
		p, err := m.Heartbeat(r.Context(), node)
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, heartbeatAnswer{HeartbeatPeriod: p})
	}))
	mux.HandleFunc("POST "+dispatcherPrefix+"status", m.asNode(func(w http.ResponseWriter, r *http.Request, node string) error {
		var updates []agent.StatusUpdate
		if err := decodeBody(r, &updates); err != nil {
			return err
		}
		if err := m.UpdateStatus(r.Context(), node, updates); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}))
	mux.HandleFunc("GET "+dispatcherPrefix+"assignments", m.asNode(func(w http.ResponseWriter, r *http.Request, node string) error {
		sets, err := m.Assignments(r.Context(), node)
		if err != nil {
			return err
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		enc := json.NewEncoder(w)
		// Send the set once whole, then only what changed: a node with
		// many tasks does not get them all again when one changes.
		first := true
		var sent map[string]uint64
		for set := range sets {
			msg := assignmentMsg{Full: first}
			now := make(map[string]uint64, len(set))
			for _, t := range set {
				now[t.ID] = t.Version
				if v, ok := sent[t.ID]; first || !ok || v != t.Version {
					msg.Tasks = append(msg.Tasks, t)
				}
			}
			for id := range sent {
				if _, ok := now[id]; !ok {
					msg.Removed = append(msg.Removed, id)
				}
			}
			if !first && len(msg.Tasks) == 0 && len(msg.Removed) == 0 {
				continue
			}
			first, sent = false, now
			if enc.Encode(msg) != nil || rc.Flush() != nil {
				return nil
			}
		}
		return nil
	}))
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

// asNode authenticates the caller by its client certificate (the TLS
// handshake verified it): the node ID is its common name. A node may act
// only as itself.
func (m *Manager) asNode(h func(http.ResponseWriter, *http.Request, string) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, _, err := peerIdentity(r)
		if err != nil {
			writeError(w, err)
			return
		}
		if claimed := r.URL.Query().Get("node"); claimed != "" && claimed != id {
			writeError(w, fmt.Errorf("%w: node %s cannot act as node %s", errForbidden, id, claimed))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		if err := h(w, r, id); err != nil {
			writeError(w, err)
		}
	}
}

// peerIdentity is the caller's node ID and role, from its verified
// certificate (common name, organizational unit).
func peerIdentity(r *http.Request) (id, role string, err error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return "", "", fmt.Errorf("%w: a node certificate is required (mutual TLS)", errForbidden)
	}
	c := r.TLS.PeerCertificates[0]
	if len(c.Subject.OrganizationalUnit) > 0 {
		role = c.Subject.OrganizationalUnit[0]
	}
	return c.Subject.CommonName, role, nil
}

// RemoteDispatcher is a Dispatcher on the managers across the network. It
// follows the leader: a manager that is not the leader names it, and the
// call goes there; the managers' addresses it learns at registration let
// it fail over without configuration.
type RemoteDispatcher struct {
	// Addrs are managers' management addresses (host:port); at least one.
	Addrs []string
	// TLS holds this node's certificate (its common name is the node ID)
	// and the cluster's CA.
	TLS *tls.Config

	mu     sync.Mutex
	cur    string // the manager that took the last call
	client *http.Client
}

var _ Dispatcher = (*RemoteDispatcher)(nil)

func (d *RemoteDispatcher) httpClient() *http.Client {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.client == nil {
		conf := d.TLS.Clone()
		conf.NextProtos = []string{ProtoAPI}
		d.client = &http.Client{Transport: &http.Transport{TLSClientConfig: conf, ForceAttemptHTTP2: true,
			TLSHandshakeTimeout: 5 * time.Second, ResponseHeaderTimeout: 15 * time.Second, IdleConnTimeout: time.Minute}}
	}
	return d.client
}

// order is the addresses to try: the last that answered, then the rest.
func (d *RemoteDispatcher) order() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]string, 0, len(d.Addrs)+1)
	if d.cur != "" {
		out = append(out, d.cur)
	}
	for _, a := range d.Addrs {
		if a != d.cur {
			out = append(out, a)
		}
	}
	return out
}

func (d *RemoteDispatcher) learn(addrs []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, a := range addrs {
		if a != "" && !slices.Contains(d.Addrs, a) {
			d.Addrs = append(d.Addrs, a)
		}
	}
}

// do runs one call on the managers in turn until one takes it, going to
// the leader a refusal names first. Errors about the call itself come back
// at once.
func (d *RemoteDispatcher) do(ctx context.Context, fn func(addr string) error) error {
	addrs := d.order()
	if len(addrs) == 0 {
		return errors.New("swarm: remote dispatcher has no manager addresses")
	}
	var errs []error
	tried := map[string]bool{}
	for len(addrs) > 0 {
		addr := addrs[0]
		addrs = addrs[1:]
		if tried[addr] {
			continue
		}
		tried[addr] = true
		err := fn(addr)
		if err == nil {
			d.mu.Lock()
			d.cur = addr
			d.mu.Unlock()
			return nil
		}
		if !Retryable(err) || ctx.Err() != nil {
			return err
		}
		errs = append(errs, err)
		var nl *NotLeaderError
		if errors.As(err, &nl) && nl.Leader != "" && !tried[nl.Leader] {
			d.learn([]string{nl.Leader})
			addrs = append([]string{nl.Leader}, addrs...)
		}
	}
	return errors.Join(errs...)
}

func (d *RemoteDispatcher) url(addr, op, node string) string {
	return "https://" + addr + dispatcherPrefix + op + "?node=" + node
}

func (d *RemoteDispatcher) post(ctx context.Context, op, node string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	return d.do(ctx, func(addr string) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.url(addr, op, node), bytes.NewReader(b))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := d.httpClient().Do(req)
		if err != nil {
			return fmt.Errorf("swarm: manager %s: %w", addr, err)
		}
		defer resp.Body.Close()
		if err := answerError(addr, resp); err != nil {
			return err
		}
		if out != nil {
			if err := json.NewDecoder(io.LimitReader(resp.Body, maxBody)).Decode(out); err != nil {
				return fmt.Errorf("swarm: manager %s: bad answer: %v", addr, err)
			}
		}
		return nil
	})
}

// Register registers this node and learns the managers.
func (d *RemoteDispatcher) Register(ctx context.Context, nodeID string, desc api.NodeDescription) (Session, error) {
	var s Session
	err := d.post(ctx, "register", nodeID, desc, &s)
	if err == nil {
		d.learn(s.Managers)
	}
	return s, err
}

// Heartbeat reports this node alive and returns the period to keep.
func (d *RemoteDispatcher) Heartbeat(ctx context.Context, nodeID string) (time.Duration, error) {
	var a heartbeatAnswer
	err := d.post(ctx, "heartbeat", nodeID, struct{}{}, &a)
	return a.HeartbeatPeriod, err
}

// UpdateStatus reports task states.
func (d *RemoteDispatcher) UpdateStatus(ctx context.Context, nodeID string, updates []agent.StatusUpdate) error {
	return d.post(ctx, "status", nodeID, updates, nil)
}

// Assignments streams this node's assignment sets until ctx ends or the
// connection drops (the channel closes; call again). The wire carries
// changes; the channel carries whole sets.
func (d *RemoteDispatcher) Assignments(ctx context.Context, nodeID string) (<-chan []*api.Task, error) {
	var resp *http.Response
	var from string
	err := d.do(ctx, func(addr string) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.url(addr, "assignments", nodeID), nil)
		if err != nil {
			return err
		}
		r, err := d.httpClient().Do(req)
		if err != nil {
			return fmt.Errorf("swarm: manager %s: %w", addr, err)
		}
		if err := answerError(addr, r); err != nil {
			r.Body.Close()
			return err
		}
		if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-ndjson") {
			r.Body.Close()
			return fmt.Errorf("swarm: manager %s: assignments answered as %q", addr, ct)
		}
		resp, from = r, addr
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make(chan []*api.Task, 1)
	go func() {
		defer close(out)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), maxBody)
		have := map[string]*api.Task{}
		for sc.Scan() {
			var msg assignmentMsg
			if err := json.Unmarshal(sc.Bytes(), &msg); err != nil {
				return // a broken stream: the worker connects again
			}
			if msg.Full {
				clear(have)
			}
			for _, t := range msg.Tasks {
				have[t.ID] = t
			}
			for _, id := range msg.Removed {
				delete(have, id)
			}
			set := make([]*api.Task, 0, len(have))
			for _, t := range have {
				set = append(set, t)
			}
			slices.SortFunc(set, func(a, b *api.Task) int { return strings.Compare(a.ID, b.ID) })
			select {
			case out <- set:
			case <-ctx.Done():
				return
			}
		}
		_ = from
	}()
	return out, nil
}
