package swarm

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shoalproject/shoal/internal/recheck"
	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm/api"
)

// The control API over HTTP/2: the Manager's control methods as JSON
// endpoints under /v1/. Managers only (the caller's certificate says
// OU=manager). Any manager answers reads from its own state; a follower
// forwards writes to the leader, so a client may talk to any manager, and
// reads its own writes there (ownwrites.go).

const controlPrefix = "/v1/"

// forwardedHeader marks a write a follower passed on, so that it is passed
// on once at most.
const forwardedHeader = "Shoal-Forwarded-By"

// forwardedForHeader names the caller a forwarded write came from. The
// leader believes it only from a manager (the control API is for
// managers alone), as it would believe that manager's own call.
const forwardedForHeader = "Shoal-Forwarded-For"

// Handler serves the node and control API: the dispatcher for every node,
// the control API for managers. Serve it on the management port (mutual
// TLS: the caller is who its certificate says). ClientTLS is what this
// manager uses to forward writes to the leader; without it, a follower
// answers writes with the leader's address instead.
func (m *Manager) Handler(clientTLS func() *tls.Config) http.Handler {
	mux := http.NewServeMux()
	m.dispatcherRoutes(mux)
	m.arbiterRoutes(mux)
	c := &controlAPI{m: m, clientTLS: clientTLS}
	c.routes(mux)
	c.logRoutes(mux)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Every answer names the managers, so that clients and workers
		// learn of managers that joined after them.
		if addrs := m.managerAddrsCached(); len(addrs) > 0 {
			w.Header().Set(managersHeader, strings.Join(addrs, ","))
		}
		mux.ServeHTTP(w, r)
	})
}

// managersHeader lists the managers' addresses on every API answer.
const managersHeader = "Shoal-Managers"

type controlAPI struct {
	m         *Manager
	clientTLS func() *tls.Config

	mu        sync.Mutex
	forwarder *http.Transport
}

func (c *controlAPI) routes(mux *http.ServeMux) {
	read := func(pattern string, h func(*http.Request) (any, error)) {
		mux.HandleFunc("GET "+controlPrefix+pattern, c.asManager(false, func(w http.ResponseWriter, r *http.Request) error {
			v, err := h(r)
			if err != nil {
				return err
			}
			return writeJSON(w, http.StatusOK, v)
		}))
	}
	write := func(method, pattern string, status int, h func(*http.Request) (any, error)) {
		mux.HandleFunc(method+" "+controlPrefix+pattern, c.asManager(true, func(w http.ResponseWriter, r *http.Request) error {
			v, err := h(r)
			if err != nil {
				return err
			}
			if v == nil {
				w.WriteHeader(http.StatusNoContent)
				return nil
			}
			return writeJSON(w, status, v)
		}))
	}
	m := c.m
	// Services.
	write("POST", "services", http.StatusCreated, func(r *http.Request) (any, error) {
		var spec api.ServiceSpec
		if err := decodeBody(r, &spec); err != nil {
			return nil, err
		}
		return m.CreateService(r.Context(), spec)
	})
	read("services", func(r *http.Request) (any, error) {
		all, err := m.Services()
		f := filterFromQuery(r.URL.Query())
		return keep(all, err, func(s *api.Service) bool { return f.matchMeta(s.ID, s.Spec.Name, s.Spec.Labels) })
	})
	read("services/{id}", func(r *http.Request) (any, error) { return m.Service(r.PathValue("id")) })
	write("POST", "services/{id}/update", http.StatusOK, func(r *http.Request) (any, error) {
		version, err := versionParam(r)
		if err != nil {
			return nil, err
		}
		var spec api.ServiceSpec
		if err := decodeBody(r, &spec); err != nil {
			return nil, err
		}
		svc, err := m.Service(r.PathValue("id"))
		if err != nil {
			return nil, err
		}
		return m.UpdateService(r.Context(), svc.ID, version, spec)
	})
	write("POST", "services/{id}/rollback", http.StatusOK, func(r *http.Request) (any, error) {
		svc, err := m.Service(r.PathValue("id"))
		if err != nil {
			return nil, err
		}
		return m.RollbackService(r.Context(), svc.ID)
	})
	write("DELETE", "services/{id}", 0, func(r *http.Request) (any, error) {
		svc, err := m.Service(r.PathValue("id"))
		if err != nil {
			return nil, err
		}
		return nil, m.RemoveService(r.Context(), svc.ID)
	})
	// Tasks.
	read("tasks", func(r *http.Request) (any, error) {
		f := filterFromQuery(r.URL.Query())
		// Services may be named by name: resolve them to IDs.
		for i, s := range f.Services {
			if svc, err := m.Service(s); err == nil {
				f.Services[i] = svc.ID
			}
		}
		var all []*api.Task
		var err error
		if len(f.Services) == 1 {
			all, err = m.Tasks(f.Services[0])
		} else {
			all, err = m.Tasks("")
		}
		return keep(all, err, f.matchTask)
	})
	read("tasks/{id}", func(r *http.Request) (any, error) { return m.Task(r.PathValue("id")) })
	// Nodes.
	read("nodes", func(r *http.Request) (any, error) {
		all, err := m.Nodes()
		f := filterFromQuery(r.URL.Query())
		return keep(all, err, func(n *api.Node) bool {
			return f.matchMeta(n.ID, n.Description.Hostname, n.Spec.Labels) && anyEqual(string(n.Spec.Role), f.Roles)
		})
	})
	read("nodes/{id}", func(r *http.Request) (any, error) { return m.Node(r.PathValue("id")) })
	write("POST", "nodes/{id}/update", http.StatusOK, func(r *http.Request) (any, error) {
		version, err := versionParam(r)
		if err != nil {
			return nil, err
		}
		var spec api.NodeSpec
		if err := decodeBody(r, &spec); err != nil {
			return nil, err
		}
		return m.UpdateNode(r.Context(), r.PathValue("id"), version, spec)
	})
	write("DELETE", "nodes/{id}", 0, func(r *http.Request) (any, error) {
		force, _ := strconv.ParseBool(r.URL.Query().Get("force"))
		return nil, m.RemoveNode(r.Context(), r.PathValue("id"), force)
	})
	write("DELETE", "arbiters/{id}", 0, func(r *http.Request) (any, error) {
		return nil, m.RemoveArbiter(r.Context(), r.PathValue("id"))
	})
	// The cluster.
	read("cluster", func(r *http.Request) (any, error) { return m.Cluster() })
	write("POST", "cluster/update", http.StatusOK, func(r *http.Request) (any, error) {
		version, err := versionParam(r)
		if err != nil {
			return nil, err
		}
		var spec api.ClusterSpec
		if err := decodeBody(r, &spec); err != nil {
			return nil, err
		}
		return m.UpdateCluster(r.Context(), version, spec)
	})
	write("POST", "cluster/rotate-join-token", http.StatusOK, func(r *http.Request) (any, error) {
		return m.RotateJoinToken(r.Context(), api.NodeRole(r.URL.Query().Get("role")))
	})
	// A node promoted to manager asks to join Raft.
	write("POST", "raft/join-self", 0, func(r *http.Request) (any, error) {
		id, _, _ := peerIdentity(r)
		if r.Header.Get(forwardedHeader) != "" {
			id = r.Header.Get(forwardedForHeader)
		}
		var req struct {
			Addr string `json:"addr"`
		}
		if err := decodeBody(r, &req); err != nil {
			return nil, err
		}
		return nil, m.joinSelf(r.Context(), id, req.Addr)
	})
	// A manager that joined as a non-voter asks to vote once caught up.
	write("POST", "raft/promote-self", 0, func(r *http.Request) (any, error) {
		id, _, _ := peerIdentity(r)
		if fwd := r.Header.Get(forwardedHeader); fwd != "" {
			// Forwarded by a follower: the caller it vouches for.
			id = r.Header.Get(forwardedForHeader)
		}
		return nil, m.promoteSelf(r.Context(), id)
	})
	// Networks.
	write("POST", "networks", http.StatusCreated, func(r *http.Request) (any, error) {
		var spec api.NetworkSpec
		if err := decodeBody(r, &spec); err != nil {
			return nil, err
		}
		return m.CreateNetwork(r.Context(), spec)
	})
	read("networks", func(r *http.Request) (any, error) {
		all, err := m.Networks()
		f := filterFromQuery(r.URL.Query())
		return keep(all, err, func(n *api.Network) bool { return f.matchMeta(n.ID, n.Spec.Name, n.Spec.Labels) })
	})
	read("networks/{id}", func(r *http.Request) (any, error) { return m.Network(r.PathValue("id")) })
	write("DELETE", "networks/{id}", 0, func(r *http.Request) (any, error) {
		return nil, m.RemoveNetwork(r.Context(), r.PathValue("id"))
	})
	// Secrets: their data goes in, never out.
	write("POST", "secrets", http.StatusCreated, func(r *http.Request) (any, error) {
		var spec api.SecretSpec
		if err := decodeBody(r, &spec); err != nil {
			return nil, err
		}
		return m.CreateSecret(r.Context(), spec)
	})
	read("secrets", func(r *http.Request) (any, error) {
		all, err := m.Secrets()
		f := filterFromQuery(r.URL.Query())
		return keep(all, err, func(s *api.Secret) bool { return f.matchMeta(s.ID, s.Spec.Name, s.Spec.Labels) })
	})
	read("secrets/{id}", func(r *http.Request) (any, error) { return m.Secret(r.PathValue("id")) })
	write("POST", "secrets/{id}/update", http.StatusOK, func(r *http.Request) (any, error) {
		version, err := versionParam(r)
		if err != nil {
			return nil, err
		}
		var spec api.SecretSpec
		if err := decodeBody(r, &spec); err != nil {
			return nil, err
		}
		return m.UpdateSecret(r.Context(), r.PathValue("id"), version, spec)
	})
	write("DELETE", "secrets/{id}", 0, func(r *http.Request) (any, error) {
		return nil, m.RemoveSecret(r.Context(), r.PathValue("id"))
	})
	// Configs.
	write("POST", "configs", http.StatusCreated, func(r *http.Request) (any, error) {
		var spec api.ConfigSpec
		if err := decodeBody(r, &spec); err != nil {
			return nil, err
		}
		return m.CreateConfig(r.Context(), spec)
	})
	read("configs", func(r *http.Request) (any, error) {
		all, err := m.Configs()
		f := filterFromQuery(r.URL.Query())
		return keep(all, err, func(c *api.Config) bool { return f.matchMeta(c.ID, c.Spec.Name, c.Spec.Labels) })
	})
	read("configs/{id}", func(r *http.Request) (any, error) { return m.Config(r.PathValue("id")) })
	write("POST", "configs/{id}/update", http.StatusOK, func(r *http.Request) (any, error) {
		version, err := versionParam(r)
		if err != nil {
			return nil, err
		}
		var spec api.ConfigSpec
		if err := decodeBody(r, &spec); err != nil {
			return nil, err
		}
		return m.UpdateConfig(r.Context(), r.PathValue("id"), version, spec)
	})
	write("DELETE", "configs/{id}", 0, func(r *http.Request) (any, error) {
		return nil, m.RemoveConfig(r.Context(), r.PathValue("id"))
	})
	// Events.
	mux.HandleFunc("GET "+controlPrefix+"events", c.asManager(false, c.events))
	// Certificate renewal: any node, for itself.
	mux.HandleFunc("POST "+controlPrefix+"ca/renew", m.asMember(true, func(w http.ResponseWriter, r *http.Request, node string) error {
		var req renewRequest
		if err := decodeBody(r, &req); err != nil {
			return err
		}
		cert, err := m.renew(r.Context(), node, req.CSR)
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, renewAnswer{Cert: cert})
	}))
}

type renewRequest struct {
	CSR []byte `json:"csr"`
}

type renewAnswer struct {
	Cert []byte `json:"cert"`
}

func keep[T any](all []T, err error, match func(T) bool) ([]T, error) {
	if err != nil {
		return nil, err
	}
	out := make([]T, 0, len(all))
	for _, v := range all {
		if match(v) {
			out = append(out, v)
		}
	}
	return out, nil
}

func versionParam(r *http.Request) (uint64, error) {
	v := r.URL.Query().Get("version")
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%w: version=%q: give the version of the object you read (optimistic concurrency)", api.ErrInvalidSpec, v)
	}
	return n, nil
}

// asManager admits managers only; a write on a follower goes to the
// leader.
func (c *controlAPI) asManager(write bool, h func(http.ResponseWriter, *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, role, err := peerIdentity(r)
		if err == nil && role != "manager" {
			err = fmt.Errorf("%w: node %s is a %s; the control API is for managers", errForbidden, id, role)
		}
		if err == nil {
			// Other errors (a locked or starting store) are the
			// handler's to meet, as before this check.
			if cerr := c.m.CheckManagerCert(id); errors.Is(cerr, ErrNotAManagerNow) {
				err = fmt.Errorf("%w: %w; the control API is for managers", errForbidden, cerr)
				if r.Header.Get(forwardedHeader) == id {
					// A manager being demoted passed on a write it took
					// before it knew: the caller is not at fault, and
					// another manager takes the write (503 is retried;
					// 403 would fail the user's call).
					err = fmt.Errorf("%w: the manager that passed this write on is leaving the managers (%w): call another manager", ErrUnavailable, cerr)
				}
			} else if r.Header.Get(forwardedHeader) != "" {
				// The caller a follower vouches for, checked here too:
				// the follower may not have applied its demotion yet.
				if on := r.Header.Get(forwardedForHeader); on != "" {
					if cerr := c.m.CheckManagerCert(on); errors.Is(cerr, ErrNotAManagerNow) {
						err = fmt.Errorf("%w: %w; the control API is for managers", errForbidden, cerr)
					}
				}
			}
		}
		if err != nil {
			writeError(w, err)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		if r.Method == http.MethodGet {
			// A GET may be a stream (the events stream, a logs follow,
			// which goes to the leader like a write): its caller's
			// certificate, and the one a follower vouches for, are
			// checked again while it lasts, so that a stream opened
			// before a demotion ends with it (on a follower, so does the
			// call it passed on: the proxy's request has this context).
			// Not the other writes: a manager demoting itself must get
			// the answer to that write.
			callers := []string{id}
			if on := r.Header.Get(forwardedForHeader); on != "" && r.Header.Get(forwardedHeader) != "" {
				callers = append(callers, on)
			}
			ctx, cancel := recheck.Context(r.Context(), managerCertRecheck, func() bool {
				for _, caller := range callers {
					if errors.Is(c.m.CheckManagerCert(caller), ErrNotAManagerNow) {
						c.m.logger().Info("swarm: a stream's caller is no longer a manager: it ends", "node", caller)
						return true
					}
				}
				return false
			})
			defer cancel()
			r = r.WithContext(ctx)
		}
		if write && !c.m.IsLeader() && r.Header.Get(forwardedHeader) == "" && c.clientTLS != nil {
			c.forward(w, r)
			return
		}
		if st, err := c.m.st(); err == nil && write {
			w = &indexWriter{ResponseWriter: w, st: st}
		}
		if err := h(w, r); err != nil {
			writeError(w, err)
		}
	}
}

// managerCertRecheck is how often a control API call that lasts (a
// stream) checks its caller's certificate again.
const managerCertRecheck = 2 * time.Second

// forward passes a write to the leader and its answer back.
func (c *controlAPI) forward(w http.ResponseWriter, r *http.Request) {
	st, err := c.m.st()
	if err != nil {
		writeError(w, err)
		return
	}
	leader := st.Leader()
	if leader.Address != "" && arbitersOf(st)[leader.ID] {
		// An arbiter leads only until it hands over: no manager leads.
		leader.Address = ""
	}
	if ro := c.m.readOnly(); ro != nil && leader.Address == "" {
		writeError(w, ro)
		return
	}
	if leader.Address == "" || leader.Self {
		writeError(w, &raftstore.NotLeaderError{LeaderID: leader.ID, LeaderAddr: leader.Address})
		return
	}
	c.mu.Lock()
	if c.forwarder == nil {
		conf := c.clientTLS().Clone()
		conf.NextProtos = []string{ProtoAPI}
		c.forwarder = &http.Transport{TLSClientConfig: conf, ForceAttemptHTTP2: true, TLSHandshakeTimeout: 5 * time.Second}
	}
	tr := c.forwarder
	c.mu.Unlock()
	target := &url.URL{Scheme: "https", Host: leader.Address}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Header.Set(forwardedHeader, c.m.ID)
			if id, _, err := peerIdentity(r); err == nil {
				pr.Out.Header.Set(forwardedForHeader, id)
			}
		},
		Transport: tr,
		ModifyResponse: func(resp *http.Response) error {
			if err := catchUp(r.Context(), st, resp); err != nil {
				c.m.logger().Warn("swarm: the answer to a forwarded write goes before this manager has applied it: a read here may miss it", "err", err)
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			writeError(w, fmt.Errorf("%w: the leader %s does not answer (%v); if it is gone, a new one is elected within seconds: try again", ErrUnavailable, leader.Address, err))
		},
	}
	proxy.ServeHTTP(w, r)
}

// Event is one change of a cluster object, in commit order. Index
// resumes a stream after it.
type Event struct {
	Index  uint64          `json:"index"`
	Action string          `json:"action"` // create, update, remove
	Type   string          `json:"type"`   // service, task, node, network, secret, config, cluster
	ID     string          `json:"id"`
	Object json.RawMessage `json:"object,omitempty"`
}

var eventTypes = map[string]string{TableServices: "service", TableTasks: "task", TableNodes: "node",
	TableNetworks: "network", TableSecrets: "secret", TableConfigs: "config", TableClusters: "cluster"}

// events streams changes as NDJSON from ?since=INDEX (0: from now), of
// the ?type=s asked for. A stream resumed from an index the manager no
// longer has is refused (410): list again, then watch from the list.
func (c *controlAPI) events(w http.ResponseWriter, r *http.Request) error {
	st, err := c.m.st()
	if err != nil {
		return err
	}
	q := r.URL.Query()
	since := st.AppliedIndex()
	if s := q.Get("since"); s != "" && s != "0" {
		if since, err = strconv.ParseUint(s, 10, 64); err != nil {
			return fmt.Errorf("%w: since=%q is not an index", api.ErrInvalidSpec, s)
		}
	}
	types := q["type"]
	for _, t := range types {
		if !slices.Contains(mapsValues(eventTypes), t) {
			return fmt.Errorf("%w: type=%q: one of service, task, node, network, secret, config, cluster", api.ErrInvalidSpec, t)
		}
	}
	wt, err := st.Watch(r.Context(), since, func(e raftstore.Event) bool {
		t, ok := eventTypes[e.Table]
		return ok && (len(types) == 0 || slices.Contains(types, t))
	})
	if errors.Is(err, raftstore.ErrResync) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusGone)
		return json.NewEncoder(w).Encode(errorBody{Error: fmt.Sprintf("events after index %d are no longer kept: list the objects again and watch from now", since), Code: codeGone})
	}
	if err != nil {
		return err
	}
	defer wt.Stop()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	rc.Flush()
	enc := json.NewEncoder(w)
	for ev := range wt.Events() {
		out := Event{Index: ev.Index, Type: eventTypes[ev.Table], ID: ev.ID}
		obj := ev.Object
		switch ev.Kind {
		case raftstore.Created:
			out.Action = "create"
		case raftstore.Updated:
			out.Action = "update"
		default:
			out.Action, obj = "remove", ev.Old
		}
		if sec, ok := obj.(*api.Secret); ok {
			obj = sec.Redacted() // the API never returns a secret's data
		}
		if obj != nil {
			if b, err := json.Marshal(obj); err == nil {
				out.Object = b
			}
		}
		if enc.Encode(out) != nil || rc.Flush() != nil {
			return nil
		}
	}
	return nil
}

func mapsValues(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// managerAddrsCached is managerAddrs at most a second old: it is on every
// answer, heartbeats included.
func (m *Manager) managerAddrsCached() []string {
	if c := m.addrs.Load(); c != nil && time.Since(c.at) < time.Second {
		return c.addrs
	}
	st, err := m.st()
	if err != nil {
		return nil
	}
	addrs := managerAddrs(st)
	m.addrs.Store(&cachedAddrs{at: time.Now(), addrs: addrs})
	return addrs
}

type cachedAddrs struct {
	at    time.Time
	addrs []string
}
