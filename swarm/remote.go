package swarm

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/ca"
)

// The dispatcher over the network. A node is who its certificate says (the
// common name is the node ID), so a worker registers, heartbeats, reads
// assignments and reports status only as itself.

const dispatcherPrefix = "/v1/dispatcher/"

// assignmentKeepalive is how often an idle assignment stream says it
// lives; a worker that hears nothing for three times as long reconnects.
var assignmentKeepalive = 10 * time.Second

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
		// A new node's role is the one its certificate gives it.
		role := api.RoleWorker
		if _, r, _ := peerIdentity(r); r == string(api.RoleManager) {
			role = api.RoleManager
		}
		d, err := m.dispatcher()
		if err != nil {
			return err
		}
		s, err := d.register(r.Context(), node, role, desc)
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, s)
	}))
	mux.HandleFunc("GET "+dispatcherPrefix+"node", m.asNode(func(w http.ResponseWriter, r *http.Request, node string) error {
		n, err := m.Node(node)
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, n)
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
	mux.HandleFunc("POST "+dispatcherPrefix+"network-ack", m.asNode(func(w http.ResponseWriter, r *http.Request, node string) error {
		var a networkAck
		if err := decodeBody(r, &a); err != nil {
			return err
		}
		if err := m.AckNetwork(r.Context(), node, a.Version); err != nil {
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
		// The assignment once whole, then only what changed.
		snd := newAssignmentSender()
		keepalive := time.NewTicker(assignmentKeepalive)
		defer keepalive.Stop()
		for {
			var a *api.Assignment
			select {
			case v, ok := <-sets:
				if !ok {
					return nil
				}
				a = v
			case <-keepalive.C:
				// An empty line of news: the worker knows the stream
				// lives (a half-open connection would be silent).
				if enc.Encode(assignmentMsg{}) != nil || rc.Flush() != nil {
					return nil
				}
				continue
			}
			msg, changed := snd.next(a)
			if !changed {
				continue
			}
			if enc.Encode(msg) != nil || rc.Flush() != nil {
				return nil
			}
			keepalive.Reset(assignmentKeepalive)
		}
	}))
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

// asNode authenticates the caller by its client certificate (the TLS
// handshake verified it): the node ID is its common name. A node may act
// only as itself. Arbiters are not nodes: they are refused.
func (m *Manager) asNode(h func(http.ResponseWriter, *http.Request, string) error) http.HandlerFunc {
	return m.asMember(false, h)
}

// asMember is asNode that also lets arbiters in when arbiters is set
// (certificate renewal is the one call they make besides asking to vote).
func (m *Manager) asMember(arbiters bool, h func(http.ResponseWriter, *http.Request, string) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, role, err := peerIdentity(r)
		if err == nil && role == string(ca.RoleArbiter) && !arbiters {
			err = fmt.Errorf("%w: %s is an arbiter: it carries Raft and calls no node or control API", errForbidden, id)
		}
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

	once sync.Once
	mc   *managers
}

var _ Dispatcher = (*RemoteDispatcher)(nil)

func (d *RemoteDispatcher) managers() *managers {
	d.once.Do(func() { d.mc = &managers{addrs: slices.Clone(d.Addrs), tls: d.TLS, period: DefaultHeartbeatPeriod} })
	return d.mc
}

func dispatcherPath(op, node string) string {
	return dispatcherPrefix + op + "?node=" + url.QueryEscape(node)
}

func (d *RemoteDispatcher) post(ctx context.Context, op, node string, body, out any) error {
	return d.managers().call(ctx, http.MethodPost, dispatcherPath(op, node), body, out)
}

// Register registers this node and learns the managers.
func (d *RemoteDispatcher) Register(ctx context.Context, nodeID string, desc api.NodeDescription) (Session, error) {
	var s Session
	err := d.post(ctx, "register", nodeID, desc, &s)
	if err == nil {
		d.managers().learn(s.Managers)
		d.managers().setPeriod(s.HeartbeatPeriod)
	}
	return s, err
}

// Heartbeat reports this node alive and returns the period to keep.
func (d *RemoteDispatcher) Heartbeat(ctx context.Context, nodeID string) (time.Duration, error) {
	var a heartbeatAnswer
	err := d.post(ctx, "heartbeat", nodeID, struct{}{}, &a)
	if err == nil {
		d.managers().setPeriod(a.HeartbeatPeriod)
	}
	return a.HeartbeatPeriod, err
}

// UpdateStatus reports task states.
func (d *RemoteDispatcher) UpdateStatus(ctx context.Context, nodeID string, updates []agent.StatusUpdate) error {
	return d.post(ctx, "status", nodeID, updates, nil)
}

// Assignments streams this node's assignments until ctx ends or the
// connection drops (the channel closes; call again). The wire carries
// changes; the channel carries whole assignments.
func (d *RemoteDispatcher) Assignments(ctx context.Context, nodeID string) (<-chan *api.Assignment, error) {
	out := make(chan *api.Assignment, 1)
	rcv := newAssignmentReceiver()
	err := d.follow(ctx, dispatcherPath("assignments", nodeID), maxAssignmentMsg, func(ctx context.Context, line []byte) bool {
		var msg assignmentMsg
		if err := json.Unmarshal(line, &msg); err != nil {
			return false // a broken stream: the worker connects again
		}
		a, ok := rcv.take(&msg)
		if !ok {
			return true // a keepalive
		}
		select {
		case out <- a:
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

// follow reads an NDJSON stream from the managers line by line, giving
// each to take (false ends the stream), until ctx ends or the stream
// breaks; then it calls done. A stream silent for three keepalives is dead
// (a half-open connection): it ends too, and the worker connects again.
func (d *RemoteDispatcher) follow(ctx context.Context, path string, maxLine int, take func(ctx context.Context, line []byte) bool, done func()) error {
	ctx, cancel := context.WithCancel(ctx)
	resp, err := d.managers().stream(ctx, path)
	if err != nil {
		cancel()
		return err
	}
	watchdog := time.AfterFunc(3*assignmentKeepalive, cancel)
	go func() {
		defer done()
		defer cancel()
		defer watchdog.Stop()
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), maxLine)
		for sc.Scan() {
			watchdog.Reset(3 * assignmentKeepalive)
			if !take(ctx, sc.Bytes()) {
				return
			}
		}
	}()
	return nil
}

// maxAssignmentMsg bounds one message of the assignment stream: a node's
// whole assignment at first (its tasks, secrets of up to 500 KiB each,
// the services of its networks).
const maxAssignmentMsg = 256 << 20
