package swarm

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/ca"
)

// Arbiters on the managers' side. An arbiter (arbiter.go) joins with the
// arbiter token; the leader records it in the cluster object (so that
// every member knows which Raft voters are not managers) and adds it to
// Raft as a non-voter; once caught up it asks to vote (POST
// /v1/arbiter/promote-self, arbiter certificates only). Its certificate
// lets it carry Raft, renew itself and ask to vote: nothing else.

// arbiterPrefix is the arbiters' own calls.
const arbiterPrefix = "/v1/arbiter/"

// checkJoinRole refuses a join whose token is of another role than the
// one the joiner takes on: an arbiter token joins only arbiters, and only
// it does.
func checkJoinRole(role ca.Role, asArbiter bool) error {
	switch {
	case role == ca.RoleArbiter && !asArbiter:
		return fmt.Errorf("%w: this is the arbiter join token: it joins only an arbiter (swarm.Arbiter), not a manager or a worker", errForbidden)
	case role != ca.RoleArbiter && asArbiter:
		return fmt.Errorf("%w: this is the %s join token: an arbiter joins only with the arbiter token (the cluster object's joinTokens.arbiter)", errForbidden, role)
	}
	return nil
}

// isArbiter reports whether the cluster records id as an arbiter.
func isArbiter(c *api.Cluster, id string) bool {
	return slices.ContainsFunc(c.Arbiters, func(a api.Arbiter) bool { return a.ID == id })
}

// arbitersOf returns the IDs of the arbiters st's cluster object records.
func arbitersOf(st *raftstore.Store) map[string]bool {
	out := map[string]bool{}
	st.View(func(tx *raftstore.ReadTx) error {
		if c, err := clusterObject(tx); err == nil {
			for _, a := range c.Arbiters {
				out[a.ID] = true
			}
		}
		return nil
	})
	return out
}

// admitArbiter records a joining arbiter and adds it to Raft as a
// non-voter (it asks to vote once caught up). Leader only. The record
// comes first: a member must never see a voter it would take for a
// manager.
func (m *Manager) admitArbiter(ctx context.Context, st *raftstore.Store, id, addr string) error {
	err := retryClusterUpdate(func() error {
		return st.Update(ctx, func(tx *raftstore.Tx) error {
			c0, err := clusterObject(&tx.ReadTx)
			if err != nil {
				return err
			}
			c := *c0
			c.Arbiters = append(slices.Clone(c.Arbiters), api.Arbiter{ID: id, Addr: addr, JoinedAt: time.Now().UTC()})
			return tx.Update(TableClusters, &c)
		})
	})
	if err != nil {
		return err
	}
	if err := st.AddNonvoter(ctx, id, addr); err != nil {
		return err
	}
	m.logger().Info("swarm: arbiter joined as a non-voter", "arbiter", id, "addr", addr)
	return nil
}

// retryClusterUpdate runs fn again while it fails with a conflict
// (another writer changed the cluster object first), a few times.
func retryClusterUpdate(fn func() error) error {
	var err error
	for range 5 {
		if err = fn(); !errors.Is(err, raftstore.ErrConflict) {
			return err
		}
	}
	return err
}

// promoteArbiter makes an arbiter that has caught up a voter.
func (m *Manager) promoteArbiter(ctx context.Context, id string) error {
	st, err := m.st()
	if err != nil {
		return err
	}
	if !st.IsLeader() {
		li := st.Leader()
		return &raftstore.NotLeaderError{LeaderID: li.ID, LeaderAddr: li.Address}
	}
	if !arbitersOf(st)[id] {
		return fmt.Errorf("%w: %s is not an arbiter of this cluster", errForbidden, id)
	}
	if err := st.PromoteNonvoter(ctx, id); err != nil {
		if errors.Is(err, raftstore.ErrNotFound) {
			return fmt.Errorf("%w: arbiter %s is not in the Raft configuration", ErrNotFound, id)
		}
		return err
	}
	m.logger().Info("swarm: arbiter votes now", "arbiter", id)
	m.warnQuorumShape(ctx, st)
	return nil
}

// arbiterRoutes serves the arbiters' one call of their own.
func (m *Manager) arbiterRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST "+arbiterPrefix+"promote-self", m.asMember(true, func(w http.ResponseWriter, r *http.Request, id string) error {
		if _, role, _ := peerIdentity(r); role != string(ca.RoleArbiter) {
			return fmt.Errorf("%w: %s is a %s: this call is for arbiters", errForbidden, id, role)
		}
		if err := m.promoteArbiter(r.Context(), id); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}))
}

// leadArbiters is what a new leader does about arbiters: give a cluster
// made before arbiters existed its arbiter token, and say what the
// managers' Raft membership cannot survive.
func (m *Manager) leadArbiters(ctx context.Context, st *raftstore.Store) {
	err := retryClusterUpdate(func() error {
		return st.Update(ctx, func(tx *raftstore.Tx) error {
			c0, err := clusterObject(&tx.ReadTx)
			if err != nil || c0.JoinTokens.Arbiter != "" {
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
			c.JoinTokens.Arbiter = tok
			return tx.Update(TableClusters, &c)
		})
	})
	if err != nil && ctx.Err() == nil {
		m.logger().Warn("swarm: making the arbiter join token", "err", err)
	}
	m.warnQuorumShape(ctx, st)
}

// quorumWarnings are quorumWarning and, for each voting arbiter this
// manager cannot reach, a warning that says so.
func (m *Manager) quorumWarnings(srvs []raftstore.Server, arbiters map[string]bool) []string {
	var out []string
	if ro := m.readOnly(); ro != nil {
		out = append(out, ro.Error())
	}
	// In two-node mode two managers and no arbiter is the intended shape.
	if w := quorumWarning(srvs, arbiters); w != "" && !(m.TwoNode != nil && strings.HasPrefix(w, "2 managers")) {
		out = append(out, w)
	}
	down := m.arbHealth.down()
	for _, s := range srvs {
		if since, ok := down[s.ID]; ok && s.Voter && arbiters[s.ID] {
			out = append(out, fmt.Sprintf("arbiter %s (%s) unreachable since %s: until it is back, the cluster tolerates one failure fewer (with 2 managers, none)",
				s.ID, s.Address, since.UTC().Format(time.RFC3339)))
		}
	}
	return out
}

// quorumWarning says what the voters in srvs cannot survive, when it is
// worse than an operator would expect of the managers they run: two
// managers and no arbiter tolerate no manager failure; "" otherwise.
func quorumWarning(srvs []raftstore.Server, arbiters map[string]bool) string {
	managers, arbs := 0, 0
	for _, s := range srvs {
		switch {
		case !s.Voter:
		case arbiters[s.ID]:
			arbs++
		default:
			managers++
		}
	}
	switch {
	case managers == 2 && arbs == 0:
		return "2 managers and no arbiter: a quorum needs both, so the cluster tolerates no manager failure; " +
			"add an arbiter (a third vote that runs nothing else: swarm.Arbiter joined with the arbiter token) or a third manager, " +
			"or give both managers a fencing action (two-node mode: swarm.TwoNode, shoald --fence-command)"
	case managers == 1 && arbs > 0:
		return fmt.Sprintf("1 manager and %d arbiter(s): the cluster stops when the manager or an arbiter fails; an arbiter is a third vote for two managers", arbs)
	}
	return ""
}

// warnQuorumShape logs quorumWarning for the current configuration.
func (m *Manager) warnQuorumShape(ctx context.Context, st *raftstore.Store) {
	srvs, err := st.Servers(ctx)
	if err != nil {
		return
	}
	for _, w := range m.quorumWarnings(srvs, arbitersOf(st)) {
		m.logger().Warn("swarm: " + w)
	}
}

// clusterWarnings are the warnings a read of the cluster object shows.
func (m *Manager) clusterWarnings(st *raftstore.Store, c *api.Cluster) []string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	srvs, err := st.Servers(ctx)
	if err != nil {
		return nil
	}
	arbiters := map[string]bool{}
	for _, a := range c.Arbiters {
		arbiters[a.ID] = true
	}
	return m.quorumWarnings(srvs, arbiters)
}

// DefaultArbiterProbePeriod is how often each manager checks that it
// reaches the arbiters (a TLS call to their port).
const DefaultArbiterProbePeriod = 2 * time.Second

// arbiterHealth is which arbiters a manager could not reach at its last
// look, and since when. The zero value is ready.
type arbiterHealth struct {
	mu       sync.Mutex
	downFrom map[string]time.Time
}

func (h *arbiterHealth) set(id string, up bool, now time.Time) (changed bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, wasDown := h.downFrom[id]
	switch {
	case up && wasDown:
		delete(h.downFrom, id)
		return true
	case !up && !wasDown:
		if h.downFrom == nil {
			h.downFrom = map[string]time.Time{}
		}
		h.downFrom[id] = now
		return true
	}
	return false
}

func (h *arbiterHealth) down() map[string]time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return maps.Clone(h.downFrom)
}

// forget drops arbiters no longer in the cluster.
func (h *arbiterHealth) forget(keep map[string]bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	maps.DeleteFunc(h.downFrom, func(id string, _ time.Time) bool { return !keep[id] })
}

// probeArbiters checks, every DefaultArbiterProbePeriod until ctx ends or
// the manager closes, that this manager reaches each arbiter's port
// (with tlsConf, which must verify an arbiter's certificate); the
// warnings of the node list and the cluster object say which it does not,
// and a change is logged.
func (m *Manager) probeArbiters(ctx context.Context, tlsConf func() *tls.Config) {
	var client *http.Client
	defer func() {
		if client != nil {
			client.CloseIdleConnections()
		}
	}()
	t := time.NewTicker(DefaultArbiterProbePeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st, err := m.st()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		var arbiters []api.Arbiter
		st.View(func(tx *raftstore.ReadTx) error {
			if c, err := clusterObject(tx); err == nil {
				arbiters = c.Arbiters
			}
			return nil
		})
		keep := map[string]bool{}
		for _, a := range arbiters {
			keep[a.ID] = true
		}
		m.arbHealth.forget(keep)
		if len(arbiters) == 0 {
			continue
		}
		if client == nil {
			conf := tlsConf().Clone()
			conf.NextProtos = []string{ProtoAPI}
			client = &http.Client{Timeout: DefaultArbiterProbePeriod, Transport: &http.Transport{TLSClientConfig: conf, ForceAttemptHTTP2: true,
				TLSHandshakeTimeout: DefaultArbiterProbePeriod}}
		}
		for _, a := range arbiters {
			err := pingArbiter(ctx, client, a.Addr)
			if m.arbHealth.set(a.ID, err == nil, time.Now()) {
				if err != nil {
					m.logger().Warn("swarm: arbiter unreachable", "arbiter", a.ID, "addr", a.Addr, "err", err)
					m.warnQuorumShape(ctx, st)
				} else {
					m.logger().Info("swarm: arbiter reachable again", "arbiter", a.ID, "addr", a.Addr)
				}
			}
		}
	}
}

// arbiterPing is the one call an arbiter's port answers (to managers).
const arbiterPing = arbiterPrefix + "ping"

func pingArbiter(ctx context.Context, client *http.Client, addr string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+arbiterPing, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("swarm: arbiter %s answered %s", addr, resp.Status)
	}
	return nil
}

// RemoveArbiter takes an arbiter out of the cluster for good: out of
// Raft, out of Cluster.Arbiters, and its certificates refused until they
// expire, as a removed node's. Replace a lost arbiter by removing it and
// joining a new one (a dead arbiter left in Raft is a vote the cluster
// keeps waiting for). A removal that would leave fewer voters up than a
// quorum of those left is refused. Leader only (the control API forwards
// it); a second call finishes one that failed halfway.
func (m *Manager) RemoveArbiter(ctx context.Context, id string) error {
	st, err := m.st()
	if err != nil {
		return err
	}
	if !st.IsLeader() {
		li := st.Leader()
		return &raftstore.NotLeaderError{LeaderID: li.ID, LeaderAddr: li.Address}
	}
	var c *api.Cluster
	if err := st.View(func(tx *raftstore.ReadTx) (err error) { c, err = clusterObject(tx); return err }); err != nil {
		return err
	}
	if !isArbiter(c, id) {
		return notFound("arbiter", id)
	}
	srvs, err := st.Servers(ctx)
	if err != nil {
		return err
	}
	// Out of Raft first: a voter without its record would be taken for
	// a manager.
	if slices.ContainsFunc(srvs, func(s raftstore.Server) bool { return s.ID == id }) {
		if err := m.canRemoveVoter(st, srvs, c, id); err != nil {
			return err
		}
		if err := st.RemoveServer(ctx, id); err != nil {
			return err
		}
	}
	err = retryClusterUpdate(func() error {
		return st.Update(ctx, func(tx *raftstore.Tx) error {
			c0, err := clusterObject(&tx.ReadTx)
			if err != nil {
				return err
			}
			c := *c0
			c.Arbiters = slices.DeleteFunc(slices.Clone(c.Arbiters), func(a api.Arbiter) bool { return a.ID == id })
			c.RemovedNodes = withRemoved(c.RemovedNodes, &c, id)
			return tx.Update(TableClusters, &c)
		})
	})
	if err != nil {
		return err
	}
	m.logger().Info("swarm: arbiter removed", "arbiter", id)
	m.warnQuorumShape(ctx, st)
	return nil
}

// canRemoveVoter refuses to take id out of Raft when fewer of the voters
// left are up than their quorum: managers are up when their node is ready
// (this one always), arbiters when this manager reaches them.
func (m *Manager) canRemoveVoter(st *raftstore.Store, srvs []raftstore.Server, c *api.Cluster, id string) error {
	down := m.arbHealth.down()
	voters, up := 0, 0
	st.View(func(tx *raftstore.ReadTx) error {
		for _, s := range srvs {
			if !s.Voter || s.ID == id {
				continue
			}
			voters++
			switch {
			case s.ID == m.ID:
				up++
			case isArbiter(c, s.ID):
				if _, ok := down[s.ID]; !ok {
					up++
				}
			default:
				if o, err := tx.Get(TableNodes, s.ID); err == nil && o.(*api.Node).Status.State == api.NodeReady {
					up++
				}
			}
		}
		return nil
	})
	if up < voters/2+1 {
		return fmt.Errorf("%w: removing arbiter %s would leave %d of %d voters up, short of a quorum of %d: bring managers back first", api.ErrInvalidSpec, id, up, voters, voters/2+1)
	}
	return nil
}
