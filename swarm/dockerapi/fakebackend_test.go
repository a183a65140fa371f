package dockerapi

import (
	"context"
	"strings"

	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// memBackend is a Backend of fixed objects, for the handler's fuzz test:
// one of each kind, found by ID or name, writes that succeed and change
// nothing. Its secret holds its data, as a careless backend might: the
// handler must never show it.
type memBackend struct{}

var _ Backend = memBackend{}

const fakeSecretData = "hunter2-fuzz"

var (
	fakeService = &api.Service{Meta: api.Meta{ID: "svc1", Version: 5}, Spec: api.ServiceSpec{Annotations: api.Annotations{Name: "web", Labels: map[string]string{stackNamespaceLabel: "st"}},
		Mode: api.Replicated(2), TaskTemplate: api.TaskSpec{Image: "x", Networks: []api.NetworkTarget{{Target: "net1"}},
			Secrets: []api.SecretReference{{SecretID: "sec1", SecretName: "pw"}}},
		EndpointSpec: &api.EndpointSpec{Ports: []api.PortConfig{{TargetPort: 80, PublishedPort: 8080}}}},
		Endpoint: &api.Endpoint{VirtualIPs: []api.VirtualIP{{NetworkID: "net1", Addr: "10.0.1.2/24"}}}}
	fakeTask    = &api.Task{Meta: api.Meta{ID: "task1"}, ServiceID: "svc1", NodeID: "node1", Slot: 1, Spec: fakeService.Spec.TaskTemplate}
	fakeNode    = &api.Node{Meta: api.Meta{ID: "node1", Version: 2}, Spec: api.NodeSpec{Role: api.RoleManager, Availability: api.NodeActive}}
	fakeNetwork = &api.Network{Meta: api.Meta{ID: "net1"}, Spec: api.NetworkSpec{Annotations: api.Annotations{Name: "front"}, Driver: "overlay"},
		VNI: 4097, IPAM: &api.IPAMConfig{Subnet: "10.0.1.0/24", Gateway: "10.0.1.1"}}
	fakeSecret = &api.Secret{Meta: api.Meta{ID: "sec1", Version: 3}, Spec: api.SecretSpec{Annotations: api.Annotations{Name: "pw"}, Data: []byte(fakeSecretData)}}
	fakeConfig = &api.Config{Meta: api.Meta{ID: "cfg1", Version: 3}, Spec: api.ConfigSpec{Annotations: api.Annotations{Name: "app.conf"}, Data: []byte("x=1")}}
)

func find[T any](ref, id, name string, v T) (T, error) {
	if ref == id || ref == name {
		return v, nil
	}
	var zero T
	return zero, swarm.ErrNotFound
}

func (memBackend) CreateService(_ context.Context, spec api.ServiceSpec) (*api.Service, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	return fakeService, nil
}
func (memBackend) Service(_ context.Context, ref string) (*api.Service, error) {
	return find(ref, "svc1", "web", fakeService)
}
func (memBackend) Services(context.Context, swarm.Filter) ([]*api.Service, error) {
	return []*api.Service{fakeService}, nil
}
func (memBackend) UpdateService(_ context.Context, _ string, _ uint64, spec api.ServiceSpec) (*api.Service, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	return fakeService, nil
}
func (memBackend) RollbackService(context.Context, string) (*api.Service, error) {
	return fakeService, nil
}
func (b memBackend) RemoveService(ctx context.Context, ref string) error {
	_, err := b.Service(ctx, ref)
	return err
}
func (memBackend) Tasks(context.Context, swarm.Filter) ([]*api.Task, error) {
	return []*api.Task{fakeTask}, nil
}
func (memBackend) Task(_ context.Context, id string) (*api.Task, error) {
	return find(id, "task1", "", fakeTask)
}
func (memBackend) Nodes(context.Context, swarm.Filter) ([]*api.Node, error) {
	return []*api.Node{fakeNode}, nil
}
func (memBackend) Node(_ context.Context, id string) (*api.Node, error) {
	return find(id, "node1", "", fakeNode)
}
func (memBackend) UpdateNode(_ context.Context, _ string, _ uint64, spec api.NodeSpec) (*api.Node, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	return fakeNode, nil
}
func (b memBackend) RemoveNode(ctx context.Context, id string, _ bool) error {
	_, err := b.Node(ctx, id)
	return err
}
func (memBackend) Cluster(context.Context) (*api.Cluster, error) {
	return &api.Cluster{Meta: api.Meta{ID: "c1", Version: 1}, Spec: swarm.DefaultClusterSpec()}, nil
}
func (b memBackend) UpdateCluster(ctx context.Context, _ uint64, _ api.ClusterSpec) (*api.Cluster, error) {
	return b.Cluster(ctx)
}
func (b memBackend) RotateJoinToken(ctx context.Context, _ api.NodeRole) (*api.Cluster, error) {
	return b.Cluster(ctx)
}
func (memBackend) Events(context.Context, uint64, ...string) (<-chan swarm.Event, error) {
	ch := make(chan swarm.Event)
	close(ch)
	return ch, nil
}
func (memBackend) CreateNetwork(_ context.Context, spec api.NetworkSpec) (*api.Network, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	return fakeNetwork, nil
}
func (memBackend) Network(_ context.Context, ref string) (*api.Network, error) {
	return find(ref, "net1", "front", fakeNetwork)
}
func (memBackend) Networks(context.Context, swarm.Filter) ([]*api.Network, error) {
	return []*api.Network{fakeNetwork}, nil
}
func (b memBackend) RemoveNetwork(ctx context.Context, ref string) error {
	_, err := b.Network(ctx, ref)
	return err
}
func (memBackend) CreateSecret(_ context.Context, spec api.SecretSpec) (*api.Secret, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	return fakeSecret, nil
}
func (memBackend) Secret(_ context.Context, ref string) (*api.Secret, error) {
	return find(ref, "sec1", "pw", fakeSecret)
}
func (memBackend) Secrets(context.Context, swarm.Filter) ([]*api.Secret, error) {
	return []*api.Secret{fakeSecret}, nil
}
func (b memBackend) UpdateSecret(ctx context.Context, id string, _ uint64, _ api.SecretSpec) (*api.Secret, error) {
	return b.Secret(ctx, id)
}
func (b memBackend) RemoveSecret(ctx context.Context, ref string) error {
	_, err := b.Secret(ctx, ref)
	return err
}
func (memBackend) CreateConfig(_ context.Context, spec api.ConfigSpec) (*api.Config, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	return fakeConfig, nil
}
func (memBackend) Config(_ context.Context, ref string) (*api.Config, error) {
	return find(ref, "cfg1", "app.conf", fakeConfig)
}
func (memBackend) Configs(context.Context, swarm.Filter) ([]*api.Config, error) {
	return []*api.Config{fakeConfig}, nil
}
func (b memBackend) UpdateConfig(ctx context.Context, id string, _ uint64, _ api.ConfigSpec) (*api.Config, error) {
	return b.Config(ctx, id)
}
func (b memBackend) RemoveConfig(ctx context.Context, ref string) error {
	_, err := b.Config(ctx, ref)
	return err
}

// hasFakeSecret reports whether an answer shows the fake secret's data,
// plain or in base64.
func hasFakeSecret(body string) bool {
	return strings.Contains(body, fakeSecretData) || strings.Contains(body, "aHVudGVyMi1mdXp6")
}

func (memBackend) ServiceLogs(_ context.Context, ref string, _ swarm.LogOptions) (*swarm.LogStream, error) {
	if _, err := find(ref, "svc1", "web", fakeService); err != nil {
		return nil, err
	}
	return nil, notYet("logs (the fake gathers none)")
}
func (memBackend) TaskLogs(_ context.Context, id string, _ swarm.LogOptions) (*swarm.LogStream, error) {
	if _, err := find(id, "task1", "", fakeTask); err != nil {
		return nil, err
	}
	return nil, notYet("logs (the fake gathers none)")
}
