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
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/internal/atomicfile"
	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/ca"
	"github.com/shoalproject/shoal/swarm/netagent"
)

// Node is one Shoal node, as a host program embeds it: it inits a cluster
// or joins one with a token, then runs the manager role (Raft, the
// management port with the API, the CA) and, with an Executor, the worker
// role, over mutual TLS. A zero Node with Dir set is usable:
//
//	n := &swarm.Node{Dir: "/var/lib/shoal", AdvertiseAddr: "192.0.2.10", Executor: executor}
//	if err := n.Init(ctx); err != nil { ... }   // or n.Join(ctx, token, "192.0.2.1:2377"), or n.Start(ctx) after a restart
//	<-n.Ready()
//	svc, err := n.Client().CreateService(ctx, spec)
//	defer n.Shutdown(ctx)
type Node struct {
	// Dir keeps the node's identity, certificates and (on managers) the
	// Raft data; required.
	Dir string
	// ListenAddr is where a manager's management port listens
	// (host:port); empty means ":2377".
	ListenAddr string
	// AdvertiseAddr is how other nodes reach this manager's port: a host,
	// or host:port. Empty means ListenAddr's host, which must then be
	// named.
	AdvertiseAddr string
	// Executor runs the node's tasks; nil means none (a manager that only
	// manages).
	Executor agent.Executor
	// ListedWithoutTasks, for a node without an Executor, registers it
	// with the managers all the same and keeps it heartbeating, so that
	// node lists show it with its state (docker node ls); it registers
	// drained and runs no task (shoald --tasks=false sets it). Without
	// it, such a node is in the Raft configuration only. With a Network,
	// it serves the routing mesh too.
	ListedWithoutTasks bool
	// Network, when set, turns on the node's data plane: the node fills in
	// the agent's NodeID (and StateDir, Dir/net, and DataAddr, the address
	// this host reaches the managers from, when empty), starts it, hands
	// its task hook to the Executor (agent/containerd takes it), applies
	// each assignment's network view and tells the managers its WireGuard
	// key (again after each rotation). Needs root. The agent is closed
	// with the node; devices and task namespaces stay for the next start.
	Network *netagent.Agent
	// Description overrides what the node detects about itself.
	Description api.NodeDescription
	// HeartbeatPeriod is the managers' base heartbeat period; 0 means
	// DefaultHeartbeatPeriod.
	HeartbeatPeriod time.Duration
	// DrainTimeout and DrainDelay are a manager's drain bounds
	// (Manager.DrainTimeout, Manager.DrainDelay): the workers learn them
	// in their sessions.
	DrainTimeout, DrainDelay time.Duration
	// AutoLock turns autolock on for a manager's Raft data (see
	// Manager.AutoLock); UnlockWith unlocks it at start.
	AutoLock   bool
	UnlockWith string
	// Raft tunes a manager's Raft.
	Raft RaftTuning
	// TwoNode turns on two-node mode for a manager (Manager.TwoNode):
	// with exactly two managers and no arbiter, the survivor of a
	// manager's loss fences it and goes on alone.
	TwoNode *TwoNode
	// Logger receives the node's logs; nil discards.
	Logger *slog.Logger

	mu      sync.Mutex
	started bool
	closed  bool
	state   nodeState
	certs   *certHolder
	mgr     *Manager
	port    *Port
	worker  *Worker
	cancel  context.CancelFunc
	runCtx  context.Context // ends when the node stops: background loops use it
	wg      sync.WaitGroup
	ready   chan struct{}
	client  *Client
	mgrs    *managers
	readyMu sync.Once
}

// secretUser is an executor that takes its secrets from the worker
// (agent/containerd's Executor).
type secretUser interface {
	UseSecrets(agent.SecretSource)
}

// networkUser is an executor that takes its tasks' network namespaces
// from the network agent (agent/containerd's Executor).
type networkUser interface {
	UseNetwork(hook func(ctx context.Context, t *api.Task) (netnsPath, resolvConf string, err error))
}

// DataAddrFor is the local address this host reaches addr (a manager's
// host:port) from: a node's data-plane address, unless the operator names
// one. Nothing is sent.
func DataAddrFor(addr string) (netip.Addr, error) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("swarm: finding the data-plane address towards %s: %w", addr, err)
	}
	defer c.Close()
	ap, err := netip.ParseAddrPort(c.LocalAddr().String())
	if err != nil {
		return netip.Addr{}, err
	}
	return ap.Addr().Unmap(), nil
}

// startNetwork completes the network agent's settings and starts it.
func (n *Node) startNetwork(ctx context.Context, nodeID string) error {
	na := n.Network
	if na.NodeID == "" {
		na.NodeID = nodeID
	}
	if na.NodeID != nodeID {
		return fmt.Errorf("swarm: the network agent is for node %s, this node is %s", na.NodeID, nodeID)
	}
	if na.StateDir == "" {
		na.StateDir = filepath.Join(n.Dir, "net")
	}
	if !na.DataAddr.IsValid() {
		if d := n.Description.DataAddr; d != "" {
			a, err := netip.ParseAddr(d)
			if err != nil {
				return fmt.Errorf("swarm: Description.DataAddr %q: %w", d, err)
			}
			na.DataAddr = a
		} else {
			addrs := n.managerAddrs()
			if len(addrs) == 0 {
				return errors.New("swarm: no manager address to find the data-plane address from: set the network agent's DataAddr")
			}
			a, err := DataAddrFor(addrs[0])
			if err != nil {
				return err
			}
			na.DataAddr = a
		}
	}
	if na.Logger == nil {
		na.Logger = n.Logger
	}
	if err := na.Start(ctx); err != nil {
		return fmt.Errorf("swarm: starting the network agent: %w", err)
	}
	return nil
}

// nodeState is what a node keeps in Dir/node.json.
type nodeState struct {
	ID        string   `json:"id"`
	ClusterID string   `json:"clusterID"`
	Role      string   `json:"role"`
	Managers  []string `json:"managers,omitempty"`
	// Listen and Advertise are a manager's addresses as first resolved
	// (with the port the listener got), kept so that a restarted manager
	// is where Raft expects it.
	Listen    string `json:"listen,omitempty"`
	Advertise string `json:"advertise,omitempty"`
}

const nodeFile = "node.json"

// ErrNotInitialized is returned by Start on a Dir that holds no node yet.
var ErrNotInitialized = errors.New("swarm: this data dir holds no node: Init a cluster or Join one first")

func (n *Node) logger() *slog.Logger {
	if n.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return n.Logger
}

func (n *Node) readState() (nodeState, bool, error) {
	return readStateFile(filepath.Join(n.Dir, nodeFile), func(nodeState) bool { return true })
}

func (n *Node) writeState(st nodeState) error {
	return writeStateFile(filepath.Join(n.Dir, nodeFile), st)
}

// begin checks that the node can start and marks it starting.
func (n *Node) begin(fresh bool) error {
	// A worker may be promoted later: its manager settings are checked
	// now, not at the promotion.
	if err := checkDrainBounds(n.DrainTimeout, n.DrainDelay); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := beginMember("node", n.Dir, n.closed, n.started, fresh, n.readState, ErrNotInitialized); err != nil {
		return err
	}
	n.started = true
	return nil
}

func (n *Node) fail(err error) error {
	n.mu.Lock()
	n.started = false
	n.mu.Unlock()
	n.stop()
	return err
}

// listen opens the management port's listener and works out the address
// to advertise.
func (n *Node) listen(st *nodeState) (net.Listener, error) {
	addr := st.Listen
	if addr == "" {
		addr = n.ListenAddr
		if addr == "" {
			addr = ":" + strconv.Itoa(DefaultManagementPort)
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("swarm: management port %s: %w", addr, err)
	}
	if st.Advertise == "" {
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		host := n.AdvertiseAddr
		if h, p, err := net.SplitHostPort(host); err == nil {
			host, port = h, p
		}
		if host == "" {
			if h, _, _ := net.SplitHostPort(addr); h != "" && h != "0.0.0.0" && h != "::" {
				host = h
			}
		}
		if host == "" {
			ln.Close()
			return nil, errors.New("swarm: set AdvertiseAddr (how other nodes reach this manager) or a ListenAddr with a host")
		}
		st.Advertise = net.JoinHostPort(host, port)
		st.Listen = ln.Addr().String()
		if h, _, _ := net.SplitHostPort(addr); h == "" || h == "0.0.0.0" || h == "::" {
			_, p, _ := net.SplitHostPort(ln.Addr().String())
			st.Listen = net.JoinHostPort(h, p)
		}
	}
	return ln, nil
}

// Init makes a new cluster with this node as its first manager: the
// cluster's CA, this node's certificate, Raft, and the worker role if the
// node has an Executor.
func (n *Node) Init(ctx context.Context) error {
	if err := n.begin(true); err != nil {
		return err
	}
	st := nodeState{ID: newID(), ClusterID: newID(), Role: string(ca.RoleManager)}
	root, err := ca.NewRoot(st.ClusterID)
	if err != nil {
		return n.fail(err)
	}
	key, err := ca.NewNodeKey()
	if err != nil {
		return n.fail(err)
	}
	csr, err := ca.NewCSR(key)
	if err != nil {
		return n.fail(err)
	}
	certPEM, err := root.Issue(csr, st.ID, ca.RoleManager, 0)
	if err != nil {
		return n.fail(err)
	}
	keyPEM, err := ca.MarshalKey(key)
	if err != nil {
		return n.fail(err)
	}
	if err := (ca.Files{Dir: n.Dir}).Save(certPEM, keyPEM, root.CertPEM()); err != nil {
		return n.fail(err)
	}
	ln, err := n.listen(&st)
	if err != nil {
		return n.fail(err)
	}
	st.Managers = []string{st.Advertise}
	if err := n.writeState(st); err != nil {
		ln.Close()
		return n.fail(err)
	}
	boot := []raftstore.Server{{ID: st.ID, Address: st.Advertise, Voter: true}}
	if err := n.run(ctx, st, ln, boot, root); err != nil {
		return n.fail(err)
	}
	return nil
}

// Join joins a cluster through the manager at addr (host:port) with a join
// token; the token says the role. The node pins the cluster's CA by the
// token before it sends anything.
func (n *Node) Join(ctx context.Context, token, addr string) error {
	if err := n.begin(true); err != nil {
		return err
	}
	tok, err := ca.ParseToken(token)
	if err != nil {
		return n.fail(fmt.Errorf("%w: %v", api.ErrInvalidSpec, err))
	}
	key, err := ca.NewNodeKey()
	if err != nil {
		return n.fail(err)
	}
	csr, err := ca.NewCSR(key)
	if err != nil {
		return n.fail(err)
	}
	// A manager must say where its port will be: open it first (it serves
	// once the node has its certificate).
	var st nodeState
	var ln net.Listener
	var ans JoinAnswer
	try := func(role string) error {
		req := JoinRequest{Token: token, CSR: csr}
		if role == string(ca.RoleManager) {
			req.Addr = st.Advertise
		}
		var err error
		ans, err = joinCall(ctx, tok, addr, req)
		return err
	}
	err = try("")
	if errors.Is(err, errAddrRequired) {
		// A manager token: the cluster wants this node's address.
		if ln, err = n.listen(&st); err != nil {
			return n.fail(err)
		}
		err = try(string(ca.RoleManager))
	}
	if err != nil {
		if ln != nil {
			ln.Close()
		}
		return n.fail(err)
	}
	keyPEM, err := ca.MarshalKey(key)
	if err == nil {
		err = (ca.Files{Dir: n.Dir}).Save(ans.Cert, keyPEM, ans.Root)
	}
	if err != nil {
		if ln != nil {
			ln.Close()
		}
		return n.fail(err)
	}
	root, err := ca.ParseRoot(ans.Root, nil)
	if err != nil {
		return n.fail(err)
	}
	st.ID, st.ClusterID, st.Role, st.Managers = ans.NodeID, root.ClusterID(), ans.Role, ans.Managers
	if err := n.writeState(st); err != nil {
		return n.fail(err)
	}
	if err := n.run(ctx, st, ln, nil, nil); err != nil {
		return n.fail(err)
	}
	return nil
}

// joinCall sends a join request on the join protocol, to the leader that a
// refusal names if need be.
func joinCall(ctx context.Context, tok ca.Token, addr string, req JoinRequest) (JoinAnswer, error) {
	tr := &http.Transport{TLSClientConfig: ca.JoinClientConfig(tok), TLSHandshakeTimeout: 10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		// HTTP/1.1 on the join protocol.
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
	defer tr.CloseIdleConnections()
	mc := &managers{addrs: []string{addr}, client: &http.Client{Transport: tr}}
	var ans JoinAnswer
	err := mc.call(ctx, http.MethodPost, "/v1/join", req, &ans)
	return ans, err
}

// Start starts a node that was initialized or joined before, from Dir.
func (n *Node) Start(ctx context.Context) error {
	if err := n.begin(false); err != nil {
		return err
	}
	st, _, err := n.readState()
	if err != nil {
		return n.fail(err)
	}
	var ln net.Listener
	if st.Role == string(ca.RoleManager) {
		if ln, err = n.listen(&st); err != nil {
			return n.fail(err)
		}
	}
	if err := n.run(ctx, st, ln, nil, nil); err != nil {
		return n.fail(err)
	}
	return nil
}

// StartOrInit starts the node from Dir, or, when Dir holds no node yet,
// inits a new cluster there with this node as its first manager: what a
// host program that embeds a one-node cluster does at every start.
func (n *Node) StartOrInit(ctx context.Context) error {
	err := n.Start(ctx)
	if errors.Is(err, ErrNotInitialized) {
		return n.Init(ctx)
	}
	return err
}

// run starts the node's roles from its state and certificates. ln is the
// management port's listener on managers; boot and root only at Init.
func (n *Node) run(ctx context.Context, st nodeState, ln net.Listener, boot []raftstore.Server, root *ca.Root) error {
	cert, fileRoot, err := (ca.Files{Dir: n.Dir}).Load()
	if err != nil {
		if ln != nil {
			ln.Close()
		}
		return err
	}
	holder := &certHolder{}
	holder.set(cert, fileRoot)
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	n.mu.Lock()
	n.state, n.certs, n.cancel, n.runCtx = st, holder, cancel, runCtx
	n.ready = n.readyChan()
	n.mu.Unlock()

	if st.Role == string(ca.RoleManager) {
		if err := n.runManager(ctx, st, ln, boot, root); err != nil {
			return err
		}
	}
	if n.Executor != nil || n.ListedWithoutTasks {
		d := &RemoteDispatcher{Addrs: n.managerAddrs(), TLS: holder.clientConfig()}
		w := &Worker{NodeID: st.ID, Executor: n.Executor, Dispatcher: d, Description: DetectDescription(n.Description), Logger: n.Logger}
		if n.Executor == nil {
			w.Executor, w.Description.NoTasks = noTasks{}, true
		}
		if na := n.Network; na != nil {
			// Without an executor (a node listed without tasks) the agent
			// still serves the routing mesh: published ports answer on
			// every node.
			nu, ok := n.Executor.(networkUser)
			if !ok && n.Executor != nil {
				return fmt.Errorf("swarm: the node has a network agent but its executor (%T) takes no network hook", n.Executor)
			}
			// A rotated WireGuard key goes to the managers at once: until
			// the other nodes have it, their encrypted traffic to this
			// node is lost.
			told := na.OnKeyChange
			na.OnKeyChange = func(pub string) {
				if told != nil {
					told(pub)
				}
				w.DescriptionChanged()
			}
			if err := n.startNetwork(ctx, st.ID); err != nil {
				return err
			}
			if ok {
				nu.UseNetwork(na.TaskNetwork)
			}
			w.Network = na
			desc := w.Description
			desc.DataAddr = na.DataAddr.String()
			w.Describe = func() api.NodeDescription {
				d := desc
				d.WireGuardKey = na.PublicKey()
				return d
			}
		}
		// The executor reads the secrets and configs the managers sent
		// this node from the worker, in memory.
		if su, ok := n.Executor.(secretUser); ok {
			su.UseSecrets(w)
		}
		if n.Executor == nil {
			// Listed only: it registers in the background, so that
			// managers that cannot take it yet (this one locked, no
			// leader) hold up neither the start nor the node's readiness.
			n.mu.Lock()
			n.worker = w
			n.mu.Unlock()
			n.wg.Add(1)
			go func() {
				defer n.wg.Done()
				if err := w.Start(runCtx); err != nil && runCtx.Err() == nil {
					n.logger().Warn("swarm: this node could not register: node lists do not show it", "err", err)
				}
			}()
		} else {
			if err := w.Start(ctx); err != nil {
				if n.Network != nil {
					n.Network.Close()
				}
				return err
			}
			n.mu.Lock()
			n.worker = w
			n.mu.Unlock()
		}
	}
	n.wg.Add(3)
	go func() { defer n.wg.Done(); renewLoop(runCtx, n.certs, n.renew, n.logger()) }()
	go func() { defer n.wg.Done(); n.becomeReady(runCtx) }()
	go func() { defer n.wg.Done(); n.roleLoop(runCtx) }()
	return nil
}

// roleLoop follows the role the managers want for this node: promoted, it
// gets a manager certificate and starts managing; demoted (the leader has
// taken it out of Raft), it stops managing.
func (n *Node) roleLoop(ctx context.Context) {
	period := max(n.HeartbeatPeriod, time.Second)
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var self api.Node
		mc := n.managersCaller()
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := mc.call(cctx, http.MethodGet, dispatcherPrefix+"node", nil, &self)
		cancel()
		if err != nil {
			continue // not registered yet, or no manager: look again later
		}
		n.keepManagers(mc.known())
		want, have := string(self.Spec.Role), n.Role()
		if want == have || want == "" {
			continue
		}
		if err := n.switchRole(ctx, want); err != nil {
			n.logger().Warn("swarm: taking on a new role", "role", want, "err", err)
		}
	}
}

// switchRole renews the certificate for the new role and starts or stops
// the manager role.
func (n *Node) switchRole(ctx context.Context, role string) error {
	if err := n.renew(ctx); err != nil {
		return err
	}
	id, err := ca.IdentityOf(n.certs.leaf())
	if err != nil {
		return err
	}
	if string(id.Role) != role {
		return fmt.Errorf("the renewed certificate is for a %s", id.Role)
	}
	n.mu.Lock()
	st := n.state
	n.mu.Unlock()
	prev := st
	st.Role = role
	if role == string(ca.RoleManager) {
		ln, err := n.listen(&st)
		if err != nil {
			return err
		}
		if err := n.writeState(st); err != nil {
			ln.Close()
			return err
		}
		n.mu.Lock()
		n.state = st
		n.mu.Unlock()
		if err := n.runManager(ctx, st, ln, nil, nil); err != nil {
			// Back to the old role, so that the role loop tries again
			// rather than taking a node with no manager for a manager.
			n.mu.Lock()
			n.state = prev
			n.mu.Unlock()
			return errors.Join(err, n.writeState(prev))
		}
		req := struct {
			Addr string `json:"addr"`
		}{st.Advertise}
		var b backoff
		for ctx.Err() == nil {
			err := n.Client().managers().call(ctx, http.MethodPost, controlPrefix+"raft/join-self", req, nil)
			if err == nil {
				n.logger().Info("swarm: promoted: this node manages now", "node", st.ID)
				return nil
			}
			n.logger().Debug("swarm: joining Raft after promotion", "err", err)
			b.wait(ctx)
		}
		return ctx.Err()
	}
	// Demoted: stop managing and forget the Raft data (a later promotion
	// joins afresh); the new role shows once all that is done.
	n.mu.Lock()
	m, port := n.mgr, n.port
	n.mu.Unlock()
	if m != nil {
		m.Close()
	}
	if port != nil {
		port.Close()
	}
	if err := os.RemoveAll(filepath.Join(n.Dir, "manager")); err != nil {
		return err
	}
	st.Listen, st.Advertise = "", ""
	if err := n.writeState(st); err != nil {
		return err
	}
	n.mu.Lock()
	n.state, n.mgr, n.port = st, nil, nil
	n.mu.Unlock()
	n.logger().Info("swarm: demoted: this node no longer manages", "node", st.ID)
	return nil
}

func (n *Node) runManager(ctx context.Context, st nodeState, ln net.Listener, boot []raftstore.Server, root *ca.Root) error {
	holder := n.certs
	m := &Manager{ID: st.ID, Dir: filepath.Join(n.Dir, "manager"), Bootstrap: boot, JoinExisting: len(boot) == 0, RootCA: root,
		HeartbeatPeriod: n.HeartbeatPeriod, DrainTimeout: n.DrainTimeout, DrainDelay: n.DrainDelay, AutoLock: n.AutoLock, UnlockWith: n.UnlockWith, Raft: n.Raft, TwoNode: n.TwoNode, Logger: n.Logger}
	port, err := ServePort(PortConfig{
		Listener: ln,
		TLS: func() *tls.Config {
			c := holder.serverConfig()
			verify := c.VerifyConnection
			c.VerifyConnection = func(cs tls.ConnectionState) error {
				if err := verify(cs); err != nil {
					return err
				}
				if id := cs.PeerCertificates[0].Subject.CommonName; m.IsRemoved(id) {
					return fmt.Errorf("swarm: node %s was removed from the cluster", id)
				}
				return nil
			}
			return c
		},
		JoinTLS:       holder.joinConfig,
		AuthorizeRaft: func(cs tls.ConnectionState) error { return authorizeRaft(m, cs) },
		API:           m.Handler(holder.clientConfig),
		Join:          m.JoinHandler(),
		Logger:        n.logger(),
	})
	if err != nil {
		ln.Close()
		return err
	}
	m.Transport = raftstore.NewNetworkTransport(port.RaftLayer(st.Advertise, holder.raftClientConfig), n.Logger)
	if err := m.Start(ctx); err != nil {
		port.Close()
		return err
	}
	n.mu.Lock()
	n.mgr, n.port = m, port
	runCtx := n.runCtx
	n.mu.Unlock()
	n.wg.Add(1)
	go func() { defer n.wg.Done(); m.probeArbiters(runCtx, holder.arbiterClientConfig) }()
	if len(boot) == 0 {
		// A manager that joined is a non-voter until it has caught up.
		// The loop lives with the node, not with the call that started
		// it (Close must end it).
		n.wg.Add(1)
		go func() { defer n.wg.Done(); n.promoteWhenCaughtUp(runCtx, m) }()
	}
	return nil
}

// authorizeRaft admits a Raft connection from a manager or an arbiter in
// the Raft configuration only.
func authorizeRaft(m *Manager, cs tls.ConnectionState) error {
	st := m.Store()
	if st == nil {
		return errors.New("this manager is not running")
	}
	return authorizeRaftPeer(st, cs)
}

// authorizeRaftPeer admits a Raft connection from a manager or an arbiter
// in st's Raft configuration.
func authorizeRaftPeer(st *raftstore.Store, cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("no certificate")
	}
	id, err := ca.IdentityOf(cs.PeerCertificates[0])
	if err != nil {
		return err
	}
	if id.Role != ca.RoleManager && id.Role != ca.RoleArbiter {
		return fmt.Errorf("node %s is a %s, not a manager or an arbiter", id.NodeID, id.Role)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	srvs, err := st.Servers(ctx)
	if err != nil {
		return err
	}
	// A member that has just joined knows no configuration yet: it learns
	// it from the leader, whom it must let in (TLS has shown a manager of
	// this cluster; an arbiter leads only for a moment, and waits). From
	// then on, members only.
	if len(srvs) == 0 {
		if id.Role != ca.RoleManager {
			return fmt.Errorf("%s %s: this member knows no Raft configuration yet and takes it from a manager", id.Role, id.NodeID)
		}
		return nil
	}
	if !slices.ContainsFunc(srvs, func(s raftstore.Server) bool { return s.ID == id.NodeID }) {
		return fmt.Errorf("%s %s is not in the Raft configuration", id.Role, id.NodeID)
	}
	return nil
}

// promoteWhenCaughtUp asks the leader to make this manager a voter once
// its store has caught up. Until then, every rejoinPeriod, it asks the
// leader to add it to Raft (raft/join-self, which does nothing for a
// member): a manager fenced in two-node mode comes back outside the
// survivor's configuration, which no longer talks to it.
func (n *Node) promoteWhenCaughtUp(ctx context.Context, m *Manager) {
	t := time.NewTicker(rejoinPeriod)
	defer t.Stop()
	var refused string // the last refusal logged, so it is logged once
	for waiting := true; waiting; {
		select {
		case <-m.Ready():
			waiting = false
		case <-ctx.Done():
			return
		case <-t.C:
			n.mu.Lock()
			addr := n.state.Advertise
			n.mu.Unlock()
			body := map[string]string{"addr": addr}
			cctx, cancel := context.WithTimeout(ctx, rejoinPeriod)
			err := n.Client().managers().call(cctx, http.MethodPost, controlPrefix+"raft/join-self", body, nil)
			switch {
			case errors.Is(err, errForbidden) && err.Error() != refused:
				// Not a passing state (no leader yet): the operator must act.
				refused = err.Error()
				n.logger().Error("swarm: the cluster refuses to take this manager back", "err", err)
			case err != nil:
				n.logger().Debug("swarm: asking to be added to Raft", "err", err)
			}
			cancel()
		}
	}
	var b backoff
	for ctx.Err() == nil {
		if _, err := m.st(); errors.Is(err, net.ErrClosed) {
			return // demoted or closed meanwhile: nothing to promote
		}
		err := n.Client().managers().call(ctx, http.MethodPost, controlPrefix+"raft/promote-self", nil, nil)
		if err == nil {
			n.logger().Info("swarm: this manager votes now", "node", m.ID)
			return
		}
		n.logger().Debug("swarm: asking to vote", "err", err)
		b.wait(ctx)
	}
}

// rejoinPeriod is how often a manager that has no leader yet asks to be
// added to Raft.
const rejoinPeriod = 2 * time.Second

// managersCaller is the node's way to call the managers, with its
// certificate; it learns managers that join from their answers.
func (n *Node) managersCaller() *managers {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mgrs == nil {
		n.mgrs = &managers{addrs: n.managerAddrsLocked(), tls: n.certs.clientConfig()}
	}
	return n.mgrs
}

// keepManagers records the managers' addresses, so that a restarted node
// knows where they are.
func (n *Node) keepManagers(addrs []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(addrs) == 0 || slices.Equal(addrs, n.state.Managers) {
		return
	}
	st := n.state
	st.Managers = slices.Clone(addrs)
	if err := n.writeState(st); err != nil {
		n.logger().Warn("swarm: recording the managers' addresses", "err", err)
		return
	}
	n.state = st
}

// Managers returns the addresses of the managers this node knows: on a
// manager its own first, then the one it joined through and those the
// managers' answers named since (kept in Dir, so a restarted node knows
// them too). A worker fails over among them when the one it talks to goes
// away, without being told where the others are. Addresses are only
// added: a manager removed since stays listed (calls to it fail over to
// the next).
func (n *Node) Managers() []string {
	return n.managerAddrs()
}

func (n *Node) managerAddrs() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.managerAddrsLocked()
}

func (n *Node) managerAddrsLocked() []string {
	out := slices.Clone(n.state.Managers)
	if n.state.Advertise != "" && !slices.Contains(out, n.state.Advertise) {
		out = append([]string{n.state.Advertise}, out...)
	}
	return out
}

// renew asks a manager for a new certificate and puts it in place.
func (n *Node) renew(ctx context.Context) error {
	return renewCertificate(ctx, n.managersCaller(), n.Dir, n.certs, "", n.logger())
}

// Renew renews the node's certificate now.
func (n *Node) Renew(ctx context.Context) error {
	if n.certs == nil {
		return ErrNotStarted
	}
	return n.renew(ctx)
}

func (n *Node) readyChan() chan struct{} {
	n.readyMu.Do(func() { n.ready = make(chan struct{}) })
	return n.ready
}

// Ready is closed once the node's roles are ready: the manager has caught
// up with the cluster, the worker has its first assignments.
func (n *Node) Ready() <-chan struct{} { return n.readyChan() }

func (n *Node) becomeReady(ctx context.Context) {
	n.mu.Lock()
	m, w := n.mgr, n.worker
	n.mu.Unlock()
	if n.Executor == nil {
		w = nil // listed only: it runs nothing to be ready for
	}
	if m != nil {
		select {
		case <-m.Ready():
		case <-ctx.Done():
			return
		}
	}
	if w != nil {
		select {
		case <-w.Ready():
		case <-ctx.Done():
			return
		}
	}
	close(n.readyChan())
}

// ID is the node's ID ("" before Init, Join or Start).
func (n *Node) ID() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.state.ID
}

// Role is the node's role: manager or worker.
func (n *Node) Role() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.state.Role
}

// Addr is a manager's management address as advertised ("" on workers).
func (n *Node) Addr() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.state.Advertise
}

// Certificate is the node's current certificate (nil before it starts).
func (n *Node) Certificate() *x509.Certificate {
	n.mu.Lock()
	h := n.certs
	n.mu.Unlock()
	if h == nil {
		return nil
	}
	return h.leaf()
}

// Manager is the node's manager role (nil on a worker).
func (n *Node) Manager() *Manager {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mgr
}

// Worker is the node's worker role (nil without an Executor).
func (n *Node) Worker() *Worker {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.worker
}

// Client returns a client of the control API with this node's certificate
// (the control API is for managers: a worker's calls are refused).
func (n *Node) Client() *Client {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.client == nil && n.certs != nil {
		n.client = &Client{Addrs: func() []string {
			out := slices.Clone(n.state.Managers)
			if n.state.Advertise != "" {
				out = append([]string{n.state.Advertise}, slices.DeleteFunc(out, func(a string) bool { return a == n.state.Advertise })...)
			}
			return out
		}(), TLS: n.certs.clientConfig()}
	}
	return n.client
}

// stop stops whatever runs.
func (n *Node) stop() {
	n.mu.Lock()
	cancel, w, m, port := n.cancel, n.worker, n.mgr, n.port
	n.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	if w != nil {
		w.Close()
	}
	if m != nil {
		m.Close()
	}
	if port != nil {
		port.Close()
	}
	n.wg.Wait()
	if n.Network != nil && w != nil {
		n.Network.Close()
	}
}

// Shutdown stops the node gracefully: the worker sends what it has to
// report, a leading manager hands leadership over. Tasks keep running (a
// restarted node adopts them).
func (n *Node) Shutdown(ctx context.Context) error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return fmt.Errorf("swarm: node shutdown: %w", net.ErrClosed)
	}
	n.closed = true
	w, m := n.worker, n.mgr
	n.mu.Unlock()
	if w != nil {
		w.Shutdown(ctx)
	}
	if m != nil {
		m.Shutdown(ctx)
	}
	n.stop()
	return nil
}

// Close stops the node at once. A second Close returns an error wrapping
// net.ErrClosed.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return fmt.Errorf("swarm: node close: %w", net.ErrClosed)
	}
	n.closed = true
	n.mu.Unlock()
	n.stop()
	return nil
}

// Leave takes the node out of the cluster for good: it stops, and forgets
// its identity, certificates and state (its tasks stop too: it is no
// longer a node of the cluster). Its node object stays on the managers,
// down, until it is removed (docker node rm). A manager must be demoted
// first: leaving would take a vote from the cluster; force leaves anyway.
func (n *Node) Leave(ctx context.Context, force bool) error {
	n.mu.Lock()
	role, w := n.state.Role, n.worker
	n.mu.Unlock()
	if role == string(ca.RoleManager) && !force {
		return fmt.Errorf("%w: this node is a manager: demote it first (leaving would take a vote from the cluster), or force it", api.ErrInvalidSpec)
	}
	// The node stops first: a worker still running would report its
	// tasks' exits as their own ends (complete, not replaced under a
	// restart-on-failure policy). Stopped, the node is down to the
	// managers, who replace its tasks elsewhere.
	n.Close()
	if w != nil {
		// Its tasks go with it.
		if a, ok := n.Executor.(agent.Adopter); ok {
			if ids, err := a.Adopt(ctx); err == nil {
				for _, id := range ids {
					n.Executor.Shutdown(ctx, id, agent.DefaultStopGracePeriod)
					n.Executor.Remove(ctx, id)
				}
			}
		}
	}
	for _, p := range []string{nodeFile, ca.CertDirName, "manager"} {
		if err := os.RemoveAll(filepath.Join(n.Dir, p)); err != nil {
			return err
		}
	}
	return atomicfile.SyncDir(n.Dir)
}

// certHolder holds a node's current certificate, so that a renewal takes
// effect on every connection made after it.
type certHolder struct {
	cur atomic.Pointer[held]

	mu      sync.Mutex
	changed chan struct{} // closed and replaced by each set
}

// watch returns a channel closed at the next change of certificate.
func (h *certHolder) watch() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.changed == nil {
		h.changed = make(chan struct{})
	}
	return h.changed
}

type held struct {
	cert tls.Certificate
	root *ca.Root
	leaf *x509.Certificate
}

func (h *certHolder) set(cert tls.Certificate, root *ca.Root) {
	leaf := cert.Leaf
	if leaf == nil && len(cert.Certificate) > 0 {
		leaf, _ = x509.ParseCertificate(cert.Certificate[0])
	}
	h.cur.Store(&held{cert: cert, root: root, leaf: leaf})
	h.mu.Lock()
	if h.changed != nil {
		close(h.changed)
	}
	h.changed = make(chan struct{})
	h.mu.Unlock()
}

func (h *certHolder) leaf() *x509.Certificate { return h.cur.Load().leaf }
func (h *certHolder) rootCA() *ca.Root        { return h.cur.Load().root }

// serverConfig is the management port's mutual-TLS config, with the
// current certificate.
func (h *certHolder) serverConfig() *tls.Config {
	c := h.cur.Load()
	return ca.ServerConfig(c.cert, c.root)
}

func (h *certHolder) joinConfig() *tls.Config {
	c := h.cur.Load()
	return ca.JoinServerConfig(c.cert, c.root)
}

// clientConfig dials managers with whatever certificate is current at
// each handshake.
func (h *certHolder) clientConfig() *tls.Config {
	c := h.cur.Load()
	conf := ca.ClientConfig(c.cert, c.root, ca.RoleManager)
	conf.Certificates = nil
	conf.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		cur := h.cur.Load()
		return &cur.cert, nil
	}
	return conf
}
