package swarm

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/ca"
)

// Defaults of an arbiter's Raft store: it snapshots and compacts its log
// often (its log is for voting, and for the moments it leads), in small
// segment files, and keeps few events (nothing watches it). Managers
// keep 8,192 entries between snapshots and 10,240 behind them, in 64 MiB
// segments.
const (
	DefaultArbiterSnapshotThreshold = 128
	DefaultArbiterTrailingLogs      = 64
	DefaultArbiterWatchBuffer       = 1024
	DefaultArbiterWALSegmentBytes   = 4 << 20
	DefaultArbiterWALCacheBytes     = 1 << 20
)

// Arbiter is a third Raft vote for a cluster of two managers, on any small
// machine: it runs no tasks, no scheduler, no orchestrators and serves no
// API. It holds the Raft log and the state it describes (a voter that may
// win an election must be able to bring a lagging manager up to date,
// snapshots included), compacted often, and it never stays leader: when
// it wins an election it hands leadership to a manager as soon as one
// can take it. A zero Arbiter with Dir set is usable:
//
//	a := &swarm.Arbiter{Dir: "/var/lib/shoal-arbiter", AdvertiseAddr: "192.0.2.30"}
//	if err := a.Join(ctx, arbiterToken, "192.0.2.10:2377"); err != nil { ... } // or a.Start(ctx) after a restart
//	<-a.Ready()
//	defer a.Shutdown(ctx)
//
// It joins with the cluster's arbiter token (JoinTokens.Arbiter), which
// joins nothing else; its certificate (role arbiter) lets it carry Raft
// with the managers and renew itself, and nothing else. One process may
// run several Arbiters, one Dir and port each, for several clusters.
type Arbiter struct {
	// Dir keeps the arbiter's identity, certificates and Raft data;
	// required.
	Dir string
	// ListenAddr is where its Raft port listens (host:port); empty means
	// ":2377".
	ListenAddr string
	// AdvertiseAddr is how the managers reach that port: a host, or
	// host:port. Empty means ListenAddr's host, which must then be named.
	AdvertiseAddr string
	// Raft tunes its Raft store. Timeouts should be the managers'; zero
	// sizes mean the DefaultArbiter values.
	Raft RaftTuning
	// AutoLock, at Join, keeps the key that unseals the arbiter's data
	// off the disk: UnlockKey hands it out once, and a restarted arbiter
	// starts only with it (UnlockWith). See arbiterlock.go.
	AutoLock bool
	// UnlockWith is the unlock key an arbiter with autolock starts with.
	UnlockWith string
	// Logger receives the arbiter's logs; nil discards.
	Logger *slog.Logger

	mu      sync.Mutex
	kek     []byte // the key that unseals the data (autolock: for UnlockKey)
	autoLk  bool
	started bool
	closed  bool
	state   nodeState
	certs   *certHolder
	store   *raftstore.Store
	port    *Port
	mgrs    *managers
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	ready   chan struct{}
}

const (
	arbiterFile    = "arbiter.json"
	arbiterKEKFile = "arbiter.key"
	arbiterRaftDir = "raft"
)

func (a *Arbiter) logger() *slog.Logger {
	if a.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.Logger
}

func (a *Arbiter) readState() (nodeState, bool, error) {
	return readStateFile(filepath.Join(a.Dir, arbiterFile), func(st nodeState) bool { return st.Role == string(ca.RoleArbiter) })
}

func (a *Arbiter) writeState(st nodeState) error {
	return writeStateFile(filepath.Join(a.Dir, arbiterFile), st)
}

// begin checks that the arbiter can start and marks it starting.
func (a *Arbiter) begin(fresh bool) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	read := func() (nodeState, bool, error) {
		if _, err := os.Stat(filepath.Join(a.Dir, nodeFile)); err == nil {
			return nodeState{}, false, fmt.Errorf("swarm: %s holds a node, not an arbiter: use a dir of its own", a.Dir)
		}
		return a.readState()
	}
	absent := fmt.Errorf("swarm: %s holds no arbiter: Join a cluster first", a.Dir)
	if err := beginMember("arbiter", a.Dir, a.closed, a.started, fresh, read, absent); err != nil {
		return err
	}
	a.started = true
	return nil
}

func (a *Arbiter) fail(err error) error {
	a.stop()
	a.mu.Lock()
	a.started = false
	a.mu.Unlock()
	return err
}

// Join joins a cluster as its arbiter through the manager at addr
// (host:port), with the cluster's arbiter token. The arbiter pins the
// cluster's CA by the token before it sends anything.
func (a *Arbiter) Join(ctx context.Context, token, addr string) error {
	if err := a.begin(true); err != nil {
		return err
	}
	tok, err := ca.ParseToken(token)
	if err != nil {
		return a.fail(fmt.Errorf("%w: %v", api.ErrInvalidSpec, err))
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return a.fail(fmt.Errorf("%w: manager address %q: want host:port", api.ErrInvalidSpec, addr))
	}
	key, err := ca.NewNodeKey()
	if err != nil {
		return a.fail(err)
	}
	csr, err := ca.NewCSR(key)
	if err != nil {
		return a.fail(err)
	}
	// The managers need the arbiter's address: open its port first.
	st := nodeState{Role: string(ca.RoleArbiter)}
	ln, err := a.listen(&st)
	if err != nil {
		return a.fail(err)
	}
	ans, err := joinCall(ctx, tok, addr, JoinRequest{Token: token, CSR: csr, Addr: st.Advertise, Arbiter: true})
	if err == nil && ans.Role != string(ca.RoleArbiter) {
		err = fmt.Errorf("swarm: the manager made this arbiter a %s", ans.Role)
	}
	if err != nil {
		ln.Close()
		return a.fail(err)
	}
	keyPEM, err := ca.MarshalKey(key)
	if err == nil {
		err = (ca.Files{Dir: a.Dir}).Save(ans.Cert, keyPEM, ans.Root)
	}
	var root *ca.Root
	if err == nil {
		root, err = ca.ParseRoot(ans.Root, nil)
	}
	if err == nil {
		keyFile := arbiterKEKFile
		if a.AutoLock {
			keyFile = arbiterKEKNextFile
		}
		err = writeKEK(filepath.Join(a.Dir, keyFile), newKEK())
	}
	if err == nil {
		st.ID, st.ClusterID, st.Managers = ans.NodeID, root.ClusterID(), ans.Managers
		err = a.writeState(st)
	}
	if err != nil {
		ln.Close()
		return a.fail(err)
	}
	if err := a.run(ctx, st, ln); err != nil {
		return a.fail(err)
	}
	return nil
}

// Start starts an arbiter that joined before, from Dir, with the same
// identity and address.
func (a *Arbiter) Start(ctx context.Context) error {
	if err := a.begin(false); err != nil {
		return err
	}
	st, _, err := a.readState()
	if err != nil {
		return a.fail(err)
	}
	ln, err := a.listen(&st)
	if err != nil {
		return a.fail(err)
	}
	if err := a.run(ctx, st, ln); err != nil {
		return a.fail(err)
	}
	return nil
}

// listen opens the Raft port as a manager's management port is opened.
func (a *Arbiter) listen(st *nodeState) (net.Listener, error) {
	return (&Node{ListenAddr: a.ListenAddr, AdvertiseAddr: a.AdvertiseAddr}).listen(st)
}

// run starts the port, the Raft store and the arbiter's loops.
func (a *Arbiter) run(ctx context.Context, st nodeState, ln net.Listener) error {
	cert, root, err := (ca.Files{Dir: a.Dir}).Load()
	if err != nil {
		ln.Close()
		return err
	}
	kek, autoLock, err := a.arbiterKey()
	if err != nil {
		ln.Close()
		return err
	}
	holder := &certHolder{}
	holder.set(cert, root)
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	a.mu.Lock()
	a.state, a.certs, a.cancel = st, holder, cancel
	a.mgrs = &managers{addrs: slices.Clone(st.Managers), tls: holder.clientConfig()}
	a.mu.Unlock()

	port, err := ServePort(PortConfig{
		Listener: ln,
		TLS:      holder.serverConfig,
		AuthorizeRaft: func(cs tls.ConnectionState) error {
			s := a.Store()
			if s == nil {
				return errors.New("this arbiter is not running")
			}
			return authorizeRaftPeer(s, cs)
		},
		API: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// Managers check that they reach the arbiter; nothing else
			// is served.
			if _, role, _ := peerIdentity(r); r.Method == http.MethodGet && r.URL.Path == arbiterPing && role == string(ca.RoleManager) {
				w.WriteHeader(http.StatusNoContent)
				return
			}
			writeError(w, fmt.Errorf("%w: %s is an arbiter: it serves no API (call a manager)", ErrUnavailable, st.ID))
		}),
		Logger: a.logger(),
	})
	if err != nil {
		ln.Close()
		return err
	}
	a.mu.Lock()
	a.port = port
	a.mu.Unlock()
	t := a.Raft
	store := &raftstore.Store{ID: st.ID, Dir: filepath.Join(a.Dir, arbiterRaftDir), Schema: Schema(),
		Transport:        raftstore.NewNetworkTransport(port.RaftLayer(st.Advertise, holder.raftClientConfig), a.Logger),
		KeyEncryptionKey: kek, Logger: a.Logger,
		HeartbeatTimeout: t.HeartbeatTimeout, ElectionTimeout: t.ElectionTimeout, LeaderLeaseTimeout: t.LeaderLeaseTimeout,
		SnapshotThreshold: cmpOr(t.SnapshotThreshold, DefaultArbiterSnapshotThreshold),
		TrailingLogs:      cmpOr(t.TrailingLogs, DefaultArbiterTrailingLogs),
		WatchBuffer:       cmpOr(t.WatchBuffer, DefaultArbiterWatchBuffer),
		WALSegmentBytes:   DefaultArbiterWALSegmentBytes,
		WALCacheBytes:     DefaultArbiterWALCacheBytes}
	if err := store.Start(ctx); err != nil {
		if autoLock && errors.Is(err, raftstore.ErrBadKey) {
			return fmt.Errorf("%w (%v)", ErrBadUnlockKey, err)
		}
		return err
	}
	a.mu.Lock()
	a.store, a.kek, a.autoLk = store, kek, autoLock
	a.mu.Unlock()
	a.wg.Add(3)
	go func() { defer a.wg.Done(); a.becomeReady(runCtx, store) }()
	go func() { defer a.wg.Done(); a.handOver(runCtx, store) }()
	go func() { defer a.wg.Done(); renewLoop(runCtx, a.certs, a.Renew, a.logger()) }()
	a.logger().Info("swarm: arbiter started", "arbiter", st.ID, "addr", st.Advertise)
	return nil
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// becomeReady waits until the store has caught up, asks the leader for a
// vote if it has none yet, and closes Ready once it votes.
func (a *Arbiter) becomeReady(ctx context.Context, st *raftstore.Store) {
	select {
	case <-st.Ready():
	case <-ctx.Done():
		return
	}
	var b backoff
	for ctx.Err() == nil {
		voter, err := a.isVoter(ctx, st)
		if err == nil && voter {
			close(a.readyChan())
			a.logger().Info("swarm: this arbiter votes", "arbiter", st.ID)
			return
		}
		if err == nil {
			err = a.managersCaller().call(ctx, http.MethodPost, arbiterPrefix+"promote-self", nil, nil)
			a.keepManagers()
		}
		if err != nil {
			a.logger().Debug("swarm: arbiter asking to vote", "err", err)
			b.wait(ctx)
		}
	}
}

func (a *Arbiter) isVoter(ctx context.Context, st *raftstore.Store) (bool, error) {
	srvs, err := st.Servers(ctx)
	if err != nil {
		return false, err
	}
	return slices.ContainsFunc(srvs, func(s raftstore.Server) bool { return s.ID == st.ID && s.Voter }), nil
}

// handOver gives leadership to a manager whenever this arbiter wins it:
// an arbiter runs no leader loop, so while it leads, no write is taken
// and nothing is reconciled. It tries the managers in turn until one
// takes over or the arbiter is no longer leader.
func (a *Arbiter) handOver(ctx context.Context, st *raftstore.Store) {
	leaders, err := st.WatchLeader(ctx)
	if err != nil {
		a.logger().Error("swarm: arbiter cannot watch leadership", "err", err)
		return
	}
	for li := range leaders {
		var b backoff
		for li.Self && st.IsLeader() && ctx.Err() == nil {
			err := a.transfer(ctx, st)
			if err == nil {
				break
			}
			a.logger().Warn("swarm: arbiter leads and cannot hand leadership over yet", "err", err)
			select {
			case li = <-leaders:
				continue
			default:
			}
			b.wait(ctx)
		}
	}
}

// transfer hands leadership to one of the managers that vote.
func (a *Arbiter) transfer(ctx context.Context, st *raftstore.Store) error {
	srvs, err := st.Servers(ctx)
	if err != nil {
		return err
	}
	arbiters := arbitersOf(st)
	var errs []error
	for _, s := range srvs {
		if !s.Voter || s.ID == st.ID || arbiters[s.ID] {
			continue
		}
		a.logger().Info("swarm: arbiter won an election; handing leadership to a manager", "manager", s.ID)
		tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := st.TransferLeadership(tctx, s.ID)
		cancel()
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("to %s: %w", s.ID, err))
	}
	if len(errs) == 0 {
		return errors.New("swarm: no manager votes in the Raft configuration")
	}
	return errors.Join(errs...)
}

// managersCaller calls the managers with the arbiter's certificate.
func (a *Arbiter) managersCaller() *managers {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.mgrs
}

// keepManagers records the managers' addresses (from the Raft
// configuration and the managers' answers), so that a restarted arbiter
// knows where to renew its certificate.
func (a *Arbiter) keepManagers() {
	a.mu.Lock()
	st, mc, store := a.state, a.mgrs, a.store
	a.mu.Unlock()
	if store != nil {
		mc.learn(managerAddrs(store))
	}
	addrs := mc.known()
	if len(addrs) == 0 || slices.Equal(addrs, st.Managers) {
		return
	}
	st.Managers = addrs
	if err := a.writeState(st); err != nil {
		a.logger().Warn("swarm: recording the managers' addresses", "err", err)
		return
	}
	a.mu.Lock()
	a.state = st
	a.mu.Unlock()
}

// Renew renews the arbiter's certificate now (it does so by itself before
// the certificate runs out).
func (a *Arbiter) Renew(ctx context.Context) error {
	a.mu.Lock()
	h := a.certs
	a.mu.Unlock()
	if h == nil {
		return ErrNotStarted
	}
	a.keepManagers()
	return renewCertificate(ctx, a.managersCaller(), a.Dir, h, ca.RoleArbiter, a.logger())
}

func (a *Arbiter) readyChan() chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ready == nil {
		a.ready = make(chan struct{})
	}
	return a.ready
}

// Ready is closed once the arbiter has caught up with the cluster and
// votes.
func (a *Arbiter) Ready() <-chan struct{} { return a.readyChan() }

// ID is the arbiter's ID ("" before Join or Start).
func (a *Arbiter) ID() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.state.ID
}

// Addr is the arbiter's Raft address as advertised.
func (a *Arbiter) Addr() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.state.Advertise
}

// IsLeader reports whether the arbiter leads now (it hands leadership
// over as soon as a manager can take it).
func (a *Arbiter) IsLeader() bool {
	st := a.Store()
	return st != nil && st.IsLeader()
}

// Store is the arbiter's Raft store (nil before it starts), for reads of
// what it holds.
func (a *Arbiter) Store() *raftstore.Store {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.store
}

// Certificate is the arbiter's current certificate (nil before it
// starts).
func (a *Arbiter) Certificate() *x509.Certificate {
	a.mu.Lock()
	h := a.certs
	a.mu.Unlock()
	if h == nil {
		return nil
	}
	return h.leaf()
}

func (a *Arbiter) stop() {
	a.mu.Lock()
	cancel, st, port := a.cancel, a.store, a.port
	a.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	if st != nil {
		st.Close()
	}
	if port != nil {
		port.Close()
	}
	a.wg.Wait()
}

// Shutdown stops the arbiter gracefully: if it leads, it hands leadership
// over first.
func (a *Arbiter) Shutdown(ctx context.Context) error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return fmt.Errorf("swarm: arbiter shutdown: %w", net.ErrClosed)
	}
	a.closed = true
	st := a.store
	a.mu.Unlock()
	if st != nil && st.IsLeader() {
		if err := a.transfer(ctx, st); err != nil {
			a.logger().Warn("swarm: arbiter leadership transfer before shutdown", "err", err)
		}
	}
	a.stop()
	return nil
}

// Close stops the arbiter at once. A second Close returns an error
// wrapping net.ErrClosed.
func (a *Arbiter) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return fmt.Errorf("swarm: arbiter close: %w", net.ErrClosed)
	}
	a.closed = true
	a.mu.Unlock()
	a.stop()
	return nil
}

// arbiterClientConfig calls arbiters (their certificate has the arbiter
// role) with whatever certificate is current at each handshake.
func (h *certHolder) arbiterClientConfig() *tls.Config {
	c := h.cur.Load()
	conf := ca.ClientConfig(c.cert, c.root, ca.RoleArbiter)
	conf.Certificates = nil
	conf.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		cur := h.cur.Load()
		return &cur.cert, nil
	}
	return conf
}

// raftClientConfig dials Raft peers (managers and arbiters) with whatever
// certificate is current at each handshake.
func (h *certHolder) raftClientConfig() *tls.Config {
	c := h.cur.Load()
	conf := ca.RaftClientConfig(c.cert, c.root)
	conf.Certificates = nil
	conf.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		cur := h.cur.Load()
		return &cur.cert, nil
	}
	return conf
}
