package swarm

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"

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
	Addrs []string
	// TLS holds the caller's certificate and the cluster's CA.
	TLS *tls.Config

	once sync.Once
	mc   *managers
}

func (c *Client) managers() *managers {
	c.once.Do(func() { c.mc = &managers{addrs: slices.Clone(c.Addrs), tls: c.TLS} })
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
