package swarm

import (
	"context"
	"fmt"
	"net"
	"slices"

	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm/api"
)

// Managers at run time: a node promoted to manager gets a manager
// certificate, starts its manager role and asks the leader to add it to
// Raft (joinSelf: as a non-voter; promoteSelf: a voter once caught up). A
// demoted manager is removed from Raft by the leader (here, on node
// changes), then stops managing.

// joinSelf adds a manager that was promoted to Raft as a non-voter.
func (m *Manager) joinSelf(ctx context.Context, id, addr string) error {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("%w: addr %q: host:port of the management port", api.ErrInvalidSpec, addr)
	}
	st, err := m.st()
	if err != nil {
		return err
	}
	if !st.IsLeader() {
		li := st.Leader()
		return &raftstore.NotLeaderError{LeaderID: li.ID, LeaderAddr: li.Address}
	}
	if err := st.View(func(tx *raftstore.ReadTx) error {
		c, err := clusterObject(tx)
		if err == nil && forcedOut(c, id) {
			return fmt.Errorf("%w: manager %s was left out of the cluster by a force-new-cluster recovery and its Raft data is stale: "+
				"stop it, wipe its data dir (shoald leave --force, or remove the dir) and join it again with a manager join token", errForbidden, id)
		}
		return err
	}); err != nil {
		return err
	}
	n, err := m.Node(id)
	if err != nil {
		return err
	}
	if n.Spec.Role != api.RoleManager {
		return fmt.Errorf("%w: node %s is a %s: promote it first", errForbidden, id, n.Spec.Role)
	}
	srvs, err := st.Servers(ctx)
	if err != nil {
		return err
	}
	for _, s := range srvs {
		if s.ID == id {
			return nil // already in
		}
	}
	m.logger().Info("swarm: promoted manager joins Raft", "node", id, "addr", addr)
	return st.AddNonvoter(ctx, id, addr)
}

// reconcileMembership removes from Raft the managers whose nodes were
// demoted; a demoted leader hands leadership over first (the next leader
// removes it).
func (m *Manager) reconcileMembership(ctx context.Context, st *raftstore.Store) error {
	srvs, err := st.Servers(ctx)
	if err != nil {
		return err
	}
	for _, s := range srvs {
		var n *api.Node
		st.View(func(tx *raftstore.ReadTx) error {
			if o, err := tx.Get(TableNodes, s.ID); err == nil {
				n = o.(*api.Node)
			}
			return nil
		})
		if n == nil || n.Spec.Role != api.RoleWorker {
			continue
		}
		if s.ID == m.ID {
			m.logger().Info("swarm: this manager was demoted; handing leadership over")
			return st.TransferLeadership(ctx, "")
		}
		m.logger().Info("swarm: demoted manager leaves Raft", "node", s.ID)
		if err := st.RemoveServer(ctx, s.ID); err != nil {
			return err
		}
	}
	return nil
}

// forcedOut reports whether a force-new-cluster recovery left id out.
func forcedOut(c *api.Cluster, id string) bool {
	return slices.ContainsFunc(c.ForcedOut, func(r api.RemovedNode) bool { return r.ID == id })
}
