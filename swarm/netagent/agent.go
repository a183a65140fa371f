package netagent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoalproject/shoal/netmesh"
)

// Errors of the agent. Bad view data is not one of them: it is logged and
// skipped, and the rest of the view applied.
var (
	ErrNotStarted     = errors.New("netagent: not started")
	ErrConfig         = errors.New("netagent: bad configuration")
	ErrUnknownNetwork = errors.New("netagent: network not in the network view")
	ErrBadTask        = errors.New("netagent: bad task")
)

// DefaultResolvConf is what a task's resolv.conf says: the agent's DNS
// server in the task's namespace, and names with dots tried as they are
// first (ndots:0), as Docker writes it for swarm tasks.
const DefaultResolvConf = "nameserver 127.0.0.11\noptions ndots:0\n"

// DNSAddr is where each task's DNS server listens, in the task's namespace.
const DNSAddr = "127.0.0.11:53"

// Agent is a node's network agent: it turns the managers' view of the
// cluster's networks (api.NetworkView) into the node's overlay devices,
// gateway network, routing mesh, node firewall and WireGuard peers, and
// gives each task a network namespace of its own with its links, a DNS
// server at 127.0.0.11 and VIP load balancing.
//
// Lifecycle: Start, then Apply on every change of the view, TaskNetwork for
// each task before it starts (the containerd executor's Network hook) and
// ReleaseTask when it is removed, Prune once the worker knows its tasks
// after a restart; Close when the agent ends. Devices and task namespaces
// outlive the agent (containers do); a new Agent on the same StateDir picks
// them up.
//
// All methods are safe for concurrent use; they are serialized, except
// that TaskNetwork wires several tasks at once (TaskWiring).
type Agent struct {
	// NodeID is this node's ID, as in the view's nodes and task
	// endpoints; required.
	NodeID string
	// DataAddr is this node's underlay address (the VXLAN and WireGuard
	// source); required.
	DataAddr netip.Addr
	// NetNS is the path of the node's network namespace; empty means the
	// calling process's.
	NetNS string
	// StateDir holds the task namespaces' bind mounts, their resolv.conf
	// files, the tasks' records (their gateway addresses) and the
	// WireGuard key; required. Several simulated nodes on one machine
	// need one each.
	StateDir string
	// Upstreams are the DNS servers ("host:port" or "host") names that are
	// not the cluster's are forwarded to; nil means the nameservers of the
	// node's /etc/resolv.conf, less loopback ones (127.0.0.0/8: they would
	// not be the node's from a task). Queries are forwarded from the
	// agent's own network namespace.
	Upstreams []string
	// WireGuard chooses the WireGuard backend of encrypted networks:
	// netmesh.WireGuardKernel, netmesh.WireGuardUserspace, or empty for the
	// kernel module where there is one.
	WireGuard string
	// GatewaySubnet is the gateway network's subnet; zero means
	// netmesh.DefaultGatewaySubnet (172.18.0.0/16).
	GatewaySubnet netip.Prefix
	// VXLANPort is the overlay's UDP port; zero means 4789.
	VXLANPort int
	// KeyRotation is how often the node's WireGuard key is replaced; zero
	// means netmesh.DefaultKeyRotation (12 h), negative never.
	KeyRotation time.Duration
	// OnKeyChange is called after a rotation with the new public key, so
	// the node tells the managers (api.NodeDescription.WireGuardKey). It is
	// called from the rotation goroutine or RotateKey's caller, one call
	// at a time. Set it before Start.
	OnKeyChange func(publicKey string)
	// TaskWiring bounds how many tasks TaskNetwork wires at once; zero
	// means DefaultTaskWiring.
	TaskWiring int
	// Logger receives the agent's logs; nil discards.
	Logger *slog.Logger

	// slots holds a token per task being wired (TaskWiring of them).
	slots      chan struct{}
	slotsOnce  sync.Once
	wiringNow  atomic.Int64
	wiringPeak atomic.Int64

	mu       sync.Mutex
	rotating sync.Mutex // serializes RotateKey
	started  bool
	closed   bool
	ready    chan struct{}
	stop     chan struct{}
	loops    sync.WaitGroup
	overlay  *netmesh.Overlay
	gateway  *netmesh.Gateway
	mesh     *netmesh.RoutingMesh
	// meshStarted is set once the routing mesh's table is installed.
	meshStarted bool
	fw          *netmesh.NodeFirewall
	registry    *netmesh.Registry
	ups         []string
	wgKey       netmesh.WireGuardKey

	// tasks are the tasks this node has state for: on disk (records,
	// namespaces) and, once TaskNetwork ran in this process, live.
	tasks    map[string]*taskState
	gwUsed   map[netip.Addr]string
	gwCursor uint32

	// view is the last view applied, compiled; applied what the kernel
	// holds from it.
	view    *compiled
	applied applied
	// pruned is set once stale devices were removed (the first Apply).
	pruned bool
	// stats counts what Apply did.
	stats Stats
	// pubKey is the WireGuard public key, read without the lock: the
	// worker asks for it with each heartbeat, which must not wait for a
	// task being wired.
	pubKey atomic.Pointer[string]
}

// Stats are the agent's figures, for metrics.
type Stats struct {
	// Applies counts the views applied, ApplyErrors those that failed in
	// part.
	Applies, ApplyErrors uint64
	// MeshRuleChanges counts the routing mesh's published ports set or
	// removed (each a change of the node's nftables rules).
	MeshRuleChanges uint64
	// PublishedPorts, Networks and Tasks are what the node has now: ports
	// in the routing mesh, overlay networks, tasks with a namespace.
	PublishedPorts, Networks, Tasks int
	// WiringPeak is the most tasks TaskNetwork wired at once (at most
	// TaskWiring).
	WiringPeak int
}

// Stats returns the agent's figures.
func (a *Agent) Stats() Stats {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.stats
	s.PublishedPorts, s.Networks, s.Tasks = len(a.applied.ports), len(a.applied.networks), len(a.tasks)
	s.WiringPeak = int(a.wiringPeak.Load())
	return s
}

// applied is what the agent set in the kernel and the registry, to change
// only what changes.
type applied struct {
	networks  map[string]netmesh.OverlayNetwork
	endpoints map[string][]netmesh.RemoteEndpoint
	nodeAddrs map[string]netip.Addr
	peerKeys  map[netip.Addr]netmesh.WireGuardKey
	peers     []netip.Addr
	peerPorts []netmesh.NodePort
	services  map[string]netmesh.ServiceEndpoint
	ports     map[portKey]netmesh.PublishedPort
}

func (a *Agent) logger() *slog.Logger {
	if a.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.Logger
}

// Ready is closed once Start has succeeded.
func (a *Agent) Ready() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ready == nil {
		a.ready = make(chan struct{})
	}
	return a.ready
}

func (a *Agent) validate() error {
	switch {
	case a.NodeID == "":
		return fmt.Errorf("%w: NodeID is required", ErrConfig)
	case !a.DataAddr.Is4():
		return fmt.Errorf("%w: DataAddr %v must be an IPv4 address", ErrConfig, a.DataAddr)
	case a.StateDir == "":
		return fmt.Errorf("%w: StateDir is required", ErrConfig)
	case a.GatewaySubnet.IsValid() && (!a.GatewaySubnet.Addr().Is4() || a.GatewaySubnet.Bits() > 30):
		return fmt.Errorf("%w: GatewaySubnet %s: want an IPv4 subnet of /30 or larger", ErrConfig, a.GatewaySubnet)
	case a.VXLANPort < 0 || a.VXLANPort > 65535:
		return fmt.Errorf("%w: VXLANPort %d", ErrConfig, a.VXLANPort)
	}
	return nil
}

// Start sets up the node's side: the overlay (with the node's WireGuard
// key, kept in StateDir) and the gateway network (the routing mesh and the
// node firewall come with the first Apply, which knows the ports and the
// peers), and reads what an earlier agent left in StateDir (its
// tasks' namespaces and records). Stale network devices are removed at the
// first Apply, when the wanted networks are known; stale task namespaces by
// Prune. Start is idempotent; after a failure, what it made is released.
func (a *Agent) Start(ctx context.Context) (err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return fmt.Errorf("netagent: %w", net.ErrClosed)
	}
	if a.started {
		return nil
	}
	if err := a.validate(); err != nil {
		return err
	}
	for _, d := range []string{a.StateDir, a.dir(netnsDir), a.dir(resolvDir), a.dir(tasksDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("netagent: state directory: %w", err)
		}
	}
	key, err := a.loadKey()
	if err != nil {
		return err
	}
	a.wgKey = key
	ups, err := a.upstreams()
	if err != nil {
		return err
	}
	a.ups = ups
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	a.overlay = &netmesh.Overlay{NetNS: a.NetNS, LocalAddr: a.DataAddr, Port: a.VXLANPort, WireGuard: a.WireGuard, WireGuardKey: key, Logger: a.Logger}
	if err := a.overlay.Start(); err != nil {
		return fmt.Errorf("netagent: overlay: %w", err)
	}
	undo = append(undo, func() { a.overlay.Close() })
	a.gateway = &netmesh.Gateway{NetNS: a.NetNS, Subnet: a.GatewaySubnet, Logger: a.Logger}
	if err := a.gateway.Start(ctx); err != nil {
		return fmt.Errorf("netagent: gateway: %w", err)
	}
	undo = append(undo, func() { a.gateway.Close() })
	// The routing mesh and the node firewall are installed by the first
	// Apply, which knows the ports and the peers: until then, the tables
	// an earlier agent left (after a crash) keep publishing its ports and
	// letting its peers' VXLAN in, so running tasks are not cut off by the
	// restart.
	a.mesh = &netmesh.RoutingMesh{NetNS: a.NetNS, Logger: a.Logger}
	a.meshStarted = false
	a.fw = nil
	a.registry = &netmesh.Registry{}
	a.applied = applied{networks: map[string]netmesh.OverlayNetwork{}, endpoints: map[string][]netmesh.RemoteEndpoint{},
		nodeAddrs: map[string]netip.Addr{}, services: map[string]netmesh.ServiceEndpoint{}, ports: map[portKey]netmesh.PublishedPort{}}
	if err := a.loadTasks(); err != nil {
		return err
	}
	a.view = compile(nil, a.NodeID, a.logger())
	a.stop = make(chan struct{})
	if period := a.rotation(); period > 0 {
		a.loops.Add(1)
		go a.rotateLoop(period)
	}
	a.started = true
	pub := a.overlay.PublicKey().String()
	a.pubKey.Store(&pub)
	if a.ready == nil {
		a.ready = make(chan struct{})
	}
	close(a.ready)
	a.logger().Info("netagent started", "node", a.NodeID, "data_addr", a.DataAddr, "wireguard", a.overlay.WireGuardBackend(),
		"tasks_on_disk", len(a.tasks), "upstreams", a.ups)
	return nil
}

func (a *Agent) rotation() time.Duration {
	switch {
	case a.KeyRotation == 0:
		return netmesh.DefaultKeyRotation
	case a.KeyRotation < 0:
		return 0
	}
	return a.KeyRotation
}

func (a *Agent) newFirewall(ports []netmesh.NodePort) *netmesh.NodeFirewall {
	return &netmesh.NodeFirewall{NetNS: a.NetNS, VXLANPort: uint16(a.VXLANPort), PeerPorts: ports, Logger: a.Logger}
}

// PublicKey is the node's WireGuard public key (base64), for
// api.NodeDescription.WireGuardKey; empty before Start.
func (a *Agent) PublicKey() string {
	if p := a.pubKey.Load(); p != nil {
		return *p
	}
	return ""
}

// Close stops the agent: the tasks' DNS servers and load balancers, the
// key rotation, and the agent's handles on the node. Network devices, task
// namespaces and the node firewall stay for the next agent (containers
// outlive the agent); published ports stop answering until the next
// agent's first Apply, and encrypted networks on userspace WireGuard until
// its Start. A second Close returns an error wrapping net.ErrClosed.
func (a *Agent) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return fmt.Errorf("netagent: %w", net.ErrClosed)
	}
	a.closed = true
	if !a.started {
		a.mu.Unlock()
		return nil
	}
	close(a.stop)
	var errs []error
	for _, ts := range a.tasks {
		errs = append(errs, ts.stopLive())
	}
	if a.meshStarted {
		errs = append(errs, a.mesh.Close())
	}
	errs = append(errs, a.gateway.Close(), a.overlay.Close())
	a.mu.Unlock()
	a.loops.Wait()
	return errors.Join(errs...)
}

// Subdirectories of StateDir.
const (
	netnsDir  = "netns"
	resolvDir = "resolv"
	tasksDir  = "tasks"
	keyFile   = "wireguard.key"
)

func (a *Agent) dir(name string) string { return filepath.Join(a.StateDir, name) }

// loadKey reads the node's WireGuard private key from StateDir, or makes
// and writes one: a restarted agent keeps the key the other nodes know.
func (a *Agent) loadKey() (netmesh.WireGuardKey, error) {
	path := filepath.Join(a.StateDir, keyFile)
	b, err := os.ReadFile(path)
	if err == nil {
		var k netmesh.WireGuardKey
		if err := k.UnmarshalText(bytes.TrimSpace(b)); err != nil || k.IsZero() {
			return k, fmt.Errorf("netagent: WireGuard key in %s is damaged (remove it to make a new one)", path)
		}
		return k, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return netmesh.WireGuardKey{}, fmt.Errorf("netagent: WireGuard key: %w", err)
	}
	k, err := netmesh.GenerateWireGuardKey()
	if err != nil {
		return k, err
	}
	return k, a.saveKey(k)
}

func (a *Agent) saveKey(k netmesh.WireGuardKey) error {
	text, _ := k.MarshalText()
	if err := writeFileAtomic(filepath.Join(a.StateDir, keyFile), append(text, '\n'), 0o600); err != nil {
		return fmt.Errorf("netagent: save the WireGuard key: %w", err)
	}
	return nil
}

// rotateLoop replaces the WireGuard key every period.
func (a *Agent) rotateLoop(period time.Duration) {
	defer a.loops.Done()
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-t.C:
		}
		if _, err := a.RotateKey(); err != nil {
			a.logger().Error("netagent: WireGuard key rotation", "err", err)
		}
	}
}

// RotateKey replaces the node's WireGuard key now (the schedule,
// KeyRotation, does it on its own), then calls OnKeyChange with the new
// public key. It returns the new public key.
func (a *Agent) RotateKey() (string, error) {
	a.rotating.Lock() // one rotation and one OnKeyChange call at a time
	defer a.rotating.Unlock()
	a.mu.Lock()
	started := a.started
	a.mu.Unlock()
	if !started {
		return "", ErrNotStarted
	}
	pub, err := a.rotateKey()
	if err != nil {
		return "", err
	}
	a.logger().Info("netagent: WireGuard key rotated", "public_key", pub)
	if a.OnKeyChange != nil {
		a.OnKeyChange(pub)
	}
	return pub, nil
}

// rotateKey makes a new key, keeps it on disk, then gives it to the
// overlay. A crash in between leaves the new key on disk, which the next
// agent uses and the worker reports.
func (a *Agent) rotateKey() (string, error) {
	k, err := netmesh.GenerateWireGuardKey()
	if err != nil {
		return "", err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return "", fmt.Errorf("netagent: %w", net.ErrClosed)
	}
	if err := a.saveKey(k); err != nil {
		return "", err
	}
	a.wgKey = k
	pub, err := a.overlay.SetKey(k)
	cur := a.overlay.PublicKey().String()
	a.pubKey.Store(&cur)
	return pub.String(), err
}

// upstreams are the DNS forwarders: Upstreams, or the node's resolv.conf.
func (a *Agent) upstreams() ([]string, error) {
	list := a.Upstreams
	if list == nil {
		b, err := os.ReadFile("/etc/resolv.conf")
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("netagent: read /etc/resolv.conf: %w", err)
		}
		list = nameservers(b)
	}
	var out []string
	for _, u := range list {
		if u == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(u); err != nil {
			u = net.JoinHostPort(u, "53")
		}
		out = append(out, u)
	}
	return out, nil
}

// nameservers lists a resolv.conf's nameservers, less loopback ones.
func nameservers(conf []byte) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(conf))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		ad, err := netip.ParseAddr(f[1])
		if err != nil || ad.Unmap().IsLoopback() {
			continue
		}
		out = append(out, ad.Unmap().String())
	}
	return out
}

// writeFileAtomic writes a file through a temporary one, synced, renamed
// over the old, with the directory synced.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	fail := func(err error) error { f.Close(); os.Remove(tmp); return err }
	if err := f.Chmod(perm); err != nil {
		return fail(err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
