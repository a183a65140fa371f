package swarm

import (
	"fmt"

	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm/api"
)

// Tables of the managers' replicated store.
const (
	TableNodes    = "nodes"
	TableServices = "services"
	TableTasks    = "tasks"
	TableNetworks = "networks"
	TableSecrets  = "secrets"
	TableConfigs  = "configs"
	TableClusters = "clusters"
)

// Secondary indexes.
const (
	// IndexName finds services, networks, secrets and configs by name.
	IndexName = "name"
	// IndexService finds a service's tasks.
	IndexService = "service"
	// IndexNode finds the tasks assigned to a node.
	IndexNode = "node"
)

// Schema is the managers' store: the swarm/api objects with the indexes
// the orchestrators, the scheduler and the dispatcher look them up by.
func Schema() *raftstore.Schema {
	named := func(name func(raftstore.Object) string) map[string]raftstore.IndexFunc {
		return map[string]raftstore.IndexFunc{IndexName: func(o raftstore.Object) []string { return []string{name(o)} }}
	}
	return &raftstore.Schema{Tables: []raftstore.Table{
		{Name: TableNodes, New: func() raftstore.Object { return &api.Node{} }},
		{Name: TableServices, New: func() raftstore.Object { return &api.Service{} }, Unique: []string{IndexName},
			Indexes: named(func(o raftstore.Object) string { return o.(*api.Service).Spec.Name })},
		{Name: TableTasks, New: func() raftstore.Object { return &api.Task{} },
			Indexes: map[string]raftstore.IndexFunc{
				IndexService: func(o raftstore.Object) []string { return []string{o.(*api.Task).ServiceID} },
				IndexNode:    func(o raftstore.Object) []string { return []string{o.(*api.Task).NodeID} },
			}},
		{Name: TableNetworks, New: func() raftstore.Object { return &api.Network{} }, Unique: []string{IndexName},
			Indexes: named(func(o raftstore.Object) string { return o.(*api.Network).Spec.Name })},
		{Name: TableSecrets, New: func() raftstore.Object { return &api.Secret{} }, Unique: []string{IndexName},
			Indexes: named(func(o raftstore.Object) string { return o.(*api.Secret).Spec.Name })},
		{Name: TableConfigs, New: func() raftstore.Object { return &api.Config{} }, Unique: []string{IndexName},
			Indexes: named(func(o raftstore.Object) string { return o.(*api.Config).Spec.Name })},
		// One cluster object: its name is unique and cannot change.
		{Name: TableClusters, New: func() raftstore.Object { return &api.Cluster{} }, Unique: []string{IndexName},
			Indexes: named(func(o raftstore.Object) string { return o.(*api.Cluster).Spec.Name })},
	}}
}

// list returns a table's objects as their type.
func list[T raftstore.Object](objs []raftstore.Object, err error) ([]T, error) {
	if err != nil {
		return nil, err
	}
	out := make([]T, len(objs))
	for i, o := range objs {
		t, ok := o.(T)
		if !ok {
			return nil, fmt.Errorf("swarm: store object %T is not a %T", o, t)
		}
		out[i] = t
	}
	return out, nil
}
