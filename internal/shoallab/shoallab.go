// Package shoallab runs real shoald binaries on network-namespace test
// hosts (internal/nettest) with a private containerd (internal/containerdtest)
// and the test images (internal/testimages): the quickstart and the
// end-to-end tests drive a cluster with it. It needs root, iproute2,
// nftables, nsenter (util-linux), containerd and runc. Close removes
// everything it made: processes (by PID), containers, mounts, namespaces
// (with their links and nftables tables) and files.
package shoallab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/shoalproject/shoal/internal/containerdtest"
	"github.com/shoalproject/shoal/internal/nettest"
	"github.com/shoalproject/shoal/internal/testimages"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/ca"
)

// Options set up a lab.
type Options struct {
	// Shoald is the shoald binary; required.
	Shoald string
	// Hosts is how many hosts; 0 means 3.
	Hosts int
	// HeartbeatPeriod is passed to each shoald (0: shoald's default).
	HeartbeatPeriod time.Duration
	// LogLevel of each shoald; empty means info.
	LogLevel string
	// ShoaldArgs are more flags for each shoald (after the lab's own).
	ShoaldArgs []string
	// Logf, when set, receives progress lines.
	Logf func(format string, args ...any)
	// Dir, when set, is the lab's directory (made if missing; Close
	// removes it), and containerd's files go under it too: for a lab
	// meant to outlive this process (see State). Empty: a new temporary
	// directory.
	Dir string
	// NetnsPrefix, when set, names the hosts' namespaces PREFIX-hN (see
	// nettest.NewNamedLab): for a lab meant to outlive this process.
	NetnsPrefix string
}

// Lab is a set of hosts, each with its data dir and, while one runs, its
// shoald.
type Lab struct {
	Net        *nettest.Lab
	Containerd *containerdtest.Daemon
	// Dir holds the hosts' data dirs and logs, and the images.
	Dir      string
	ImageDir string
	Hosts    []*Host
	opts     Options

	mu     sync.Mutex
	closed bool
}

// Host is one test host.
type Host struct {
	*nettest.Host
	Index   int
	DataDir string
	// Hostname is the node's hostname (shoald --hostname): the hosts
	// share the machine's UTS namespace, so each gets its own name,
	// "host0", "host1" ..., for `docker node ls` and node.hostname
	// constraints. Empty means the machine's.
	Hostname string
	lab      *Lab

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	runs   int
}

// New makes a lab: test images, a private containerd, and the hosts. On
// failure it removes what it made.
func New(ctx context.Context, opts Options) (l *Lab, err error) {
	if opts.Hosts == 0 {
		opts.Hosts = 3
	}
	if opts.LogLevel == "" {
		opts.LogLevel = "info"
	}
	if _, err := os.Stat(opts.Shoald); err != nil {
		return nil, fmt.Errorf("shoallab: shoald binary: %w", err)
	}
	for _, bin := range []string{"ip", "nft", "nsenter", "containerd", "runc", "containerd-shim-runc-v2"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("shoallab: %s is missing (apt-get install iproute2 nftables util-linux containerd runc)", bin)
		}
	}
	dir := opts.Dir
	if dir == "" {
		dir, err = os.MkdirTemp("", "shoal-lab-")
	} else {
		err = os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		return nil, err
	}
	l = &Lab{Dir: dir, ImageDir: filepath.Join(dir, "images"), opts: opts}
	defer func() {
		if err != nil {
			l.Close()
			l = nil
		}
	}()
	if err := os.MkdirAll(l.ImageDir, 0o755); err != nil {
		return nil, err
	}
	l.logf("building the test images (a static Go HTTP server)")
	if _, err := testimages.Build(ctx, l.ImageDir); err != nil {
		return nil, err
	}
	if _, err := testimages.BuildWeb(ctx, l.ImageDir); err != nil {
		return nil, err
	}
	// The second version, so that a rolling update can be tried (as in
	// the Swarm tutorial's `docker service update --image`).
	if _, err := testimages.BuildWeb2(ctx, l.ImageDir); err != nil {
		return nil, err
	}
	l.logf("starting a private containerd")
	if opts.Dir != "" {
		l.Containerd, err = containerdtest.StartDaemonIn(filepath.Join(dir, "containerd"))
	} else {
		l.Containerd, err = containerdtest.StartDaemon()
	}
	if err != nil {
		return nil, err
	}
	l.logf("making %d network-namespace hosts", opts.Hosts)
	if opts.NetnsPrefix != "" {
		l.Net, err = nettest.NewNamedLab(opts.NetnsPrefix, opts.Hosts)
	} else {
		l.Net, err = nettest.NewLab(opts.Hosts)
	}
	if err != nil {
		return nil, err
	}
	for i, h := range l.Net.Hosts {
		l.Hosts = append(l.Hosts, &Host{Host: h, Index: i, DataDir: filepath.Join(dir, fmt.Sprintf("node%d", i)), Hostname: fmt.Sprintf("host%d", i), lab: l})
	}
	return l, nil
}

func (l *Lab) logf(format string, args ...any) {
	if l.opts.Logf != nil {
		l.opts.Logf(format, args...)
	}
}

// Args are the flags every shoald of the lab gets.
func (h *Host) Args() []string {
	l := h.lab
	args := []string{"--data-dir", h.DataDir, "--listen-addr", h.Addr.String() + ":2377",
		"--containerd", l.Containerd.Address, "--containerd-namespace", fmt.Sprintf("node%d", h.Index), "--image-dir", l.ImageDir,
		"--log-level", l.opts.LogLevel, "--metrics-addr", "127.0.0.1:9323"}
	if l.opts.HeartbeatPeriod > 0 {
		args = append(args, "--heartbeat-period", l.opts.HeartbeatPeriod.String())
	}
	if h.Hostname != "" {
		args = append(args, "--hostname", h.Hostname)
	}
	return append(args, l.opts.ShoaldArgs...)
}

// DockerSocket is the unix socket of the Docker Engine API the host's
// shoald serves (DOCKER_HOST=unix://PATH).
func (h *Host) DockerSocket() string { return filepath.Join(h.DataDir, "docker.sock") }

// LogPath is the file the host's shoald writes its output to.
func (h *Host) LogPath() string { return filepath.Join(h.lab.Dir, fmt.Sprintf("node%d.log", h.Index)) }

// Shoald starts `shoald VERB ARGS... FLAGS...` in the host's network
// namespace (nsenter: only the network namespace, so that the task
// namespaces it mounts are seen by containerd).
func (h *Host) Shoald(verb string, args ...string) error {
	return h.start(verb, append(append([]string{verb}, args...), h.Args()...))
}

// ArbiterArgs are the flags an arbiter of the lab gets with verb: the
// host's data dir, and for join its management address (run keeps the
// one it joined with); no containerd.
func (h *Host) ArbiterArgs(verb string) []string {
	args := []string{"--data-dir", h.DataDir, "--log-level", h.lab.opts.LogLevel, "--metrics-addr", "127.0.0.1:9323"}
	if verb == "join" {
		args = append(args, "--listen-addr", h.Addr.String()+":2377")
	}
	return args
}

// Arbiter starts `shoald arbiter VERB ARGS... FLAGS...` (join or run) on
// the host, as Shoald starts a node.
func (h *Host) Arbiter(verb string, args ...string) error {
	return h.start("arbiter "+verb, append(append([]string{"arbiter", verb}, args...), h.ArbiterArgs(verb)...))
}

// ArbiterID is the ID of the host's arbiter, from its data dir.
func (h *Host) ArbiterID() string { return idIn(filepath.Join(h.DataDir, "arbiter.json")) }

func (h *Host) start(what string, args []string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cmd != nil {
		select {
		case <-h.exited:
		default:
			return fmt.Errorf("shoallab: host %d runs a shoald already", h.Index)
		}
	}
	logf, err := os.OpenFile(h.LogPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	h.runs++
	fmt.Fprintf(logf, "=== shoald %s (run %d)\n", what, h.runs)
	full := append([]string{"--net=/var/run/netns/" + h.Name, h.lab.opts.Shoald}, args...)
	cmd := exec.Command("nsenter", full...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(exited) }()
	h.cmd, h.exited = cmd, exited
	return nil
}

// Running reports whether the host's shoald runs.
func (h *Host) Running() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cmd == nil {
		return false
	}
	select {
	case <-h.exited:
		return false
	default:
		return true
	}
}

// Stop stops the host's shoald with sig and waits for it to exit (up to
// 30 s, then it is killed).
func (h *Host) Stop(sig syscall.Signal) error {
	h.mu.Lock()
	cmd, exited := h.cmd, h.exited
	h.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-exited:
		return nil
	default:
	}
	cmd.Process.Signal(sig)
	select {
	case <-exited:
		return nil
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-exited
		return fmt.Errorf("shoallab: shoald on host %d did not stop on %v: killed", h.Index, sig)
	}
}

// PID is the host's shoald's PID (0 when none runs).
func (h *Host) PID() int {
	if !h.Running() {
		return 0
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cmd.Process.Pid
}

// NodeID is the ID of the host's node, from its data dir.
func (h *Host) NodeID() string { return idIn(filepath.Join(h.DataDir, "node.json")) }

// idIn is the ID recorded in a node's or an arbiter's state file.
func idIn(path string) string {
	raw, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var st struct{ ID string }
	json.Unmarshal(raw, &st)
	return st.ID
}

// Dial dials from inside the host's network namespace.
func (h *Host) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := h.Do(func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// HTTPClient sends requests from the host, a new connection each (so
// that each is balanced afresh).
func (h *Host) HTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: h.Dial, DisableKeepAlives: true}}
}

// Client is a client of the control API with the host's node certificate
// (a manager's), dialling from the host.
func (h *Host) Client() (*swarm.Client, error) {
	cert, root, err := (ca.Files{Dir: h.DataDir}).Load()
	if err != nil {
		return nil, err
	}
	return &swarm.Client{Addrs: []string{h.Addr.String() + ":2377"}, TLS: ca.ClientConfig(cert, root, ca.RoleManager), Dial: h.Dial}, nil
}

// Init starts `shoald init` on h and waits until its manager answers and
// its node is ready.
func (l *Lab) Init(ctx context.Context, h *Host, args ...string) (*swarm.Client, error) {
	if err := h.Shoald("init", args...); err != nil {
		return nil, err
	}
	var c *swarm.Client
	err := l.waitFor(ctx, h, "the first manager to answer", func() bool {
		if c == nil {
			c, _ = h.Client()
			if c == nil {
				return false
			}
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := c.Cluster(cctx)
		return err == nil
	})
	if err != nil {
		return nil, err
	}
	// Its own worker too, when it runs tasks.
	return c, l.WaitReady(ctx, c, h)
}

// Join starts `shoald join` on h with the token, through the manager at
// addr, and waits until the managers see the node ready.
func (l *Lab) Join(ctx context.Context, c *swarm.Client, h *Host, token, addr string, args ...string) error {
	if err := h.Shoald("join", append([]string{"--token", token, addr}, args...)...); err != nil {
		return err
	}
	return l.WaitReady(ctx, c, h)
}

// WaitReady waits until the managers see h's node ready.
func (l *Lab) WaitReady(ctx context.Context, c *swarm.Client, h *Host) error {
	return l.waitFor(ctx, h, "the node to be ready", func() bool {
		id := h.NodeID()
		if id == "" {
			return false
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		n, err := c.Node(cctx, id)
		return err == nil && n.Status.State == api.NodeReady
	})
}

// Run starts `shoald run` on h (a restart from its data dir).
func (l *Lab) Run(h *Host, args ...string) error { return h.Shoald("run", args...) }

// waitFor polls cond until it holds, the host's shoald exits (an error
// with its log's tail) or a minute passes.
func (l *Lab) waitFor(ctx context.Context, h *Host, what string, cond func() bool) error {
	deadline := time.Now().Add(time.Minute)
	for {
		if cond() {
			return nil
		}
		if !h.Running() {
			return fmt.Errorf("shoallab: waiting for %s on host %d: shoald exited:\n%s", what, h.Index, h.LogTail(20))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("shoallab: waiting for %s on host %d: timed out:\n%s", what, h.Index, h.LogTail(20))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// LogTail is the last n lines of the host's shoald output.
func (h *Host) LogTail(n int) string {
	b, _ := os.ReadFile(h.LogPath())
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Close stops every shoald (SIGTERM, then SIGKILL), removes the
// containers and stops containerd, unmounts and removes the lab's files
// and deletes the namespaces. It can be called more than once.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	var errs []error
	var wg sync.WaitGroup
	for _, h := range l.Hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.mu.Lock()
			cmd, exited := h.cmd, h.exited
			h.mu.Unlock()
			if cmd == nil {
				return
			}
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				<-exited
			}
		}()
	}
	wg.Wait()
	if l.Containerd != nil {
		errs = append(errs, l.Containerd.Stop())
	}
	if l.Dir != "" {
		UnmountUnder(l.Dir)
		errs = append(errs, os.RemoveAll(l.Dir))
	}
	if l.Net != nil {
		errs = append(errs, l.Net.Close())
	}
	return errors.Join(errs...)
}

// UnmountUnder detaches every mount under dir (the task namespaces' bind
// mounts), deepest first.
func UnmountUnder(dir string) {
	points := mountsUnder(dir)
	for i := len(points) - 1; i >= 0; i-- {
		syscall.Unmount(points[i], syscall.MNT_DETACH)
	}
}

// mountsUnder lists the mount points at or under dir, in mount order.
func mountsUnder(dir string) []string {
	raw, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var points []string
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 {
			p := strings.ReplaceAll(f[4], "\\040", " ")
			if p == dir || strings.HasPrefix(p, dir+"/") {
				points = append(points, p)
			}
		}
	}
	return points
}
