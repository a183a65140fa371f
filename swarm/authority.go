package swarm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/ca"
)

// The cluster's certificate authority on the managers: the root CA and
// its key live in the cluster object (sealed at rest with the rest of the
// store, never sent out by the API), so any manager issues certificates:
// to joining nodes that show a join token, and to nodes renewing theirs.

// newClusterObject makes the cluster object of a new cluster: its ID is
// the root's cluster ID, with a join token per role.
func newClusterObject(root *ca.Root, now time.Time) (*api.Cluster, error) {
	var err error
	if root == nil {
		if root, err = ca.NewRoot(newID()); err != nil {
			return nil, err
		}
	}
	keyPEM, err := root.KeyPEM()
	if err != nil {
		return nil, fmt.Errorf("swarm: the cluster's root CA must come with its key: %w", err)
	}
	worker, err := ca.NewToken(root)
	if err != nil {
		return nil, err
	}
	manager, err := ca.NewToken(root)
	if err != nil {
		return nil, err
	}
	arbiter, err := ca.NewToken(root)
	if err != nil {
		return nil, err
	}
	d := root.Digest()
	return &api.Cluster{Meta: api.Meta{ID: root.ClusterID(), CreatedAt: now, UpdatedAt: now}, Spec: DefaultClusterSpec(),
		RootCA:     api.RootCA{CACertPEM: root.CertPEM(), CAKeyPEM: keyPEM, Digest: fmt.Sprintf("sha256:%x", d)},
		JoinTokens: api.JoinTokens{Worker: worker, Manager: manager, Arbiter: arbiter}}, nil
}

// clusterObject reads the cluster object whole (with the CA key).
func clusterObject(tx *raftstore.ReadTx) (*api.Cluster, error) {
	cs, err := list[*api.Cluster](tx.List(TableClusters))
	if err != nil {
		return nil, err
	}
	if len(cs) == 0 {
		return nil, fmt.Errorf("%w: the cluster object (no leader has run yet)", ErrNotFound)
	}
	return cs[0], nil
}

// redacted is the cluster object as the API shows it: without the CA key.
func redacted(c *api.Cluster) *api.Cluster {
	out := *c
	out.RootCA.CAKeyPEM = nil
	return &out
}

// Root returns the cluster's root CA (with its key: it can issue).
func (m *Manager) Root() (*ca.Root, error) {
	st, err := m.st()
	if err != nil {
		return nil, err
	}
	var c *api.Cluster
	if err := st.View(func(tx *raftstore.ReadTx) (err error) { c, err = clusterObject(tx); return err }); err != nil {
		return nil, err
	}
	return ca.ParseRoot(c.RootCA.CACertPEM, c.RootCA.CAKeyPEM)
}

// certValidity is how long the node certificates the cluster issues last.
func certValidity(c *api.Cluster) time.Duration {
	if v := c.Spec.CAConfig.NodeCertExpiry; v > 0 {
		return v
	}
	return ca.DefaultNodeCertValidity
}

// errAddrRequired asks a node that joins with a manager token for its
// management address (it opens its port first).
var errAddrRequired = errors.New("swarm: a joining manager must say its management address")

// JoinRequest is what a joining node sends (on the join protocol).
type JoinRequest struct {
	// Token is the join token: it says the role.
	Token string `json:"token"`
	// CSR is the node's certificate request (PEM).
	CSR []byte `json:"csr"`
	// Addr is a joining manager's management address (host:port), where
	// the others reach its Raft.
	Addr string `json:"addr,omitempty"`
	// Arbiter says the node joins as an arbiter (swarm.Arbiter): only the
	// arbiter token admits it, and the arbiter token admits nothing else.
	Arbiter bool `json:"arbiter,omitempty"`
}

// JoinAnswer is what a joining node gets back.
type JoinAnswer struct {
	NodeID string `json:"nodeID"`
	Role   string `json:"role"`
	// Cert is the node's certificate, Root the cluster's CA certificate
	// (both PEM).
	Cert []byte `json:"cert"`
	Root []byte `json:"root"`
	// Managers are the managers' management addresses.
	Managers []string `json:"managers"`
}

// Join admits a node that shows a join token: it issues the node a
// certificate for the token's role under a new node ID; a manager is
// added to Raft as a non-voter (it becomes a voter once it has caught up,
// see PromoteSelf). Only the leader admits managers.
func (m *Manager) Join(ctx context.Context, req JoinRequest) (JoinAnswer, error) {
	st, err := m.st()
	if err != nil {
		return JoinAnswer{}, err
	}
	if _, err := ca.ParseToken(req.Token); err != nil {
		return JoinAnswer{}, fmt.Errorf("%w: %v", api.ErrInvalidSpec, err)
	}
	var c *api.Cluster
	if err := st.View(func(tx *raftstore.ReadTx) (err error) { c, err = clusterObject(tx); return err }); err != nil {
		return JoinAnswer{}, err
	}
	var role ca.Role
	switch {
	case ca.SecretEqual(req.Token, c.JoinTokens.Manager):
		role = ca.RoleManager
	case ca.SecretEqual(req.Token, c.JoinTokens.Worker):
		role = ca.RoleWorker
	case c.JoinTokens.Arbiter != "" && ca.SecretEqual(req.Token, c.JoinTokens.Arbiter):
		role = ca.RoleArbiter
	default:
		return JoinAnswer{}, fmt.Errorf("%w: the join token is not valid (wrong, or rotated): ask a manager for the current one (docker swarm join-token)", errForbidden)
	}
	if err := checkJoinRole(role, req.Arbiter); err != nil {
		return JoinAnswer{}, err
	}
	if role == ca.RoleManager || role == ca.RoleArbiter {
		if req.Addr == "" {
			return JoinAnswer{}, errAddrRequired
		}
		if _, _, err := net.SplitHostPort(req.Addr); err != nil {
			return JoinAnswer{}, fmt.Errorf("%w: addr %q: host:port of the management port", api.ErrInvalidSpec, req.Addr)
		}
		if !st.IsLeader() {
			li := st.Leader()
			return JoinAnswer{}, &raftstore.NotLeaderError{LeaderID: li.ID, LeaderAddr: li.Address}
		}
	}
	root, err := ca.ParseRoot(c.RootCA.CACertPEM, c.RootCA.CAKeyPEM)
	if err != nil {
		return JoinAnswer{}, err
	}
	id := newID()
	certPEM, err := root.Issue(req.CSR, id, role, certValidity(c))
	if err != nil {
		return JoinAnswer{}, fmt.Errorf("%w: %v", api.ErrInvalidSpec, err)
	}
	switch role {
	case ca.RoleManager:
		if err := st.AddNonvoter(ctx, id, req.Addr); err != nil {
			return JoinAnswer{}, err
		}
		m.logger().Info("swarm: manager joined as a non-voter", "node", id, "addr", req.Addr)
	case ca.RoleArbiter:
		if err := m.admitArbiter(ctx, st, id, req.Addr); err != nil {
			return JoinAnswer{}, err
		}
	}
	return JoinAnswer{NodeID: id, Role: string(role), Cert: certPEM, Root: root.CertPEM(), Managers: managerAddrs(st)}, nil
}

// PromoteSelf makes a manager that joined as a non-voter a voter, once it
// has caught up (it asks when its store is ready).
func (m *Manager) promoteSelf(ctx context.Context, id string) error {
	st, err := m.st()
	if err != nil {
		return err
	}
	if !st.IsLeader() {
		li := st.Leader()
		return &raftstore.NotLeaderError{LeaderID: li.ID, LeaderAddr: li.Address}
	}
	// A request that waited while the node was demoted must not bring it
	// back: the node must still be a manager, and the promotion applies
	// only to a member still in the configuration.
	// (A manager that runs no worker never registers: no node object,
	// and Raft membership alone speaks for it.)
	if n, err := m.Node(id); err == nil && n.Spec.Role != api.RoleManager {
		return fmt.Errorf("%w: node %s is a %s: promote it first", errForbidden, id, n.Spec.Role)
	} else if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	if err := st.PromoteNonvoter(ctx, id); err != nil {
		if errors.Is(err, raftstore.ErrNotFound) {
			return fmt.Errorf("%w: manager %s is not in the Raft configuration", ErrNotFound, id)
		}
		return err
	}
	m.warnQuorumShape(ctx, st)
	return nil
}

// renew issues a node a new certificate for its current role.
func (m *Manager) renew(ctx context.Context, id string, csr []byte) ([]byte, error) {
	st, err := m.st()
	if err != nil {
		return nil, err
	}
	var c *api.Cluster
	var node *api.Node
	if err := st.View(func(tx *raftstore.ReadTx) (err error) {
		if c, err = clusterObject(tx); err != nil {
			return err
		}
		if o, err := tx.Get(TableNodes, id); err == nil {
			node = o.(*api.Node)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	if removed(c, id) {
		return nil, fmt.Errorf("%w: node %s was removed from the cluster", errForbidden, id)
	}
	role := ca.RoleWorker
	if node != nil && node.Spec.Role == api.RoleManager {
		role = ca.RoleManager
	}
	// An arbiter stays one (it is in Raft and has no node object: it must
	// not be taken for a manager that has not registered yet).
	if isArbiter(c, id) {
		role = ca.RoleArbiter
	} else if node == nil {
		// Not registered yet (a manager that joined and renews early):
		// keep the role its Raft membership gives it.
		if srvs, err := st.Servers(ctx); err == nil && slices.ContainsFunc(srvs, func(s raftstore.Server) bool { return s.ID == id }) {
			role = ca.RoleManager
		}
	}
	root, err := ca.ParseRoot(c.RootCA.CACertPEM, c.RootCA.CAKeyPEM)
	if err != nil {
		return nil, err
	}
	certPEM, err := root.Issue(csr, id, role, certValidity(c))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", api.ErrInvalidSpec, err)
	}
	return certPEM, nil
}

// withRemoved is list (RemovedNodes or ForcedOut) without its expired
// entries, with an entry for each of ids that lasts as long as their
// certificates may.
func withRemoved(list []api.RemovedNode, c *api.Cluster, ids ...string) []api.RemovedNode {
	now := time.Now().UTC()
	list = slices.DeleteFunc(slices.Clone(list), func(r api.RemovedNode) bool { return r.Until.Before(now) || slices.Contains(ids, r.ID) })
	for _, id := range ids {
		list = append(list, api.RemovedNode{ID: id, RemovedAt: now, Until: now.Add(certValidity(c))})
	}
	return list
}

func removed(c *api.Cluster, id string) bool {
	return slices.ContainsFunc(c.RemovedNodes, func(r api.RemovedNode) bool { return r.ID == id })
}

// IsRemoved reports whether a node was removed from the cluster (its
// certificates are refused).
func (m *Manager) IsRemoved(id string) bool {
	st, err := m.st()
	if err != nil {
		return false
	}
	gone := false
	st.View(func(tx *raftstore.ReadTx) error {
		if c, err := clusterObject(tx); err == nil {
			gone = removed(c, id)
		}
		return nil
	})
	return gone
}

// CheckManagerCert says whether node id's manager certificate may still
// act as one: a node removed from the cluster, or whose node object says
// it is no longer a manager (demoted: it was given a worker certificate,
// but the manager one it had stays valid until it expires, and a copy
// kept must not keep the control API), gets an error wrapping
// ErrNotAManagerNow. A manager that runs no tasks has no node object:
// its certificate's role speaks for it (Raft admits it only while it is
// in the configuration). The control API checks every call with it (and
// the caller a follower passes a write on for, and a stream every 2 s
// while it lasts); the Docker API over TLS every handshake and request,
// and a stream every 2 s.
func (m *Manager) CheckManagerCert(id string) error {
	st, err := m.st()
	if err != nil {
		return err
	}
	return st.View(func(tx *raftstore.ReadTx) error {
		if c, err := clusterObject(tx); err == nil && removed(c, id) {
			return fmt.Errorf("%w: node %s was removed", ErrNotAManagerNow, id)
		}
		if o, err := tx.Get(TableNodes, id); err == nil {
			if n := o.(*api.Node); n.Spec.Role != api.RoleManager {
				return fmt.Errorf("%w: node %s is a %s now", ErrNotAManagerNow, id, n.Spec.Role)
			}
		}
		return nil
	})
}

// RotateJoinToken replaces the join token of a role: later joins with the
// old one are refused; nodes that joined with it stay.
func (m *Manager) RotateJoinToken(ctx context.Context, role api.NodeRole) (*api.Cluster, error) {
	if role != api.RoleWorker && role != api.RoleManager && role != api.RoleArbiter {
		return nil, fmt.Errorf("%w: role %q: worker, manager or arbiter", api.ErrInvalidSpec, role)
	}
	st, err := m.st()
	if err != nil {
		return nil, err
	}
	var out *api.Cluster
	err = st.Update(ctx, func(tx *raftstore.Tx) error {
		c0, err := clusterObject(&tx.ReadTx)
		if err != nil {
			return err
		}
		root, err := ca.ParseRoot(c0.RootCA.CACertPEM, nil)
		if err != nil {
			return err
		}
		tok, err := ca.NewToken(root)
		if err != nil {
			return err
		}
		c := *c0
		switch role {
		case api.RoleWorker:
			c.JoinTokens.Worker = tok
		case api.RoleManager:
			c.JoinTokens.Manager = tok
		default:
			c.JoinTokens.Arbiter = tok
		}
		c.UpdatedAt = time.Now().UTC()
		out = &c
		return tx.Update(TableClusters, &c)
	})
	if err != nil {
		return nil, err
	}
	return redacted(out), nil
}

// joinRoutes serves the join protocol: the one call a node without a
// certificate may make.
func (m *Manager) joinRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/join", func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		var req JoinRequest
		if err := decodeBody(r, &req); err != nil {
			writeError(w, err)
			return
		}
		ans, err := m.Join(r.Context(), req)
		if err != nil {
			if !errors.Is(err, errForbidden) {
				m.logger().Info("swarm: join refused", "err", err)
			} else {
				m.logger().Warn("swarm: join with a wrong token", "remote", r.RemoteAddr)
			}
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, ans)
	})
}

// JoinHandler serves joining nodes (on the join protocol of the
// management port).
func (m *Manager) JoinHandler() http.Handler {
	mux := http.NewServeMux()
	m.joinRoutes(mux)
	return mux
}
