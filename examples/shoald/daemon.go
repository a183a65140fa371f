package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shoalproject/shoal/agent/containerd"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/dockerapi"
	"github.com/shoalproject/shoal/swarm/netagent"
)

// shutdownGrace bounds a graceful shutdown; past it the node is closed.
const shutdownGrace = 30 * time.Second

// daemon is one running shoald: the node, its executor and network agent,
// and the Docker API and metrics servers.
type daemon struct {
	cfg      *config
	log      *slog.Logger
	out      io.Writer // what people read: join commands, the unlock key
	node     *swarm.Node
	executor *containerd.Executor
	network  *netagent.Agent
	lock     *os.File
	servers  []*http.Server
	// leave is closed when a client asked the node to leave (POST
	// /swarm/leave on the Docker API socket); leaveForce says how.
	leave      chan bool
	leaveErr   chan error
	leaveForce bool
}

// startFunc starts the node: Init, Join or Start.
type startFunc func(ctx context.Context, n *swarm.Node) error

// lockDir takes the data dir's lock, so that two shoalds never share one.
func lockDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	path := filepath.Join(dir, "shoald.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		pid, _ := os.ReadFile(path)
		f.Close()
		return nil, fmt.Errorf("data dir %s is in use by another shoald (pid %s): stop it first", dir, bytesTrim(pid))
	}
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return f, nil
}

func bytesTrim(b []byte) string {
	s := string(b)
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == ' ') {
		s = s[:len(s)-1]
	}
	if s == "" {
		return "unknown"
	}
	return s
}

// newNode makes the node and what it runs with, from the config.
func (d *daemon) newNode(ctx context.Context, autolock bool) error {
	c := d.cfg
	if c.Tasks {
		x := &containerd.Executor{Address: c.Containerd, Namespace: c.ContainerdNamespace, StateDir: filepath.Join(c.DataDir, "agent"),
			ImageDir: c.ImageDir, Logger: d.log.With("component", "executor")}
		if _, err := os.Stat(c.Containerd); err != nil {
			return fmt.Errorf("--containerd %s: %v (is containerd running? set --containerd to its socket, or --tasks=false for a manager that runs no tasks)", c.Containerd, err)
		}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := x.Connect(cctx)
		cancel()
		if err != nil {
			return fmt.Errorf("connecting to containerd at %s: %w", c.Containerd, err)
		}
		d.executor = x
		if c.DataPlane {
			if os.Geteuid() != 0 {
				return errors.New("the data plane (overlay networks, routing mesh) needs root: run shoald as root, or with --data-plane=false")
			}
			na := &netagent.Agent{VXLANPort: c.VXLANPort, Logger: d.log.With("component", "network")}
			if c.DataPathAddr != "" {
				a, err := netip.ParseAddr(c.DataPathAddr)
				if err != nil {
					return fmt.Errorf("--data-path-addr: %w", err)
				}
				na.DataAddr = a
			}
			d.network = na
		}
	}
	d.node = &swarm.Node{Dir: c.DataDir, ListenAddr: c.ListenAddr, AdvertiseAddr: c.AdvertiseAddr, HeartbeatPeriod: c.HeartbeatPeriod,
		AutoLock: autolock, UnlockWith: c.UnlockKey, Logger: d.log}
	d.node.Description.Hostname = c.Hostname // empty: the machine's
	if d.executor != nil {
		d.node.Executor = d.executor
	}
	if d.network != nil {
		d.node.Network = d.network
	}
	return nil
}

// run starts the node with start and serves until ctx ends (SIGINT,
// SIGTERM) or a client asks the node to leave.
func (d *daemon) run(ctx context.Context, start startFunc, announce func(ctx context.Context) error) (err error) {
	lock, err := lockDir(d.cfg.DataDir)
	if err != nil {
		return err
	}
	d.lock = lock
	defer lock.Close()
	if err := d.newNode(ctx, false); err != nil {
		return err
	}
	return d.serve(ctx, start, announce)
}

func (d *daemon) serve(ctx context.Context, start startFunc, announce func(ctx context.Context) error) error {
	defer func() {
		if d.executor != nil {
			d.executor.Close()
		}
	}()
	began := time.Now()
	if err := start(ctx, d.node); err != nil {
		return err
	}
	d.log.Info("shoald: node started", "node", d.node.ID(), "role", d.node.Role(), "addr", d.node.Addr(), "took", time.Since(began).Round(time.Millisecond))
	d.leave, d.leaveErr = make(chan bool, 1), make(chan error, 1)
	if err := d.startServers(); err != nil {
		d.node.Close()
		return err
	}
	ready := d.node.Ready()
	go func() {
		select {
		case <-ready:
			d.log.Info("shoald: node ready", "node", d.node.ID(), "role", d.node.Role(), "after", time.Since(began).Round(time.Millisecond))
			if announce != nil {
				if err := announce(ctx); err != nil {
					d.log.Warn("shoald: announcing the cluster", "err", err)
				}
			}
		case <-ctx.Done():
		}
	}()
	if m := d.node.Manager(); m != nil && m.Locked() {
		d.log.Warn("shoald: this manager is locked (autolock): unlock it with `shoald unlock`, or restart it with --unlock-key or " + unlockKeyEnv)
	}
	for {
		select {
		case <-ctx.Done():
			d.log.Info("shoald: shutting down (tasks keep running; `shoald leave` stops them)")
			d.stopServers()
			sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
			defer cancel()
			if err := d.node.Shutdown(sctx); err != nil {
				return err
			}
			d.log.Info("shoald: stopped")
			return nil
		case force := <-d.leave:
			d.log.Info("shoald: leaving the cluster", "force", force)
			err := d.node.Leave(context.Background(), force)
			if err == nil && d.network != nil {
				// The node is gone: so are its tasks' networks.
				err = removeNetState(d.cfg.DataDir)
			}
			d.leaveErr <- err
			if err != nil {
				d.log.Warn("shoald: leave refused", "err", err)
				continue // a manager without force: keep running
			}
			d.stopServers()
			d.log.Info("shoald: left the cluster")
			return nil
		}
	}
}

// startServers serves the Docker API on its socket and the metrics.
func (d *daemon) startServers() error {
	if path := d.cfg.dockerSocket(); path != "" {
		h, err := dockerapi.ForNode(d.node)
		if err != nil {
			return err
		}
		h.Logger = d.log.With("component", "dockerapi")
		ln, err := listenUnix(path)
		if err != nil {
			return fmt.Errorf("--docker-socket %s: %w", path, err)
		}
		d.serveOn(ln, d.withLeave(h))
		d.log.Info("shoald: Docker Engine API", "socket", path, "use", "DOCKER_HOST=unix://"+path)
	}
	if addr := d.cfg.MetricsAddr; addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			d.stopServers()
			return fmt.Errorf("--metrics-addr %s: %w", addr, err)
		}
		d.serveOn(ln, metricsHandler(d))
		d.log.Info("shoald: metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	}
	return nil
}

func (d *daemon) serveOn(ln net.Listener, h http.Handler) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	d.servers = append(d.servers, srv)
	go srv.Serve(ln)
}

func (d *daemon) stopServers() {
	for _, s := range d.servers {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		s.Shutdown(ctx)
		cancel()
	}
	d.servers = nil
}

// listenUnix listens on a unix socket, replacing a stale socket file (one
// that nothing answers on).
func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if _, err := os.Stat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, errors.New("another process serves on it")
		}
		os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	os.Chmod(path, 0o660)
	return ln, nil
}

var leavePath = regexp.MustCompile(`^(/v[0-9.]+)?/swarm/leave$`)

// withLeave serves POST /swarm/leave (docker swarm leave, shoald leave)
// itself: the node leaves and shoald exits; the rest goes to the Docker
// API handler.
func (d *daemon) withLeave(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || !leavePath.MatchString(r.URL.Path) {
			h.ServeHTTP(w, r)
			return
		}
		force := r.URL.Query().Get("force") == "1" || r.URL.Query().Get("force") == "true"
		select {
		case d.leave <- force:
		default:
			http.Error(w, `{"message":"a leave is in progress"}`, http.StatusConflict)
			return
		}
		if err := <-d.leaveErr; err != nil {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "{\"message\":%q}\n", err.Error())
			return
		}
		w.WriteHeader(http.StatusOK)
	})
}

// removeNetState removes the network agent's state of a node that left:
// its task namespaces (unmounted first) and records.
func removeNetState(dataDir string) error {
	dir := filepath.Join(dataDir, "net")
	unmountUnder(dir)
	return os.RemoveAll(dir)
}

// unmountUnder detaches every mount under dir (task namespaces' bind
// mounts), deepest first.
func unmountUnder(dir string) {
	raw, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 {
			p := strings.ReplaceAll(f[4], "\\040", " ")
			if p == dir || len(p) > len(dir) && p[:len(dir)+1] == dir+"/" {
				points = append(points, p)
			}
		}
	}
	for i := len(points) - 1; i >= 0; i-- {
		unix.Unmount(points[i], unix.MNT_DETACH)
	}
}
