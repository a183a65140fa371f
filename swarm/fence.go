package swarm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/shoalproject/shoal/internal/atomicfile"
	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm/api"
)

// Two-node mode (the Pacemaker two-node pattern): two managers and no
// third vote. Raft needs both for a quorum, so on its own the survivor of
// a peer's loss can do nothing; it cannot tell a dead peer from a cut
// link either. With TwoNode set, a manager that loses its peer fences it
// (the operator's Fencer powers it off or cuts it off and says so) and
// only once the fence reports success makes itself the only voter
// (raftstore.Store.RecoverAlone) and goes on. Until then it stays
// read-only and says why, and tries again in its next slot (fenceRetry).
// Which of the two
// fences first follows the last leader (fenceTurn): the follower of a
// lost leader fences at once, the leader waits TwoNode.Delay. See
// docs/ARCHITECTURE.md for what each failure does.

// Defaults of two-node mode.
const (
	// DefaultFenceDelay is how long a manager that led last waits before
	// it fences its lost follower, so that after a cut between two live
	// managers the follower fences first and the leader is gone before
	// its turn (the follower of a lost leader does not wait). It must
	// exceed the Fencer's own time plus a second (the two may notice the
	// loss up to a heartbeat timeout apart).
	DefaultFenceDelay = 5 * time.Second
	// DefaultFenceTimeout bounds one call of the Fencer. It stays a
	// second and more under the delay, so that after a cut the first
	// fence has ended (done or failed) before the other side's begins:
	// two fences at once could stop both boxes, or, fencing by
	// isolation, leave each alone with a cluster of its own. A Fencer
	// that needs longer needs a longer Delay too (Validate says so).
	DefaultFenceTimeout = 3 * time.Second
)

// Peer is the other manager of a two-node cluster, as a Fencer gets it.
type Peer struct {
	// ID is its node ID; Addr its management address (host:port).
	ID, Addr string
}

// Fencer powers off or cuts off a peer manager (IPMI, a cloud API, a
// smart PDU, a hypervisor call) and returns nil only once the peer can no
// longer write: off, or cut off from everything that would reach it.
// Returning nil when that is not sure gives two leaders.
type Fencer interface {
	Fence(ctx context.Context, peer Peer) error
}

// FenceFunc adapts a function to Fencer.
type FenceFunc func(ctx context.Context, peer Peer) error

// Fence calls f.
func (f FenceFunc) Fence(ctx context.Context, peer Peer) error { return f(ctx, peer) }

// CommandFencer fences by running a command: the peer is in its
// environment as SHOAL_FENCE_PEER_ID and SHOAL_FENCE_PEER_ADDR, and exit
// status 0 means fenced. Its output ends up in the error of a failure,
// which a two-node manager writes to its log only (the output may name
// the BMC, its user, the cloud account): API clients see that the fence
// failed, not why.
type CommandFencer struct {
	// Path is the program (looked up in PATH without a slash); Args
	// follow it.
	Path string
	Args []string
}

var (
	_ Fencer = (*CommandFencer)(nil)
	_ Fencer = FenceFunc(nil)
)

// Fence runs the command.
func (c *CommandFencer) Fence(ctx context.Context, peer Peer) error {
	if c.Path == "" {
		return fmt.Errorf("%w: the fence command is empty", api.ErrInvalidSpec)
	}
	cmd := exec.CommandContext(ctx, c.Path, c.Args...)
	cmd.Env = append(os.Environ(), "SHOAL_FENCE_PEER_ID="+peer.ID, "SHOAL_FENCE_PEER_ADDR="+peer.Addr)
	// The command runs in a process group of its own, killed whole at the
	// deadline: a shell's children (sh -c "ipmitool ...") would otherwise
	// run on, and power the peer off after the fence counted as failed
	// and the peer's own turn had begun.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if cmd.Process != nil {
		// The command is over, done or not; so is anything it left
		// running in the background (an "&" power-off after a failed
		// step would otherwise strike during the peer's turn).
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	if err != nil {
		out = bytes.TrimSpace(out)
		if len(out) > 512 {
			out = append(out[:512:512], "..."...)
		}
		return fmt.Errorf("fence command %s: %w: %s", c.Path, err, out)
	}
	return nil
}

// TwoNode turns on two-node mode on a manager (Manager.TwoNode,
// Node.TwoNode). Both managers need it, each with the means to fence the
// other: it is per manager, not in the cluster spec, because the means
// (credentials to the peer's power or network) belong to the box that
// uses them, and are needed exactly when the cluster cannot write.
type TwoNode struct {
	// Fencer fences the peer; required.
	Fencer Fencer
	// Witness, when set, must return nil before each fence: checks that
	// this manager is not the one cut off (it still reaches its default
	// gateway, say: see DialWitness), so that it does not fence a healthy
	// peer.
	Witness func(ctx context.Context) error
	// Delay spaces the two managers' fences, so that when both are alive
	// and cut apart exactly one survives; 0 means DefaultFenceDelay. The
	// follower of the last leader fences as soon as the leader is lost;
	// the last leader waits Delay (its follower fences it meanwhile, or,
	// dead, is fenced after it). Only when this manager cannot be sure
	// which led last (it led, then granted the peer a vote it never saw
	// the end of) does it wait 2×Delay with the lower node ID, 3×Delay
	// with the higher. It must exceed Timeout by more than a second.
	Delay time.Duration
	// Timeout bounds one attempt, the Witness and the Fencer together; 0
	// means DefaultFenceTimeout. A failed attempt is tried again 4×Delay
	// later (every turn has its slot in that round).
	Timeout time.Duration
}

// DialWitness is a Witness that passes when a TCP connection to one of
// addrs (host:port) opens within a second: a port on the default gateway,
// a DNS server, a switch. An address that answers no TCP needs a Witness
// of its own (a ping).
func DialWitness(addrs ...string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		var errs []error
		for _, a := range addrs {
			dctx, cancel := context.WithTimeout(ctx, time.Second)
			c, err := (&net.Dialer{}).DialContext(dctx, "tcp", a)
			cancel()
			if err == nil {
				c.Close()
				return nil
			}
			errs = append(errs, err)
		}
		if len(errs) == 0 {
			return errors.New("no witness address")
		}
		return fmt.Errorf("no witness reached: %w", errors.Join(errs...))
	}
}

// ErrReadOnly is wrapped by the FenceError of a two-node manager that
// lost its peer and has not fenced it.
var ErrReadOnly = errors.New("swarm: read-only")

// errPeerNeverSeen is why a manager that has not seen its peer since it
// started does not fence it (corosync's wait_for_all).
var errPeerNeverSeen = errors.New("this manager has not seen its peer since it started, and fences only a peer it has seen " +
	"(a manager that was itself fenced must not fence the survivor when it comes back): start the peer; " +
	"only if the peer is powered off and will never come back, recover this manager alone (shoald recover --force-new-cluster): " +
	"if the peer runs on, that makes two clusters")

// FenceError says why a two-node manager that lost its peer stays
// read-only: reads work, writes are refused with it, and Cluster.Warnings
// shows it.
type FenceError struct {
	Peer Peer
	// Err is why the peer is not fenced yet. When a step of the fence
	// failed (a *FenceStepError), the text of the FenceError names only
	// the step: it reaches API clients, and the step's error (the fence
	// command's output) stays in the manager's log.
	Err error
}

func (e *FenceError) Error() string {
	why := e.Err.Error()
	var step *FenceStepError
	if errors.As(e.Err, &step) {
		why = step.Step + " (the details are in this manager's log)"
	}
	return fmt.Sprintf("swarm: peer %s (%s) unreachable; %s; this manager is read-only (reads work, writes are refused) until the peer is fenced or back",
		e.Peer.ID, e.Peer.Addr, why)
}

// FenceStepError is a failed step of a fence attempt. Step is a fixed
// phrase, safe to show API clients; Err may hold what only the operator
// should read (the fence command's output, the witness's addresses).
type FenceStepError struct {
	Step string
	Err  error
}

func (e *FenceStepError) Error() string { return e.Step + ": " + e.Err.Error() }

func (e *FenceStepError) Unwrap() error { return e.Err }

// Unwrap makes a FenceError ErrReadOnly and ErrUnavailable (a client
// tries the other manager, which may have gone on alone).
func (e *FenceError) Unwrap() []error { return []error{ErrReadOnly, ErrUnavailable, e.Err} }

// fenceState is what a two-node manager's guard last found; the zero
// value is ready.
type fenceState struct {
	mu     sync.Mutex
	reason *FenceError // nil: not read-only
	// fileMu orders writing fenceFile and removing it, so that a fence
	// recorded by one leadership never removes the file of a newer one.
	fileMu sync.Mutex
}

func (f *fenceState) set(e *FenceError) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reason = e
}

func (f *fenceState) get() *FenceError {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reason
}

// readOnly is why this manager refuses writes in two-node mode; nil
// when it does not, or when a leader is known.
func (m *Manager) readOnly() error {
	if e := m.fence.get(); e != nil {
		return e
	}
	return nil
}

// fenceFile records, in the manager's dir, a fence this manager is about
// to act on, before it recovers alone; its next leadership makes sure the
// cluster object has it (recordLastFence).
const fenceFile = "fence.json"

func (m *Manager) validateTwoNode() error {
	if m.TwoNode == nil {
		return nil
	}
	if m.TwoNode.Fencer == nil {
		return fmt.Errorf("%w: two-node mode needs a Fencer (without one the survivor of a peer's loss can only stay read-only)", api.ErrInvalidSpec)
	}
	if m.Dir == "" {
		return fmt.Errorf("%w: two-node mode needs Dir (recovering alone rewrites the Raft data on disk)", api.ErrInvalidSpec)
	}
	delay, timeout := cmpOr(m.TwoNode.Delay, DefaultFenceDelay), cmpOr(m.TwoNode.Timeout, DefaultFenceTimeout)
	if m.TwoNode.Delay < 0 || m.TwoNode.Timeout < 0 {
		return fmt.Errorf("%w: two-node mode: Delay and Timeout must not be negative", api.ErrInvalidSpec)
	}
	if timeout+time.Second >= delay {
		return fmt.Errorf("%w: two-node mode: the fence delay (%v) must exceed the fence timeout (%v) by more than a second, "+
			"so that one manager's fence has ended before the other's starts (raise the delay or lower the timeout)", api.ErrInvalidSpec, delay, timeout)
	}
	return nil
}

// guardPeer is two-node mode's loop: while the Raft configuration has
// exactly two voters, this manager and another manager, it watches for
// the loss of a leader. The peer is lost when no leader has been known
// for an election timeout: by then Raft itself has given up on it (a
// follower after its heartbeat timeout, a leader after its lease), and
// one election has had its chance. Then, at its turn (fenceTurn), it
// fences the peer and, on success, goes on alone.
func (m *Manager) guardPeer(ctx context.Context, st *raftstore.Store) {
	lostAfter := cmpOr(m.Raft.ElectionTimeout, raftstore.DefaultElectionTimeout)
	delay := cmpOr(m.TwoNode.Delay, DefaultFenceDelay)
	t := time.NewTicker(lostAfter / 10)
	defer t.Stop()
	var (
		lostSince time.Time
		seen      raftstore.LastLeader // at lostSince
		waiting   bool                 // this loss's wait is announced
		next      time.Time            // no fence before (the next retry slot)
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		srvs, err := st.Servers(sctx)
		cancel()
		if err != nil {
			continue
		}
		peer, ok := twoNodePeer(srvs, m.ID, arbitersOf(st))
		if !ok || st.Leader().ID != "" {
			m.fence.set(nil)
			lostSince, next = time.Time{}, time.Time{}
			continue
		}
		ll := st.LastLeader()
		if ll.ID == "" {
			m.fence.set(&FenceError{Peer: peer, Err: errPeerNeverSeen})
			continue
		}
		now := time.Now()
		if lostSince.IsZero() || ll.Events != seen.Events {
			// The loss begins, or begins again: a leader came and went
			// (or the peer asked for a vote) since the last look, and
			// the peer counts from then too.
			lostSince, seen, waiting, next = now, ll, false, time.Time{}
		}
		if now.Sub(lostSince) < lostAfter || now.Before(next) {
			continue
		}
		wait, why := fenceTurn(m.ID, peer, ll, delay)
		if at := lostSince.Add(lostAfter + wait); now.Before(at) {
			if !waiting {
				waiting = true
				m.fence.set(&FenceError{Peer: peer, Err: fmt.Errorf("fencing in %s (%s)", at.Sub(now).Round(100*time.Millisecond), why)})
				m.logger().Warn("swarm: two-node mode: peer lost; waiting before fencing it", "peer", peer.ID, "delay", wait, "turn", why,
					"last_leader", ll.ID, "term", ll.Term)
			}
			continue
		}
		err = m.fencePeer(ctx, st, peer, seen, why)
		if err == nil || ctx.Err() != nil {
			continue
		}
		next = fenceRetry(lostSince.Add(lostAfter+wait), delay, time.Now())
		m.fenceFailed(peer, err, time.Until(next))
	}
}

// fenceRetry is when a manager whose fence failed tries again: in the
// first of its slots after now, the slots being its first turn (first)
// and every fenceRound(delay) after it. The turns of fenceTurn start 0,
// 1, 2 or 3 delays after the loss and any two that can meet are a delay
// apart or more; with rounds of 4 delays, every retry of one side stays
// a delay or more from every attempt of the other, as the first attempts
// were (a retry at "now plus a backoff" could fall on the peer's turn,
// and two fences at once can stop both boxes).
func fenceRetry(first time.Time, delay time.Duration, now time.Time) time.Time {
	round := fenceRound(delay)
	k := now.Sub(first)/round + 1
	return first.Add(k * round)
}

// fenceRound is the time between two attempts of one manager: 4 delays,
// one for each turn of fenceTurn.
func fenceRound(delay time.Duration) time.Duration { return 4 * delay }

// The turns of fenceTurn, as the log and FenceError give them.
const (
	turnPeerLed = "the peer led last: fencing at once"
	turnLedLast = "this manager led last: its follower fences first"
	turnUnsure  = "neither manager is sure which led last: the lower node ID fences first"
)

// fenceTurn is how long after the loss of its peer this manager waits
// before fencing it, and why, from the last leader it saw (ll: raft's
// own observations, see raftstore.LastLeader):
//
//   - the peer led last: at once. Killing the leader is never delayed.
//   - this manager led last and the peer has not asked for its vote
//     since: delay. Cut apart from a live follower, this one is fenced
//     during its wait; with the follower dead, it fences after it.
//   - anything else (it led, then granted a vote it never saw the end of;
//     or the last leader it saw is no longer a voter): two delays for the
//     lower node ID, three for the higher.
//
// Two survivors would need both managers to fence within one delay of
// each other, and no pair of turns allows it. Both "the peer led last"
// needs each to have seen the other lead after its own leadership, and
// a member sees no leader of a term below its own: the later of the two
// leaderships would have to come before the earlier. Both "led last"
// needs the leader of the lower term to have granted the vote of the
// higher one, which VotedSince records. "At once" is a delay or more
// from any other turn; "led last" and "unsure" are a delay apart, and
// two "unsure" are staggered by node ID. Nothing is kept on disk: a
// restarted manager has seen no leader and does not fence at all until
// it sees one, which it sees in a term no lower than any before.
func fenceTurn(self string, peer Peer, ll raftstore.LastLeader, delay time.Duration) (time.Duration, string) {
	switch {
	case ll.ID == peer.ID:
		return 0, turnPeerLed
	case ll.ID == self && !ll.VotedSince:
		return delay, turnLedLast
	case self < peer.ID:
		return 2 * delay, turnUnsure
	default:
		return 3 * delay, turnUnsure
	}
}

// fenceFailed makes this manager read-only because a fence attempt
// failed: the API shows the FenceError (the failed step only), the log
// has the whole error.
func (m *Manager) fenceFailed(peer Peer, err error, retryIn time.Duration) {
	m.fence.set(&FenceError{Peer: peer, Err: err})
	m.logger().Error("swarm: two-node mode: peer unreachable and not fenced; this manager is read-only", "peer", peer.ID, "addr", peer.Addr,
		"err", err, "retry_in", retryIn)
}

// twoNodePeer returns the other voter when srvs has exactly two voters,
// self and a manager (not an arbiter).
func twoNodePeer(srvs []raftstore.Server, self string, arbiters map[string]bool) (Peer, bool) {
	var voters []raftstore.Server
	for _, s := range srvs {
		if s.Voter {
			voters = append(voters, s)
		}
	}
	if len(voters) != 2 || !slices.ContainsFunc(voters, func(s raftstore.Server) bool { return s.ID == self }) {
		return Peer{}, false
	}
	for _, s := range voters {
		if s.ID != self && !arbiters[s.ID] {
			return Peer{ID: s.ID, Addr: s.Address}, true
		}
	}
	return Peer{}, false
}

// fencePeer checks the witness, fences the peer and on success makes
// this manager the only voter and records the fence. seen is what this
// manager had seen of leadership when the loss began; turn is why it
// fences now.
func (m *Manager) fencePeer(ctx context.Context, st *raftstore.Store, peer Peer, seen raftstore.LastLeader, turn string) error {
	tn := m.TwoNode
	// Witness and fence share one Timeout: the turns are spaced for an
	// attempt that ends within it.
	fctx, cancel := context.WithTimeout(ctx, cmpOr(tn.Timeout, DefaultFenceTimeout))
	defer cancel()
	if tn.Witness != nil {
		if err := tn.Witness(fctx); err != nil {
			return &FenceStepError{Step: "not fencing: the witness check failed, this manager may be the one cut off", Err: err}
		}
	}
	m.logger().Warn("swarm: two-node mode: peer lost; fencing it", "peer", peer.ID, "addr", peer.Addr, "turn", turn)
	err := tn.Fencer.Fence(fctx, peer)
	cancel()
	if err != nil {
		return &FenceStepError{Step: "fencing failed", Err: err}
	}
	if li, ll := st.Leader(), st.LastLeader(); li.ID != "" || ll.Events != seen.Events {
		// Something leads, or did, or asked for a vote, during the
		// fence: it did not stop the peer, or the peer was never gone.
		// Going on alone now could make two leaders.
		return fmt.Errorf("the fence reported success but the peer was heard from meanwhile (leader %q, last leader %q): not going on alone (check the fencing action)",
			li.ID, ll.ID)
	}
	rec := api.Fence{Peer: peer.ID, PeerAddr: peer.Addr, By: m.ID, At: time.Now().UTC()}
	if err := m.writeFenceFile(rec); err != nil {
		return &FenceStepError{Step: "peer fenced; recording it failed", Err: err}
	}
	m.logger().Warn("swarm: two-node mode: peer fenced; going on as the only voter", "peer", peer.ID)
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = st.RecoverAlone(rctx)
	cancel()
	if err != nil {
		return &FenceStepError{Step: "peer fenced, but recovering alone failed", Err: err}
	}
	m.fence.set(nil)
	if err := addFence(ctx, st, rec); err != nil {
		// The configuration is recorded (Raft's own entry) and so is the
		// fence (fence.json): this manager's next leadership records it
		// (recordLastFence).
		m.logger().Warn("swarm: two-node mode: recording the fence in the cluster object", "err", err)
	} else {
		m.removeFenceFile(rec)
	}
	m.logger().Warn("swarm: two-node mode: this manager is the only voter; the fenced peer votes again once it is back and has caught up", "peer", peer.ID)
	return nil
}

// addFence adds rec to Cluster.Fences unless it is there, keeping them in
// time order and at most api.MaxFences.
func addFence(ctx context.Context, st *raftstore.Store, rec api.Fence) error {
	return retryClusterUpdate(func() error {
		return st.Update(ctx, func(tx *raftstore.Tx) error {
			c0, err := clusterObject(&tx.ReadTx)
			if err != nil {
				return err
			}
			if slices.ContainsFunc(c0.Fences, func(f api.Fence) bool { return sameFence(f, rec) }) {
				return nil
			}
			c := *c0
			c.Fences = append(slices.Clone(c.Fences), rec)
			slices.SortStableFunc(c.Fences, func(a, b api.Fence) int { return a.At.Compare(b.At) })
			if n := len(c.Fences); n > api.MaxFences {
				c.Fences = c.Fences[n-api.MaxFences:]
			}
			return tx.Update(TableClusters, &c)
		})
	})
}

// writeFenceFile records rec in fenceFile, before this manager acts on
// the fence.
func (m *Manager) writeFenceFile(rec api.Fence) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	m.fence.fileMu.Lock()
	defer m.fence.fileMu.Unlock()
	return atomicfile.Write(filepath.Join(m.Dir, fenceFile), b, 0o600)
}

// readFenceFile returns the fence in fenceFile; ok is false without one.
func (m *Manager) readFenceFile() (rec api.Fence, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(m.Dir, fenceFile))
	if errors.Is(err, os.ErrNotExist) {
		return rec, false, nil
	}
	if err == nil {
		err = json.Unmarshal(b, &rec)
	}
	return rec, err == nil, err
}

// removeFenceFile removes fenceFile once rec, the fence it holds, is in
// the cluster object (committed): a crash before the removal leaves the
// file, and the next leadership finds the fence recorded already and
// removes it then. A file that holds another fence (a newer one) stays.
func (m *Manager) removeFenceFile(rec api.Fence) {
	m.fence.fileMu.Lock()
	defer m.fence.fileMu.Unlock()
	if cur, ok, err := m.readFenceFile(); err == nil && ok && sameFence(cur, rec) {
		if err := os.Remove(filepath.Join(m.Dir, fenceFile)); err != nil {
			m.logger().Warn("swarm: two-node mode: removing the recorded fence's file", "err", err)
		}
	}
}

func sameFence(a, b api.Fence) bool { return a.Peer == b.Peer && a.By == b.By && a.At.Equal(b.At) }

// recordLastFence is what a new leader does about its fence file: the
// last fence this manager acted on, written before it went on alone. A
// manager killed between that and recording the fence in the cluster
// object has it only there; this records it (unless it is there), logs
// it, and removes the file.
func (m *Manager) recordLastFence(ctx context.Context, st *raftstore.Store) {
	if m.Dir == "" {
		return
	}
	rec, ok, err := m.readFenceFile()
	if err != nil {
		m.logger().Warn("swarm: two-node mode: reading the last fence", "file", filepath.Join(m.Dir, fenceFile), "err", err)
		return
	}
	if !ok {
		return
	}
	if err := addFence(ctx, st, rec); err != nil {
		if ctx.Err() == nil {
			m.logger().Warn("swarm: two-node mode: recording the last fence in the cluster object", "err", err)
		}
		return
	}
	m.removeFenceFile(rec)
	m.logger().Info("swarm: two-node mode: the last fence by this manager is in the cluster object", "peer", rec.Peer, "peer_addr", rec.PeerAddr, "at", rec.At)
}
