package swarm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/shoalproject/shoal/internal/atomicfile"
	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm/ca"
)

// Recovery is what ForceNewCluster did.
type Recovery struct {
	// NodeID and Addr are the manager that now makes the cluster alone,
	// and its Raft address.
	NodeID, Addr string
	// Before is the Raft configuration it replaced: the voters named
	// there (other than NodeID) are out of the cluster.
	Before []raftstore.Server
}

// ForceNewCluster rebuilds a cluster that lost its quorum for good from
// this node's manager data: the Raft configuration becomes this manager
// alone (a one-voter cluster), every object is kept. It is Docker's
// `swarm init --force-new-cluster`, done with the node stopped (n must
// not be started; Dir and, for an autolocked manager, UnlockWith are
// read); Start the node afterwards.
//
// Use it only when the other managers (and arbiters) are gone for good:
// one that comes back with its old data is no longer part of the cluster
// (the recovered manager refuses its votes, and its requests to rejoin:
// they are recorded in Cluster.ForcedOut) and must be wiped and joined
// again with a join token; remove the dead managers' nodes (node rm
// --force) and the lost arbiters (RemoveArbiter), then add managers or an
// arbiter again.
func (n *Node) ForceNewCluster(ctx context.Context) (*Recovery, error) {
	if err := n.begin(false); err != nil {
		if errors.Is(err, ErrNotInitialized) {
			return nil, fmt.Errorf("swarm: %s holds no node: nothing to recover", n.Dir)
		}
		return nil, err
	}
	defer n.fail(nil)
	st, _, err := n.readState()
	if err != nil {
		return nil, err
	}
	if st.Role != string(ca.RoleManager) || st.Advertise == "" {
		return nil, fmt.Errorf("swarm: node %s in %s is a %s: only a manager's data can rebuild a cluster", st.ID, n.Dir, st.Role)
	}
	dir := filepath.Join(n.Dir, "manager")
	if _, ok, err := readIdentity(dir); err != nil || !ok {
		return nil, fmt.Errorf("swarm: %s holds no manager data (%v): only a manager's data can rebuild a cluster", dir, err)
	}
	m := &Manager{ID: st.ID, Dir: dir, UnlockWith: n.UnlockWith}
	keys, err := m.resolveIdentity()
	if err != nil {
		return nil, err
	}
	if m.locked {
		return nil, fmt.Errorf("%w: the manager's data is sealed with autolock: give its unlock key", ErrLocked)
	}
	self := []raftstore.Server{{ID: st.ID, Address: st.Advertise, Voter: true}}
	for _, k := range keys {
		store := &raftstore.Store{ID: st.ID, Dir: dir, Schema: Schema(), KeyEncryptionKey: k.key, Logger: n.Logger}
		// The members left out go to a file before anything is rewritten:
		// a second run (after a crash, or a failure below) sees only the
		// new configuration, so the file is what still names them; the
		// manager's next leadership records what is left in it
		// (recordPendingForcedOut).
		var out []string
		note := func(before []raftstore.Server) error {
			pending, err := pendingForcedOut(dir)
			if err != nil {
				return err
			}
			out = pending
			for _, s := range before {
				if s.ID != st.ID && !slices.Contains(out, s.ID) {
					out = append(out, s.ID)
				}
			}
			if len(out) == 0 {
				return nil
			}
			return writeJSONFile(filepath.Join(dir, forcedOutFile), out)
		}
		before, err := store.RecoverNoting(ctx, self, note)
		if errors.Is(err, raftstore.ErrBadKey) {
			continue
		}
		if err != nil {
			return nil, err
		}
		n.logger().Info("swarm: forced a new cluster from this manager's data", "node", st.ID, "addr", st.Advertise, "before", before, "left_out", out)
		rec := &Recovery{NodeID: st.ID, Addr: st.Advertise, Before: before}
		if len(out) == 0 {
			return rec, nil
		}
		if err := recordForcedOut(ctx, store, st.Advertise, out); err != nil {
			n.logger().Warn("swarm: recording the members left out now failed; the manager records them when it leads", "members", out, "err", err)
			return rec, nil
		}
		os.Remove(filepath.Join(dir, forcedOutFile))
		return rec, nil
	}
	if m.autoLk {
		return nil, ErrBadUnlockKey
	}
	return nil, fmt.Errorf("swarm: %s does not open this manager's data: restore the key file from a backup", filepath.Join(dir, kekFile))
}

// recordForcedOut writes the members a recovery left out into
// Cluster.ForcedOut, so that the cluster refuses them if they come back
// with their stale data. It starts the recovered store alone, offline (a
// one-voter configuration elects itself without a network), and closes it.
// addr is the recovered member's address in its new configuration.
func recordForcedOut(ctx context.Context, recovered *raftstore.Store, addr string, out []string) error {
	st := &raftstore.Store{ID: recovered.ID, Dir: recovered.Dir, Schema: recovered.Schema, KeyEncryptionKey: recovered.KeyEncryptionKey,
		Transport: raftstore.NewMemNetwork().Transport(addr), Logger: recovered.Logger}
	// A one-voter member leads within an election timeout or two.
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := st.Start(ctx); err != nil {
		return err
	}
	defer st.Close()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for !st.IsLeader() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return addForcedOut(ctx, st, out)
}

// addForcedOut adds members to Cluster.ForcedOut.
func addForcedOut(ctx context.Context, st *raftstore.Store, out []string) error {
	return st.Update(ctx, func(tx *raftstore.Tx) error {
		c0, err := clusterObject(&tx.ReadTx)
		if err != nil {
			return err
		}
		c := *c0
		c.ForcedOut = withRemoved(c.ForcedOut, &c, out...)
		return tx.Update(TableClusters, &c)
	})
}

// forcedOutFile, in a manager's dir, names the members a ForceNewCluster
// left out until they are in Cluster.ForcedOut.
const forcedOutFile = "forced-out.json"

// pendingForcedOut reads forcedOutFile (none: nil).
func pendingForcedOut(dir string) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(dir, forcedOutFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	var out []string
	if err == nil {
		err = json.Unmarshal(b, &out)
	}
	if err != nil {
		return nil, fmt.Errorf("swarm: %s: %w (it names the managers a forced recovery left out: fix or remove it)", filepath.Join(dir, forcedOutFile), err)
	}
	return out, nil
}

func writeJSONFile(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return atomicfile.Write(path, b, 0o600)
}

// recordPendingForcedOut is what a new leader does about forcedOutFile:
// the members a ForceNewCluster noted but did not record (it was killed,
// or its own start of the store failed) go into Cluster.ForcedOut, and
// the file goes.
func (m *Manager) recordPendingForcedOut(ctx context.Context, st *raftstore.Store) {
	if m.Dir == "" {
		return
	}
	out, err := pendingForcedOut(m.Dir)
	if err != nil {
		m.logger().Error("swarm: reading the members a forced recovery left out", "err", err)
		return
	}
	if len(out) == 0 {
		return
	}
	if err := addForcedOut(ctx, st, out); err != nil {
		if ctx.Err() == nil {
			m.logger().Warn("swarm: recording the members a forced recovery left out", "members", out, "err", err)
		}
		return
	}
	os.Remove(filepath.Join(m.Dir, forcedOutFile))
	m.logger().Info("swarm: the members a forced recovery left out are refused from now on", "members", out)
}
