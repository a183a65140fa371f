package dockerapi

import (
	"context"
	"errors"
	"net"

	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// Backend is the cluster the handler serves: Shoal's control API.
// *swarm.Client implements it (a Node's Client talks to the managers over
// mutual TLS and follows the leader).
type Backend interface {
	CreateService(ctx context.Context, spec api.ServiceSpec) (*api.Service, error)
	Service(ctx context.Context, idOrName string) (*api.Service, error)
	Services(ctx context.Context, f swarm.Filter) ([]*api.Service, error)
	UpdateService(ctx context.Context, id string, version uint64, spec api.ServiceSpec) (*api.Service, error)
	RollbackService(ctx context.Context, idOrName string) (*api.Service, error)
	RemoveService(ctx context.Context, idOrName string) error
	Tasks(ctx context.Context, f swarm.Filter) ([]*api.Task, error)
	Task(ctx context.Context, id string) (*api.Task, error)
	Nodes(ctx context.Context, f swarm.Filter) ([]*api.Node, error)
	Node(ctx context.Context, id string) (*api.Node, error)
	UpdateNode(ctx context.Context, id string, version uint64, spec api.NodeSpec) (*api.Node, error)
	RemoveNode(ctx context.Context, id string, force bool) error
	Cluster(ctx context.Context) (*api.Cluster, error)
	UpdateCluster(ctx context.Context, version uint64, spec api.ClusterSpec) (*api.Cluster, error)
	RotateJoinToken(ctx context.Context, role api.NodeRole) (*api.Cluster, error)
	Events(ctx context.Context, since uint64, types ...string) (<-chan swarm.Event, error)
	ServiceLogs(ctx context.Context, idOrName string, opts swarm.LogOptions) (*swarm.LogStream, error)
	TaskLogs(ctx context.Context, taskID string, opts swarm.LogOptions) (*swarm.LogStream, error)

	CreateNetwork(ctx context.Context, spec api.NetworkSpec) (*api.Network, error)
	Network(ctx context.Context, idOrName string) (*api.Network, error)
	Networks(ctx context.Context, f swarm.Filter) ([]*api.Network, error)
	RemoveNetwork(ctx context.Context, idOrName string) error

	CreateSecret(ctx context.Context, spec api.SecretSpec) (*api.Secret, error)
	Secret(ctx context.Context, idOrName string) (*api.Secret, error)
	Secrets(ctx context.Context, f swarm.Filter) ([]*api.Secret, error)
	UpdateSecret(ctx context.Context, id string, version uint64, spec api.SecretSpec) (*api.Secret, error)
	RemoveSecret(ctx context.Context, idOrName string) error

	CreateConfig(ctx context.Context, spec api.ConfigSpec) (*api.Config, error)
	Config(ctx context.Context, idOrName string) (*api.Config, error)
	Configs(ctx context.Context, f swarm.Filter) ([]*api.Config, error)
	UpdateConfig(ctx context.Context, id string, version uint64, spec api.ConfigSpec) (*api.Config, error)
	RemoveConfig(ctx context.Context, idOrName string) error
}

var _ Backend = (*swarm.Client)(nil)

// Self is the node the API speaks for: the Docker CLI asks it who it is
// (docker info's NodeID, the '*' of docker node ls, the address of
// docker swarm join-token). *swarm.Node implements it.
type Self interface {
	// ID is the node's ID.
	ID() string
	// Role is "manager" or "worker". A worker's handler refuses the swarm
	// calls, as dockerd does on a worker.
	Role() string
	// Addr is a manager's management address (host:port), "" on workers.
	Addr() string
}

var _ Self = (*swarm.Node)(nil)

// ManagerCertChecker is a Self that can say whether a client
// certificate's node may still act as a manager: over TLS, Handler asks it
// at every request, so that a connection made before its node was demoted
// or removed does not keep the API (the handshake checks only new
// connections), and again every Handler.PeerRecheck while a call lasts (a
// stream opened before ends). ForNode's Self does, with
// swarm.Manager.CheckManagerCert.
type ManagerCertChecker interface {
	// CheckManagerCert returns an error wrapping swarm.ErrNotAManagerNow
	// for a node that is no longer a manager.
	CheckManagerCert(nodeID string) error
}

// UnlockKeyer is a Self that can hand out its manager's unlock key
// (GET /swarm/unlockkey). Without it, the handler answers "not supported".
type UnlockKeyer interface {
	// UnlockKey returns the unlock key; "" when autolock is off.
	UnlockKey() (string, error)
}

// Unlocker is a Self whose locked manager can be unlocked
// (POST /swarm/unlock, docker swarm unlock).
type Unlocker interface {
	// Locked reports whether the manager waits for its unlock key.
	Locked() bool
	// Unlock opens the manager with its unlock key.
	Unlock(ctx context.Context, key string) error
}

// ForNode returns a handler for a started node (after Init, Join or Start):
// the cluster through the node's Client, the node as Self, with its
// manager's unlock key and unlock.
func ForNode(n *swarm.Node) (*Handler, error) {
	c := n.Client()
	if c == nil {
		return nil, errors.New("dockerapi: the node has not started (call Init, Join or Start first)")
	}
	return &Handler{Backend: c, Self: nodeSelf{n}}, nil
}

// nodeSelf adds a node's manager's unlock key and unlock to the node.
type nodeSelf struct{ *swarm.Node }

var (
	_ UnlockKeyer        = nodeSelf{}
	_ Unlocker           = nodeSelf{}
	_ ManagerCertChecker = nodeSelf{}
)

// CheckManagerCert asks the node's manager; a node that runs none (a
// worker) has nothing to check: its handler refuses the swarm calls
// itself, as dockerd does on a worker.
func (s nodeSelf) CheckManagerCert(nodeID string) error {
	m := s.Manager()
	if m == nil {
		return nil
	}
	return m.CheckManagerCert(nodeID)
}

func (s nodeSelf) UnlockKey() (string, error) {
	m := s.Manager()
	if m == nil {
		return "", errNotManager
	}
	k, err := m.UnlockKey()
	if err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, swarm.ErrNotStarted) && !errors.Is(err, swarm.ErrLocked) {
		// Autolock is off: there is no key, which dockerd says with "".
		return "", nil
	}
	return k, err
}

func (s nodeSelf) Locked() bool {
	m := s.Manager()
	return m != nil && m.Locked()
}

func (s nodeSelf) Unlock(ctx context.Context, key string) error {
	m := s.Manager()
	if m == nil {
		return errNotManager
	}
	return m.Unlock(ctx, key)
}
