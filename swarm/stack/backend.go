package stack

import (
	"context"

	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// Backend is what the stack operations need of a cluster: the control
// API's Go client, *swarm.Client, implements it. Each kind has a create
// that returns the stored object, a list through a swarm.Filter (names
// match by prefix, labels as "key" or "key=value") and a remove by ID or
// name; services also a read by name and an update with the version read.
//
// Errors are the swarm package's: swarm.ErrNotFound for a missing object,
// swarm.ErrNameInUse for a create whose name is taken, raftstore.ErrConflict
// for an update based on an old version; a spec the cluster refuses wraps
// api.ErrInvalidSpec.
type Backend interface {
	ServiceBackend
	NetworkBackend
	SecretBackend
	ConfigBackend
}

// ServiceBackend manages services. The cluster may store a spec with its
// references resolved (network names to IDs, secret and config IDs
// filled in): Deploy compares specs as resolved.
type ServiceBackend interface {
	CreateService(ctx context.Context, spec api.ServiceSpec) (*api.Service, error)
	// Service returns a service by ID or exact name.
	Service(ctx context.Context, idOrName string) (*api.Service, error)
	Services(ctx context.Context, f swarm.Filter) ([]*api.Service, error)
	// UpdateService replaces a service's spec; version is the one read.
	UpdateService(ctx context.Context, id string, version uint64, spec api.ServiceSpec) (*api.Service, error)
	RemoveService(ctx context.Context, idOrName string) error
	// Tasks lists tasks; f.Services holds service IDs.
	Tasks(ctx context.Context, f swarm.Filter) ([]*api.Task, error)
}

// NetworkBackend manages networks.
type NetworkBackend interface {
	CreateNetwork(ctx context.Context, spec api.NetworkSpec) (*api.Network, error)
	Networks(ctx context.Context, f swarm.Filter) ([]*api.Network, error)
	RemoveNetwork(ctx context.Context, idOrName string) error
}

// SecretBackend manages secrets. Listed secrets may come without their
// data (the API never returns it).
type SecretBackend interface {
	CreateSecret(ctx context.Context, spec api.SecretSpec) (*api.Secret, error)
	// UpdateSecret changes a secret's labels; data other than the
	// secret's is refused (api.ErrInvalidSpec), the same data accepted,
	// as Docker's: how a redeploy finds out that a secret's data changed.
	UpdateSecret(ctx context.Context, id string, version uint64, spec api.SecretSpec) (*api.Secret, error)
	Secrets(ctx context.Context, f swarm.Filter) ([]*api.Secret, error)
	RemoveSecret(ctx context.Context, idOrName string) error
}

// ConfigBackend manages configs.
type ConfigBackend interface {
	CreateConfig(ctx context.Context, spec api.ConfigSpec) (*api.Config, error)
	Configs(ctx context.Context, f swarm.Filter) ([]*api.Config, error)
	RemoveConfig(ctx context.Context, idOrName string) error
}

var _ Backend = (*swarm.Client)(nil)
