package swarm

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm/api"
)

// The control API: services, nodes and the cluster object. Writes go to
// the leader: others answer with a *raftstore.NotLeaderError naming it
// (over the network, a follower passes writes on to the leader). Reads are
// served from this manager's state and may lag the leader by a few
// milliseconds.

// DefaultClusterSpec is the configuration of a new cluster, as Docker's.
func DefaultClusterSpec() api.ClusterSpec {
	return api.ClusterSpec{
		Annotations:   api.Annotations{Name: "default"},
		Orchestration: api.OrchestrationConfig{TaskHistoryRetentionLimit: DefaultTaskHistory, MaxReplicas: api.DefaultMaxReplicas},
	}
}

// clusterSpec returns the cluster's configuration as this manager knows it.
func clusterSpec(tx *raftstore.ReadTx) (api.ClusterSpec, error) {
	cs, err := list[*api.Cluster](tx.List(TableClusters))
	if err != nil || len(cs) == 0 {
		return DefaultClusterSpec(), err
	}
	return cs[0].Spec, nil
}

func nameInUse(kind, name, holder string) error {
	return fmt.Errorf("%w: %s %q exists (ID %s); choose another name, or update or remove that %s", ErrNameInUse, kind, name, holder, kind)
}

// CreateService validates spec and stores a new service; the orchestrator
// makes its tasks. The name is unique: of two concurrent creates with one
// name, one fails with ErrNameInUse.
func (m *Manager) CreateService(ctx context.Context, spec api.ServiceSpec) (*api.Service, error) {
	st, err := m.st()
	if err != nil {
		return nil, err
	}
	var cspec api.ClusterSpec
	if err := st.View(func(tx *raftstore.ReadTx) (err error) { cspec, err = clusterSpec(tx); return err }); err != nil {
		return nil, err
	}
	if err := spec.ValidateWithin(cspec.Orchestration.ReplicasBound()); err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	var svc *api.Service
	err = retryConflicts(func() error {
		return st.Update(ctx, func(tx *raftstore.Tx) error {
			if same, err := tx.Find(TableServices, IndexName, spec.Name); err != nil {
				return err
			} else if len(same) > 0 {
				return nameInUse("service", spec.Name, same[0].ObjectID())
			}
			resolved := cloneSpec(spec)
			id := newID()
			ep, err := resolveSpec(&tx.ReadTx, &resolved, id, nil)
			if err != nil {
				return err
			}
			svc = &api.Service{Meta: api.Meta{ID: id, CreatedAt: now, UpdatedAt: now}, Spec: resolved, Endpoint: ep}
			return tx.Create(TableServices, svc)
		})
	})
	// The checks above saw the name and ports free, but another create may
	// have taken them before this one applied: the store refuses it then.
	if ce, ok := asConflict(err); ok && ce.Index == IndexPort {
		return nil, fmt.Errorf("%w: port %s was published by another service meanwhile (%s)", api.ErrInvalidSpec, ce.Key, ce.HeldBy)
	}
	if err != nil {
		return nil, asNameInUse(err, "service", spec.Name)
	}
	return svc, nil
}

// cloneSpec copies the parts of a spec that resolving changes, so the
// caller's spec stays as it was.
func cloneSpec(spec api.ServiceSpec) api.ServiceSpec {
	c := spec
	c.TaskTemplate.Networks = slices.Clone(spec.TaskTemplate.Networks)
	c.TaskTemplate.Secrets = slices.Clone(spec.TaskTemplate.Secrets)
	c.TaskTemplate.Configs = slices.Clone(spec.TaskTemplate.Configs)
	return c
}

// UpdateService replaces a service's spec. version is the version the
// caller read; a concurrent change makes the update fail with a conflict
// instead of losing it. A changed task template starts a rolling update.
func (m *Manager) UpdateService(ctx context.Context, id string, version uint64, spec api.ServiceSpec) (*api.Service, error) {
	st, err := m.st()
	if err != nil {
		return nil, err
	}
	var out *api.Service
	err = st.Update(ctx, func(tx *raftstore.Tx) error {
		cspec, err := clusterSpec(&tx.ReadTx)
		if err != nil {
			return err
		}
		if err := spec.ValidateWithin(cspec.Orchestration.ReplicasBound()); err != nil {
			return err
		}
		o, err := tx.Get(TableServices, id)
		if err != nil {
			return notFound("service", id)
		}
		svc := *o.(*api.Service)
		if svc.Spec.Name != spec.Name {
			return fmt.Errorf("%w: spec.name: a service cannot be renamed (%q to %q)", api.ErrInvalidSpec, svc.Spec.Name, spec.Name)
		}
		spec = cloneSpec(spec)
		ep, err := resolveSpec(&tx.ReadTx, &spec, svc.ID, svc.Endpoint)
		if err != nil {
			return err
		}
		if ep != nil && svc.Endpoint != nil {
			ep.VirtualIPs = svc.Endpoint.VirtualIPs // the allocator keeps those it still needs
		}
		svc.Endpoint = ep
		prev := svc.Spec
		now := time.Now().UTC()
		a, _ := json.Marshal(prev.TaskTemplate)
		b, _ := json.Marshal(spec.TaskTemplate)
		if !bytes.Equal(a, b) {
			// The tasks must change: a rolling update starts.
			svc.UpdateStatus = &api.UpdateStatus{State: api.UpdateUpdating, StartedAt: now, Message: "update in progress"}
		}
		if err := specConflict(TableServices, svc.ID, version, svc.Version, svc.SpecChangedAfter); err != nil {
			return err
		}
		svc.PreviousSpec, svc.Spec, svc.UpdatedAt, svc.SpecChangedAfter = &prev, spec, now, svc.Version
		out = &svc
		return tx.Update(TableServices, &svc)
	})
	return out, err
}

// RollbackService goes back to the service's previous spec, as a rolling
// update under its rollback config (docker service rollback).
func (m *Manager) RollbackService(ctx context.Context, id string) (*api.Service, error) {
	st, err := m.st()
	if err != nil {
		return nil, err
	}
	var out *api.Service
	err = st.Update(ctx, func(tx *raftstore.Tx) error {
		o, err := tx.Get(TableServices, id)
		if err != nil {
			return notFound("service", id)
		}
		svc := *o.(*api.Service)
		if svc.PreviousSpec == nil {
			return fmt.Errorf("%w: service %s has no previous spec to roll back to (it was never updated)", api.ErrInvalidSpec, svc.Spec.Name)
		}
		cur := svc.Spec
		now := time.Now().UTC()
		prev := cloneSpec(*svc.PreviousSpec)
		ep, err := resolveSpec(&tx.ReadTx, &prev, svc.ID, svc.Endpoint)
		if err != nil {
			return fmt.Errorf("%w (rolling back to the previous spec)", err)
		}
		if ep != nil && svc.Endpoint != nil {
			ep.VirtualIPs = svc.Endpoint.VirtualIPs
		}
		svc.Endpoint = ep
		svc.Spec, svc.PreviousSpec, svc.UpdatedAt, svc.SpecChangedAfter = prev, &cur, now, svc.Version
		svc.UpdateStatus = &api.UpdateStatus{State: api.UpdateRollbackStarted, StartedAt: now, Message: "manually requested rollback"}
		out = &svc
		return tx.Update(TableServices, &svc)
	})
	return out, err
}

// RemoveService deletes a service (by ID or name); its tasks are shut
// down and removed.
func (m *Manager) RemoveService(ctx context.Context, id string) error {
	st, err := m.st()
	if err != nil {
		return err
	}
	return retryRemoval(func() error {
		return st.Update(ctx, func(tx *raftstore.Tx) error {
			svc, err := lookup[*api.Service](&tx.ReadTx, TableServices, "service", id)
			if err != nil {
				return err
			}
			return tx.Delete(TableServices, svc.ID)
		})
	})
}

// Service returns a service by ID or name.
func (m *Manager) Service(idOrName string) (*api.Service, error) {
	st, err := m.st()
	if err != nil {
		return nil, err
	}
	var out *api.Service
	err = st.View(func(tx *raftstore.ReadTx) error {
		if o, err := tx.Get(TableServices, idOrName); err == nil {
			out = o.(*api.Service)
			return nil
		}
		found, err := list[*api.Service](tx.Find(TableServices, IndexName, idOrName))
		if err != nil {
			return err
		}
		if len(found) == 0 {
			return notFound("service", idOrName)
		}
		out = found[0]
		return nil
	})
	return out, err
}

// Services lists the services.
func (m *Manager) Services() ([]*api.Service, error) {
	return listAll[*api.Service](m, TableServices)
}

// Tasks lists a service's tasks (all tasks when serviceID is empty).
func (m *Manager) Tasks(serviceID string) ([]*api.Task, error) {
	if serviceID == "" {
		return listAll[*api.Task](m, TableTasks)
	}
	st, err := m.st()
	if err != nil {
		return nil, err
	}
	var out []*api.Task
	err = st.View(func(tx *raftstore.ReadTx) (err error) {
		out, err = list[*api.Task](tx.Find(TableTasks, IndexService, serviceID))
		return err
	})
	return out, err
}

// Task returns a task by ID.
func (m *Manager) Task(id string) (*api.Task, error) {
	st, err := m.st()
	if err != nil {
		return nil, err
	}
	var out *api.Task
	err = st.View(func(tx *raftstore.ReadTx) error {
		o, err := tx.Get(TableTasks, id)
		if err != nil {
			return notFound("task", id)
		}
		out = o.(*api.Task)
		return nil
	})
	return out, err
}

// Nodes lists the nodes; managers carry their Raft status.
func (m *Manager) Nodes() ([]*api.Node, error) {
	ns, err := listAll[*api.Node](m, TableNodes)
	if err != nil {
		return nil, err
	}
	return m.withManagerStatus(ns), nil
}

// withManagerStatus adds to the nodes that are managers their place in
// Raft: the leader, reachable or not, their address (copies: store objects
// are read-only).
func (m *Manager) withManagerStatus(ns []*api.Node) []*api.Node {
	st, err := m.st()
	if err != nil {
		return ns
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	srvs, err := st.Servers(ctx)
	if err != nil {
		return ns
	}
	leader := st.Leader()
	warning := strings.Join(m.quorumWarnings(srvs, arbitersOf(st)), "; ")
	byID := make(map[string]raftstore.Server, len(srvs))
	for _, s := range srvs {
		byID[s.ID] = s
	}
	out := make([]*api.Node, len(ns))
	for i, n := range ns {
		out[i] = n
		s, ok := byID[n.ID]
		if !ok {
			continue
		}
		c := *n
		reach := api.ReachabilityReachable
		if n.Status.State != api.NodeReady && n.ID != m.ID {
			reach = api.ReachabilityUnreachable
		}
		c.ManagerStatus = &api.ManagerStatus{Leader: s.ID == leader.ID, Reachability: reach, Addr: s.Address, Voter: s.Voter, Warning: warning}
		out[i] = &c
	}
	return out
}

// Node returns a node by ID.
func (m *Manager) Node(id string) (*api.Node, error) {
	st, err := m.st()
	if err != nil {
		return nil, err
	}
	var out *api.Node
	err = st.View(func(tx *raftstore.ReadTx) error {
		o, err := tx.Get(TableNodes, id)
		if err != nil {
			return notFound("node", id)
		}
		out = o.(*api.Node)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return m.withManagerStatus([]*api.Node{out})[0], nil
}

// lookupOne reads one object of table by ID, name or unique ID prefix.
func lookupOne[T raftstore.Object](m *Manager, table, kind, idOrName string) (T, error) {
	var out T
	st, err := m.st()
	if err != nil {
		return out, err
	}
	err = st.View(func(tx *raftstore.ReadTx) (err error) {
		out, err = lookup[T](tx, table, kind, idOrName)
		return err
	})
	return out, err
}

func listAll[T raftstore.Object](m *Manager, table string) ([]T, error) {
	st, err := m.st()
	if err != nil {
		return nil, err
	}
	var out []T
	err = st.View(func(tx *raftstore.ReadTx) (err error) {
		out, err = list[T](tx.List(table))
		return err
	})
	return out, err
}

// UpdateNode replaces what an operator sets on a node: labels (which
// node.labels.* constraints test), availability and role. version is the
// node version the caller read. A new role is the node's to take on: a
// promoted worker gets a manager certificate and joins Raft; a demoted
// manager leaves Raft (the leader removes it) and stops managing. A
// demotion that would leave the managers without a quorum is refused.
func (m *Manager) UpdateNode(ctx context.Context, id string, version uint64, spec api.NodeSpec) (*api.Node, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	st, err := m.st()
	if err != nil {
		return nil, err
	}
	var out *api.Node
	err = st.Update(ctx, func(tx *raftstore.Tx) error {
		o, err := tx.Get(TableNodes, id)
		if err != nil {
			return notFound("node", id)
		}
		n := *o.(*api.Node)
		if spec.Role == api.RoleWorker && n.Spec.Role == api.RoleManager {
			if err := m.canDemote(ctx, st, &tx.ReadTx, id); err != nil {
				return err
			}
		}
		if err := specConflict(TableNodes, n.ID, version, n.Version, n.SpecChangedAfter); err != nil {
			return err
		}
		n.Spec, n.UpdatedAt, n.SpecChangedAfter = spec, time.Now().UTC(), n.Version
		out = &n
		return tx.Update(TableNodes, &n)
	})
	return out, err
}

// SetNodeAvailability makes a node active, paused or drained: drained
// nodes have their tasks moved elsewhere; paused ones keep their tasks but
// get no new ones.
func (m *Manager) SetNodeAvailability(ctx context.Context, nodeID string, a api.NodeAvailability) error {
	if a != api.NodeActive && a != api.NodePause && a != api.NodeDrain {
		return fmt.Errorf("%w: availability %q: want active, pause or drain", api.ErrInvalidSpec, a)
	}
	st, err := m.st()
	if err != nil {
		return err
	}
	return st.Update(ctx, func(tx *raftstore.Tx) error {
		o, err := tx.Get(TableNodes, nodeID)
		if err != nil {
			return notFound("node", nodeID)
		}
		n := *o.(*api.Node)
		n.Spec.Availability, n.UpdatedAt = a, time.Now().UTC()
		return tx.Update(TableNodes, &n)
	})
}

// RemoveNode removes a node from the cluster; its tasks are replaced on
// other nodes. A node that is still up is refused unless force is set (it
// would come back at its next registration).
func (m *Manager) RemoveNode(ctx context.Context, id string, force bool) error {
	st, err := m.st()
	if err != nil {
		return err
	}
	err = retryRemoval(func() error {
		return st.Update(ctx, func(tx *raftstore.Tx) error {
			o, err := tx.Get(TableNodes, id)
			if err != nil {
				return notFound("node", id)
			}
			if n := o.(*api.Node); n.Status.State == api.NodeReady && !force {
				return fmt.Errorf("%w: node %s is up: stop it first (or drain it and force the removal)", api.ErrInvalidSpec, id)
			}
			if err := tx.Delete(TableNodes, id); err != nil {
				return err
			}
			// Its certificates are refused from now on, until they expire.
			c0, err := clusterObject(&tx.ReadTx)
			if err != nil {
				return err
			}
			c := *c0
			c.RemovedNodes = withRemoved(c.RemovedNodes, &c, id)
			return tx.Update(TableClusters, &c)
		})
	})
	if err == nil {
		// Its session ends with it (a live node's stream would otherwise
		// go on until it reconnects, and then be refused).
		m.disp.endStream(id)
	}
	return err
}

// Cluster returns the cluster object (without the CA's key).
func (m *Manager) Cluster() (*api.Cluster, error) {
	st, err := m.st()
	if err != nil {
		return nil, err
	}
	var c *api.Cluster
	if err := st.View(func(tx *raftstore.ReadTx) (err error) { c, err = clusterObject(tx); return err }); err != nil {
		return nil, err
	}
	out := redacted(c)
	out.Warnings = m.clusterWarnings(st, c)
	return out, nil
}

// UpdateCluster replaces the cluster's configuration; version is the one
// the caller read.
func (m *Manager) UpdateCluster(ctx context.Context, version uint64, spec api.ClusterSpec) (*api.Cluster, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	st, err := m.st()
	if err != nil {
		return nil, err
	}
	var out *api.Cluster
	err = st.Update(ctx, func(tx *raftstore.Tx) error {
		cs, err := list[*api.Cluster](tx.List(TableClusters))
		if err != nil {
			return err
		}
		if len(cs) == 0 {
			return fmt.Errorf("%w: the cluster object (no leader has run yet)", ErrNotFound)
		}
		c := *cs[0]
		if spec.Name != c.Spec.Name {
			return fmt.Errorf("%w: spec.name: the cluster's name is %q and cannot change", api.ErrInvalidSpec, c.Spec.Name)
		}
		c.Spec, c.Version, c.UpdatedAt = spec, version, time.Now().UTC()
		out = &c
		return tx.Update(TableClusters, &c)
	})
	if err != nil {
		return nil, err
	}
	return redacted(out), nil
}

// canDemote refuses a demotion that would leave no manager, or fewer
// managers up than a quorum of those left.
func (m *Manager) canDemote(ctx context.Context, st *raftstore.Store, tx *raftstore.ReadTx, id string) error {
	srvs, err := st.Servers(ctx)
	if err != nil {
		return err
	}
	voters, up := 0, 0
	for _, s := range srvs {
		if !s.Voter || s.ID == id {
			continue
		}
		voters++
		if o, err := tx.Get(TableNodes, s.ID); err == nil && o.(*api.Node).Status.State == api.NodeReady {
			up++
		} else if s.ID == m.ID {
			up++ // this manager is up: it answers
		}
	}
	switch {
	case voters == 0:
		return fmt.Errorf("%w: node %s is the last manager: promote another node first", api.ErrInvalidSpec, id)
	case up < voters/2+1:
		return fmt.Errorf("%w: demoting node %s would leave %d of %d managers up, short of a quorum of %d: bring managers back first", api.ErrInvalidSpec, id, up, voters, voters/2+1)
	}
	return nil
}

// specConflict refuses an update based on a version read before the
// object's spec last changed (changedAfter): the caller would overwrite a
// change it has not seen. Changes the managers made since (status,
// allocations) do not count: they are not the caller's to see.
func specConflict(table, id string, based, current, changedAfter uint64) error {
	if based == 0 || based > current || based <= changedAfter {
		return &raftstore.ConflictError{Table: table, ID: id, Expected: based, Actual: current}
	}
	return nil
}
