package swarm

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm/api"
)

// Client is the Go client of the control API. It talks to any manager
// (followers pass writes to the leader) and moves to another when one is
// gone. Its TLS config holds a manager's certificate: the control API is
// for managers (a Node's Client uses its own).
//
//	c := &swarm.Client{Addrs: []string{"10.0.0.1:2377"}, TLS: tlsConfig}
//	svc, err := c.CreateService(ctx, spec)
type Client struct {
	// Addrs are managers' management addresses (host:port); at least one.
	// The client also learns managers from their answers; addresses
	// added to Addrs count too, if added while no call is in flight (the
	// client reads Addrs at each call).
	Addrs []string
	// TLS holds the caller's certificate and the cluster's CA.
	TLS *tls.Config
	// Dial, when set, makes the connections to the managers (through a
	// tunnel, or from another network namespace); nil dials directly.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	once sync.Once
	mc   *managers
}

// clientRetryFor is how long a Client call rides out a leader change.
const clientRetryFor = 3 * time.Second

func (c *Client) managers() *managers {
	c.once.Do(func() {
		c.mc = &managers{addrs: slices.Clone(c.Addrs), tls: c.TLS, retryFor: clientRetryFor, dial: c.Dial}
	})
	c.mc.learn(c.Addrs)
	return c.mc
}

func (c *Client) get(ctx context.Context, path string, q url.Values, out any) error {
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	return c.managers().call(ctx, http.MethodGet, controlPrefix+path, nil, out)
}

func (c *Client) send(ctx context.Context, method, path string, q url.Values, body, out any) error {
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	return c.managers().call(ctx, method, controlPrefix+path, body, out)
}

func versionQuery(v uint64) url.Values { return url.Values{"version": {strconv.FormatUint(v, 10)}} }

// CreateService creates a service; a bad spec is refused with its
// problems' field paths (errors.As a *RemoteValidationError).
func (c *Client) CreateService(ctx context.Context, spec api.ServiceSpec) (*api.Service, error) {
	var out api.Service
	return &out, c.send(ctx, http.MethodPost, "services", nil, spec, &out)
}

// Service returns a service by ID or name.
func (c *Client) Service(ctx context.Context, idOrName string) (*api.Service, error) {
	var out api.Service
	return &out, c.get(ctx, "services/"+url.PathEscape(idOrName), nil, &out)
}

// Services lists the services the filter selects.
func (c *Client) Services(ctx context.Context, f Filter) ([]*api.Service, error) {
	var out []*api.Service
	return out, c.get(ctx, "services", f.Query(), &out)
}

// UpdateService replaces a service's spec; version is the one the caller
// read (a concurrent change gives an error wrapping raftstore.ErrConflict).
func (c *Client) UpdateService(ctx context.Context, id string, version uint64, spec api.ServiceSpec) (*api.Service, error) {
	var out api.Service
	return &out, c.send(ctx, http.MethodPost, "services/"+url.PathEscape(id)+"/update", versionQuery(version), spec, &out)
}

// ScaleService sets a replicated service's replicas (or a replicated
// job's total completions), reading and updating it again when another
// change comes in between.
func (c *Client) ScaleService(ctx context.Context, idOrName string, replicas uint64) (*api.Service, error) {
	for {
		svc, err := c.Service(ctx, idOrName)
		if err != nil {
			return nil, err
		}
		spec := svc.Spec
		switch {
		case spec.Mode.Replicated != nil:
			spec.Mode.Replicated = &api.ReplicatedService{Replicas: replicas}
		case spec.Mode.ReplicatedJob != nil:
			j := *spec.Mode.ReplicatedJob
			j.TotalCompletions = replicas
			spec.Mode.ReplicatedJob = &j
		default:
			return nil, fmt.Errorf("%w: service %s is not replicated: only replicated services scale", api.ErrInvalidSpec, svc.Spec.Name)
		}
		out, err := c.UpdateService(ctx, svc.ID, svc.Version, spec)
		if !errors.Is(err, raftstore.ErrConflict) {
			return out, err
		}
	}
}

// RollbackService goes back to the service's previous spec.
func (c *Client) RollbackService(ctx context.Context, idOrName string) (*api.Service, error) {
	var out api.Service
	return &out, c.send(ctx, http.MethodPost, "services/"+url.PathEscape(idOrName)+"/rollback", nil, nil, &out)
}

// RemoveService removes a service and its tasks.
func (c *Client) RemoveService(ctx context.Context, idOrName string) error {
	return c.send(ctx, http.MethodDelete, "services/"+url.PathEscape(idOrName), nil, nil, nil)
}

// Tasks lists the tasks the filter selects (with their history: ended
// tasks are kept per slot up to the cluster's limit).
func (c *Client) Tasks(ctx context.Context, f Filter) ([]*api.Task, error) {
	var out []*api.Task
	return out, c.get(ctx, "tasks", f.Query(), &out)
}

// Task returns a task by ID.
func (c *Client) Task(ctx context.Context, id string) (*api.Task, error) {
	var out api.Task
	return &out, c.get(ctx, "tasks/"+url.PathEscape(id), nil, &out)
}

// Nodes lists the nodes the filter selects.
func (c *Client) Nodes(ctx context.Context, f Filter) ([]*api.Node, error) {
	var out []*api.Node
	return out, c.get(ctx, "nodes", f.Query(), &out)
}

// Node returns a node by ID.
func (c *Client) Node(ctx context.Context, id string) (*api.Node, error) {
	var out api.Node
	return &out, c.get(ctx, "nodes/"+url.PathEscape(id), nil, &out)
}

// UpdateNode replaces a node's spec (availability, labels); version is
// the one the caller read.
func (c *Client) UpdateNode(ctx context.Context, id string, version uint64, spec api.NodeSpec) (*api.Node, error) {
	var out api.Node
	return &out, c.send(ctx, http.MethodPost, "nodes/"+url.PathEscape(id)+"/update", versionQuery(version), spec, &out)
}

// RemoveNode removes a node; force removes one that is still up.
func (c *Client) RemoveNode(ctx context.Context, id string, force bool) error {
	return c.send(ctx, http.MethodDelete, "nodes/"+url.PathEscape(id), url.Values{"force": {strconv.FormatBool(force)}}, nil, nil)
}

// RemoveArbiter takes an arbiter out of the cluster for good (see
// Manager.RemoveArbiter).
func (c *Client) RemoveArbiter(ctx context.Context, id string) error {
	return c.send(ctx, http.MethodDelete, "arbiters/"+url.PathEscape(id), nil, nil, nil)
}

// Cluster returns the cluster object.
func (c *Client) Cluster(ctx context.Context) (*api.Cluster, error) {
	var out api.Cluster
	return &out, c.get(ctx, "cluster", nil, &out)
}

// UpdateCluster replaces the cluster's configuration; version is the one
// the caller read.
func (c *Client) UpdateCluster(ctx context.Context, version uint64, spec api.ClusterSpec) (*api.Cluster, error) {
	var out api.Cluster
	return &out, c.send(ctx, http.MethodPost, "cluster/update", versionQuery(version), spec, &out)
}

// Events streams changes of cluster objects in commit order, after index
// since (0: from now), of the given types (none: all). The channel closes
// when ctx ends or the connection drops; resume from the last Index seen.
// A stream resumed from an index the manager no longer keeps is refused:
// list again, then watch from 0.
func (c *Client) Events(ctx context.Context, since uint64, types ...string) (<-chan Event, error) {
	q := url.Values{"since": {strconv.FormatUint(since, 10)}, "type": types}
	resp, err := c.managers().stream(ctx, controlPrefix+"events?"+q.Encode())
	if err != nil {
		return nil, err
	}
	out := make(chan Event, 16)
	go func() {
		defer close(out)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), maxBody)
		for sc.Scan() {
			var ev Event
			if json.Unmarshal(sc.Bytes(), &ev) != nil {
				return
			}
			select {
			case out <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// RotateJoinToken replaces the join token of a role (worker or manager):
// later joins with the old one are refused; nodes that joined stay.
func (c *Client) RotateJoinToken(ctx context.Context, role api.NodeRole) (*api.Cluster, error) {
	var out api.Cluster
	return &out, c.send(ctx, http.MethodPost, "cluster/rotate-join-token", url.Values{"role": {string(role)}}, nil, &out)
}

// CreateNetwork creates an overlay network.
func (c *Client) CreateNetwork(ctx context.Context, spec api.NetworkSpec) (*api.Network, error) {
	var out api.Network
	return &out, c.send(ctx, http.MethodPost, "networks", nil, spec, &out)
}

// Network returns a network by ID or name.
func (c *Client) Network(ctx context.Context, idOrName string) (*api.Network, error) {
	var out api.Network
	return &out, c.get(ctx, "networks/"+url.PathEscape(idOrName), nil, &out)
}

// Networks lists the networks the filter selects.
func (c *Client) Networks(ctx context.Context, f Filter) ([]*api.Network, error) {
	var out []*api.Network
	return out, c.get(ctx, "networks", f.Query(), &out)
}

// RemoveNetwork removes a network no service uses.
func (c *Client) RemoveNetwork(ctx context.Context, idOrName string) error {
	return c.send(ctx, http.MethodDelete, "networks/"+url.PathEscape(idOrName), nil, nil, nil)
}

// CreateSecret stores a secret; the answer leaves its data out.
func (c *Client) CreateSecret(ctx context.Context, spec api.SecretSpec) (*api.Secret, error) {
	var out api.Secret
	return &out, c.send(ctx, http.MethodPost, "secrets", nil, spec, &out)
}

// Secret returns a secret by ID or name (without its data).
func (c *Client) Secret(ctx context.Context, idOrName string) (*api.Secret, error) {
	var out api.Secret
	return &out, c.get(ctx, "secrets/"+url.PathEscape(idOrName), nil, &out)
}

// Secrets lists the secrets the filter selects (without their data).
func (c *Client) Secrets(ctx context.Context, f Filter) ([]*api.Secret, error) {
	var out []*api.Secret
	return out, c.get(ctx, "secrets", f.Query(), &out)
}

// UpdateSecret changes a secret's labels.
func (c *Client) UpdateSecret(ctx context.Context, id string, version uint64, spec api.SecretSpec) (*api.Secret, error) {
	var out api.Secret
	return &out, c.send(ctx, http.MethodPost, "secrets/"+url.PathEscape(id)+"/update", versionQuery(version), spec, &out)
}

// RemoveSecret removes a secret no service uses.
func (c *Client) RemoveSecret(ctx context.Context, idOrName string) error {
	return c.send(ctx, http.MethodDelete, "secrets/"+url.PathEscape(idOrName), nil, nil, nil)
}

// CreateConfig stores a config.
func (c *Client) CreateConfig(ctx context.Context, spec api.ConfigSpec) (*api.Config, error) {
	var out api.Config
	return &out, c.send(ctx, http.MethodPost, "configs", nil, spec, &out)
}

// Config returns a config by ID or name.
func (c *Client) Config(ctx context.Context, idOrName string) (*api.Config, error) {
	var out api.Config
	return &out, c.get(ctx, "configs/"+url.PathEscape(idOrName), nil, &out)
}

// Configs lists the configs the filter selects.
func (c *Client) Configs(ctx context.Context, f Filter) ([]*api.Config, error) {
	var out []*api.Config
	return out, c.get(ctx, "configs", f.Query(), &out)
}

// UpdateConfig changes a config's labels.
func (c *Client) UpdateConfig(ctx context.Context, id string, version uint64, spec api.ConfigSpec) (*api.Config, error) {
	var out api.Config
	return &out, c.send(ctx, http.MethodPost, "configs/"+url.PathEscape(id)+"/update", versionQuery(version), spec, &out)
}

// RemoveConfig removes a config no service uses.
func (c *Client) RemoveConfig(ctx context.Context, idOrName string) error {
	return c.send(ctx, http.MethodDelete, "configs/"+url.PathEscape(idOrName), nil, nil, nil)
}
