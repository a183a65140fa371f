package dockerapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shoalproject/shoal/internal/recheck"
	"github.com/shoalproject/shoal/swarm"
)

// The API versions served. The docker CLI pings, reads API-Version, and
// uses the lower of its own and this one (28.2.2 speaks 1.50, the CLI of
// Debian's docker.io 20.10 speaks 1.41).
const (
	MaxAPIVersion = "1.50"
	MinAPIVersion = "1.24"
)

// DefaultMaxBodyBytes bounds a request body (specs are small).
const DefaultMaxBodyBytes = 4 << 20

// Handler serves the swarm part of the Docker Engine API over Shoal, so
// that the docker CLI drives a Shoal cluster: the ping, version and info,
// the swarm, nodes, services, tasks, networks, secrets, configs (and so
// docker stack, which the CLI builds on them) and events. Everything else (containers,
// images, volumes, builds) answers 501 "not supported by Shoal". Serve it
// on a unix socket (DOCKER_HOST=unix:///path) or loopback, or over TCP
// with mutual TLS (NodeTLSConfig, ListenTLS): it authenticates no caller
// itself, but over TLS it refuses, at every request, a client certificate
// whose node is no longer a manager when Self can say so
// (ManagerCertChecker; ForNode's can).
//
// A zero Handler with Backend set is usable; see ForNode for a node.
type Handler struct {
	// Backend is the cluster; required (*swarm.Client).
	Backend Backend
	// Self is the node the API speaks for; nil means a manager with no
	// ID (docker info then shows no NodeID).
	Self Self
	// Version is the server version docker version and docker info show;
	// empty means this module's version.
	Version string
	// MaxBodyBytes bounds request bodies; 0 means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Logger receives a line per request at debug level; nil discards.
	Logger *slog.Logger
	// PeerRecheck is how often a call over TLS that lasts (a stream)
	// checks its client's certificate again (see ManagerCertChecker); 0
	// or less means DefaultPeerRecheck.
	PeerRecheck time.Duration

	once sync.Once
	mux  *http.ServeMux
}

var _ http.Handler = (*Handler)(nil)

type ctxKey struct{}

// apiVersion is the version the request's path names (MaxAPIVersion when
// none).
func apiVersion(ctx context.Context) string {
	if v, ok := ctx.Value(ctxKey{}).(string); ok {
		return v
	}
	return MaxAPIVersion
}

var versionPath = regexp.MustCompile(`^/v([0-9]+\.[0-9]+)(/.*)$`)

// ServeHTTP serves one call.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.once.Do(h.routes)
	hd := w.Header()
	hd.Set("Api-Version", MaxAPIVersion)
	hd.Set("Docker-Experimental", "false")
	hd.Set("Ostype", "linux")
	hd.Set("Server", "Shoal/"+h.version()+" (linux)")
	h.logger().Debug("dockerapi: request", "method", r.Method, "path", r.URL.Path, "query", r.URL.RawQuery)
	if cc, id, ok := h.peerToCheck(r); ok {
		if err := refusedCert(cc.CheckManagerCert(id)); err != nil {
			writeError(w, err)
			return
		}
		// Checked again while the call lasts: a stream (docker
		// events, logs --follow) opened before a demotion ends with it.
		ctx, cancel := recheck.Context(r.Context(), h.peerRecheck(), func() bool { return refusedCert(cc.CheckManagerCert(id)) != nil })
		defer cancel()
		r = r.WithContext(ctx)
	}
	if m := versionPath.FindStringSubmatch(r.URL.Path); m != nil {
		v := m[1]
		switch {
		case versionLess(MaxAPIVersion, v):
			writeError(w, badRequest("client version %s is too new. Maximum supported API version is %s", v, MaxAPIVersion))
			return
		case versionLess(v, MinAPIVersion):
			writeError(w, badRequest("client version %s is too old. Minimum supported API version is %s, please upgrade your client to a newer version", v, MinAPIVersion))
			return
		}
		r2 := r.Clone(context.WithValue(r.Context(), ctxKey{}, v))
		r2.URL.Path, r2.URL.RawPath = m[2], ""
		r = r2
	}
	max := h.MaxBodyBytes
	if max <= 0 {
		max = DefaultMaxBodyBytes
	}
	r.Body = http.MaxBytesReader(w, r.Body, max)
	h.mux.ServeHTTP(w, r)
}

// peerToCheck is the ManagerCertChecker of a call over TLS and the node
// its client certificate names (false when there is nothing to check).
func (h *Handler) peerToCheck(r *http.Request) (ManagerCertChecker, string, bool) {
	cc, ok := h.Self.(ManagerCertChecker)
	if !ok || r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return nil, "", false
	}
	return cc, r.TLS.PeerCertificates[0].Subject.CommonName, true
}

// refusedCert is the answer to a client certificate whose node is no
// longer a manager; nil for any other outcome (a store not ready is the
// calls' to meet).
func refusedCert(err error) error {
	if !errors.Is(err, swarm.ErrNotAManagerNow) {
		return nil
	}
	return &httpError{status: http.StatusForbidden, msg: fmt.Sprintf("%v: %v", ErrNotManagerCert, err), err: ErrNotManagerCert}
}

// DefaultPeerRecheck is how often a call over TLS that is still going (a
// stream) checks its client's certificate again, unless
// Handler.PeerRecheck says otherwise.
const DefaultPeerRecheck = 2 * time.Second

// versionLess compares API versions "1.41" < "1.50".
func versionLess(a, b string) bool {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := range max(len(pa), len(pb)) {
		var x, y int
		if i < len(pa) {
			x, _ = strconv.Atoi(pa[i])
		}
		if i < len(pb) {
			y, _ = strconv.Atoi(pb[i])
		}
		if x != y {
			return x < y
		}
	}
	return false
}

func (h *Handler) logger() *slog.Logger {
	if h.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return h.Logger
}

// peerRecheck is how often a call over TLS that lasts checks its
// caller's certificate again: PeerRecheck, or DefaultPeerRecheck.
func (h *Handler) peerRecheck() time.Duration {
	if h.PeerRecheck <= 0 {
		return DefaultPeerRecheck
	}
	return h.PeerRecheck
}

// version is the server version to show.
func (h *Handler) version() string {
	if h.Version != "" {
		return h.Version
	}
	return swarm.Version()
}

// handlerFunc answers a call or returns the error to answer.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

func (h *Handler) handle(pattern string, fn handlerFunc) {
	h.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		if err := fn(w, r); err != nil {
			h.logger().Debug("dockerapi: error", "method", r.Method, "path", r.URL.Path, "err", err)
			writeError(w, err)
		}
	})
}

// manager wraps the calls only a manager answers.
func (h *Handler) manager(fn handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if h.Backend == nil {
			return &httpError{status: http.StatusServiceUnavailable, msg: "dockerapi: no backend: the handler has no cluster to serve"}
		}
		if h.Self != nil && h.Self.Role() != "manager" {
			return errNotManager
		}
		return fn(w, r)
	}
}

func (h *Handler) routes() {
	h.mux = http.NewServeMux()
	h.handle("GET /_ping", h.ping)
	h.handle("HEAD /_ping", h.ping)
	h.handle("GET /version", h.serverVersion)
	h.handle("GET /info", h.info)

	h.handle("GET /swarm", h.manager(h.swarmInspect))
	h.handle("POST /swarm/init", h.swarmInit)
	h.handle("POST /swarm/join", h.swarmInit)
	h.handle("POST /swarm/leave", func(http.ResponseWriter, *http.Request) error {
		return notYet("leaving the swarm through the Docker API; stop the node and make it leave with its own command (swarm.Node.Leave)")
	})
	h.handle("POST /swarm/update", h.manager(h.swarmUpdate))
	h.handle("GET /swarm/unlockkey", h.manager(h.unlockKey))
	h.handle("POST /swarm/unlock", h.unlock)

	h.handle("GET /nodes", h.manager(h.nodeList))
	h.handle("GET /nodes/{id}", h.manager(h.nodeInspect))
	h.handle("POST /nodes/{id}/update", h.manager(h.nodeUpdate))
	h.handle("DELETE /nodes/{id}", h.manager(h.nodeRemove))

	h.handle("GET /services", h.manager(h.serviceList))
	h.handle("POST /services/create", h.manager(h.serviceCreate))
	h.handle("GET /services/{id}", h.manager(h.serviceInspect))
	h.handle("POST /services/{id}/update", h.manager(h.serviceUpdate))
	h.handle("DELETE /services/{id}", h.manager(h.serviceRemove))
	h.handle("GET /services/{id}/logs", h.manager(h.serviceLogs))

	h.handle("GET /tasks", h.manager(h.taskList))
	h.handle("GET /tasks/{id}", h.manager(h.taskInspect))
	h.handle("GET /tasks/{id}/logs", h.manager(h.taskLogs))

	h.handle("GET /events", h.manager(h.events))

	h.handle("GET /networks", h.manager(h.networkList))
	h.handle("POST /networks/create", h.manager(h.networkCreate))
	h.handle("GET /networks/{id}", h.manager(h.networkInspect))
	h.handle("DELETE /networks/{id}", h.manager(h.networkRemove))
	h.handle("POST /networks/{id}/connect", func(w http.ResponseWriter, r *http.Request) error {
		return notSupported("%s %s: connecting containers to networks (Shoal runs services, whose tasks join the networks their spec names)", r.Method, r.URL.Path)
	})
	h.handle("POST /networks/{id}/disconnect", func(w http.ResponseWriter, r *http.Request) error {
		return notSupported("%s %s: disconnecting containers from networks (Shoal runs services, whose tasks join the networks their spec names)", r.Method, r.URL.Path)
	})
	h.handle("POST /networks/prune", func(w http.ResponseWriter, r *http.Request) error {
		return notSupported("%s %s: pruning networks; remove them by name (docker network rm)", r.Method, r.URL.Path)
	})

	secretRoutes.register(h)
	configRoutes.register(h)
	h.handle("/", func(w http.ResponseWriter, r *http.Request) error {
		return notSupported("%s %s: Shoal serves the swarm part of the Docker Engine API (swarm, node, service and task commands, events), not containers, images, volumes, plugins or builds", r.Method, r.URL.Path)
	})
}

// writeJSON answers v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

type errorBody struct {
	Message string `json:"message"`
}

// writeError answers err as dockerd does: {"message": ...} with the
// status that says what it is.
func writeError(w http.ResponseWriter, err error) {
	writeJSON(w, statusOf(err), errorBody{Message: messageOf(err)})
}

// readJSON decodes a request body into v; fields Docker's types do not
// have are refused, not dropped.
func readJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &httpError{status: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf("request body over %d bytes", mbe.Limit), err: ErrBadRequest}
		}
		if errors.Is(err, io.EOF) {
			return badRequest("request body: a JSON object is required")
		}
		return badRequest("request body: %v", err)
	}
	return nil
}

// queryBool reads a boolean query parameter (absent: false).
func queryBool(r *http.Request, name string) (bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, badRequest("invalid value for %s: %q (true or false)", name, v)
	}
	return b, nil
}

// queryVersion reads the object version a write is based on.
func queryVersion(r *http.Request, kind string) (uint64, error) {
	raw := r.URL.Query().Get("version")
	v, err := strconv.ParseUint(raw, 10, 64)
	if err != nil {
		return 0, badRequest("invalid %s version '%s': give the version you read (Version.Index)", kind, raw)
	}
	return v, nil
}
