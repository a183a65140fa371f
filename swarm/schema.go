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
	// IndexNetwork, IndexSecret and IndexConfig find the services that use
	// a network, secret or config (by ID).
	IndexNetwork = "network"
	IndexSecret  = "secret"
	IndexConfig  = "config"
	// IndexPort is a service's ingress published ports ("tcp/8080"),
	// unique across services.
	IndexPort = "port"
	// IndexSubnet and IndexVNI are networks' allocations, unique.
	IndexSubnet = "subnet"
	IndexVNI    = "vni"
)

// Schema is the managers' store: the swarm/api objects with the indexes
// the orchestrators, the scheduler and the dispatcher look them up by.
func Schema() *raftstore.Schema {
	named := func(name func(raftstore.Object) string) map[string]raftstore.IndexFunc {
		return map[string]raftstore.IndexFunc{IndexName: func(o raftstore.Object) []string { return []string{name(o)} }}
	}
	return &raftstore.Schema{Tables: []raftstore.Table{
		{Name: TableNodes, New: func() raftstore.Object { return &api.Node{} }},
		{Name: TableServices, New: func() raftstore.Object { return &api.Service{} }, Unique: []string{IndexName, IndexPort},
			Indexes: map[string]raftstore.IndexFunc{
				IndexName:    func(o raftstore.Object) []string { return []string{o.(*api.Service).Spec.Name} },
				IndexNetwork: func(o raftstore.Object) []string { return serviceNetworks(o.(*api.Service)) },
				IndexSecret: func(o raftstore.Object) []string {
					var out []string
					for _, r := range o.(*api.Service).Spec.TaskTemplate.Secrets {
						out = append(out, r.SecretID)
					}
					return out
				},
				IndexConfig: func(o raftstore.Object) []string {
					var out []string
					for _, r := range o.(*api.Service).Spec.TaskTemplate.Configs {
						out = append(out, r.ConfigID)
					}
					return out
				},
				IndexPort: func(o raftstore.Object) []string { return ingressPortKeys(o.(*api.Service)) },
			}},
		// Tasks are many and alike (a service's tasks differ in a few
		// fields): compressed against the first task they shrink several
		// times in memory, in the log and in snapshots. Tasks carry no
		// secret data (secrets are referenced by ID), so keeping the first
		// task's bytes as the dictionary is safe.
		{Name: TableTasks, New: func() raftstore.Object { return &api.Task{} }, Compress: true,
			Indexes: map[string]raftstore.IndexFunc{
				IndexService: func(o raftstore.Object) []string { return []string{o.(*api.Task).ServiceID} },
				IndexNode:    func(o raftstore.Object) []string { return []string{o.(*api.Task).NodeID} },
			}},
		{Name: TableNetworks, New: func() raftstore.Object { return &api.Network{} }, Unique: []string{IndexName, IndexSubnet, IndexVNI},
			Indexes: map[string]raftstore.IndexFunc{
				IndexName: func(o raftstore.Object) []string { return []string{o.(*api.Network).Spec.Name} },
				IndexSubnet: func(o raftstore.Object) []string {
					if n := o.(*api.Network); n.IPAM != nil {
						return []string{n.IPAM.Subnet}
					}
					return nil
				},
				IndexVNI: func(o raftstore.Object) []string {
					if n := o.(*api.Network); n.VNI != 0 {
						return []string{fmt.Sprint(n.VNI)}
					}
					return nil
				},
			}},
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

// serviceNetworks lists the network IDs a service's tasks attach to.
func serviceNetworks(svc *api.Service) []string {
	var out []string
	for _, n := range svc.Spec.TaskTemplate.Networks {
		out = append(out, n.Target)
	}
	return out
}

// ingressPortKeys lists a service's ingress published ports as
// "proto/port" (allocated ones, from its endpoint).
func ingressPortKeys(svc *api.Service) []string {
	if svc.Endpoint == nil {
		return nil
	}
	var out []string
	for _, p := range svc.Endpoint.Ports {
		if p.PublishMode != api.PublishHost && p.PublishedPort != 0 {
			out = append(out, portKey(p))
		}
	}
	return out
}

func portKey(p api.PortConfig) string {
	proto := p.Protocol
	if proto == "" {
		proto = api.TCP
	}
	return fmt.Sprintf("%s/%d", proto, p.PublishedPort)
}
