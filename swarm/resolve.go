package swarm

import (
	"fmt"
	"slices"

	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm/api"
)

// ReservedPorts cannot be published: the management port, gossip, VXLAN
// and SSH. A service publishing one would take the node's own port.
var ReservedPorts = []uint32{22, DefaultManagementPort, 7946, 4789}

// resolveSpec checks a service spec's references in the transaction and
// resolves them: networks, secrets and configs named by name or ID get
// their IDs (an unknown one is a clear error); published ports are
// allocated (ingress ports are unique across the cluster; 0 picks one from
// 30000-32767). prev is the service's endpoint before (an update keeps the
// ports it had). It returns the endpoint to record.
func resolveSpec(tx *raftstore.ReadTx, spec *api.ServiceSpec, self string, prev *api.Endpoint) (*api.Endpoint, error) {
	ts := &spec.TaskTemplate
	for i, n := range ts.Networks {
		net, err := lookup[*api.Network](tx, TableNetworks, "network", n.Target)
		if err != nil {
			return nil, fmt.Errorf("%w: spec.taskTemplate.networks[%d]: network %q does not exist: create it first", api.ErrInvalidSpec, i, n.Target)
		}
		if net.Spec.Ingress {
			return nil, fmt.Errorf("%w: spec.taskTemplate.networks[%d]: the ingress network is for published ports; services join it by publishing one", api.ErrInvalidSpec, i)
		}
		ts.Networks[i].Target = net.ID
	}
	for i, r := range ts.Secrets {
		sec, err := lookup[*api.Secret](tx, TableSecrets, "secret", firstOf(r.SecretID, r.SecretName))
		if err != nil {
			return nil, fmt.Errorf("%w: spec.taskTemplate.secrets[%d]: secret %q does not exist: create it first", api.ErrInvalidSpec, i, firstOf(r.SecretName, r.SecretID))
		}
		ts.Secrets[i].SecretID, ts.Secrets[i].SecretName = sec.ID, sec.Spec.Name
	}
	for i, r := range ts.Configs {
		cfg, err := lookup[*api.Config](tx, TableConfigs, "config", firstOf(r.ConfigID, r.ConfigName))
		if err != nil {
			return nil, fmt.Errorf("%w: spec.taskTemplate.configs[%d]: config %q does not exist: create it first", api.ErrInvalidSpec, i, firstOf(r.ConfigName, r.ConfigID))
		}
		ts.Configs[i].ConfigID, ts.Configs[i].ConfigName = cfg.ID, cfg.Spec.Name
	}
	if spec.EndpointSpec == nil || len(spec.EndpointSpec.Ports) == 0 {
		return nil, nil
	}
	ep := &api.Endpoint{Spec: *spec.EndpointSpec}
	var taken map[string]bool // ingress ports of other services, if needed
	for i, p := range spec.EndpointSpec.Ports {
		if p.Protocol == "" {
			p.Protocol = api.TCP
		}
		if p.PublishMode == "" {
			p.PublishMode = api.PublishIngress
		}
		field := fmt.Sprintf("spec.endpointSpec.ports[%d].publishedPort", i)
		if slices.Contains(ReservedPorts, p.PublishedPort) {
			return nil, fmt.Errorf("%w: %s: %d is reserved (management %d, gossip 7946, VXLAN 4789, SSH 22)", api.ErrInvalidSpec, field, p.PublishedPort, DefaultManagementPort)
		}
		if p.PublishMode == api.PublishIngress {
			if p.PublishedPort == 0 {
				p.PublishedPort = previousPort(prev, p)
			}
			if p.PublishedPort == 0 {
				if taken == nil {
					var err error
					if taken, err = ingressPortsTaken(tx, self); err != nil {
						return nil, err
					}
				}
				for _, q := range ep.Ports {
					taken[portKey(q)] = true
				}
				for port := uint32(api.DynamicPortStart); port <= api.DynamicPortEnd; port++ {
					c := p
					c.PublishedPort = port
					if !taken[portKey(c)] {
						p.PublishedPort = port
						break
					}
				}
				if p.PublishedPort == 0 {
					return nil, fmt.Errorf("%w: %s: every port of %d-%d is taken", api.ErrInvalidSpec, field, api.DynamicPortStart, api.DynamicPortEnd)
				}
			} else if holders, err := list[*api.Service](tx.Find(TableServices, IndexPort, portKey(p))); err != nil {
				return nil, err
			} else {
				for _, h := range holders {
					if h.ID != self {
						return nil, fmt.Errorf("%w: %s: port %d/%s is published by service %s already", api.ErrInvalidSpec, field, p.PublishedPort, p.Protocol, h.Spec.Name)
					}
				}
			}
			for _, q := range ep.Ports {
				if q.PublishMode == api.PublishIngress && portKey(q) == portKey(p) {
					return nil, fmt.Errorf("%w: %s: port %d/%s is published twice", api.ErrInvalidSpec, field, p.PublishedPort, p.Protocol)
				}
			}
		}
		ep.Ports = append(ep.Ports, p)
	}
	return ep, nil
}

// previousPort is the port an update keeps for a port it does not name.
func previousPort(prev *api.Endpoint, p api.PortConfig) uint32 {
	if prev == nil {
		return 0
	}
	for _, q := range prev.Ports {
		if q.TargetPort == p.TargetPort && q.Protocol == p.Protocol && q.PublishMode == api.PublishIngress {
			return q.PublishedPort
		}
	}
	return 0
}

func ingressPortsTaken(tx *raftstore.ReadTx, self string) (map[string]bool, error) {
	svcs, err := list[*api.Service](tx.List(TableServices))
	if err != nil {
		return nil, err
	}
	taken := map[string]bool{}
	for _, s := range svcs {
		if s.ID == self {
			continue
		}
		for _, k := range ingressPortKeys(s) {
			taken[k] = true
		}
	}
	return taken, nil
}

func firstOf(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
