package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v4"
)

// config is what a shoald runs with: flags, or the same names as keys of a
// YAML or JSON config file (flags given on the command line win).
type config struct {
	File                string
	DataDir             string
	ListenAddr          string
	AdvertiseAddr       string
	DataPathAddr        string
	VXLANPort           int
	Containerd          string
	ContainerdNamespace string
	ImageDir            string
	Tasks               bool
	DataPlane           bool
	LogLevel            string
	LogFormat           string
	DockerSocket        string
	MetricsAddr         string
	HeartbeatPeriod     time.Duration
	UnlockKey           string
	Fence               fenceFlags // two-node mode (fence.go)
	Hostname            string
}

// Defaults of the flags.
const (
	defaultDataDir    = "/var/lib/shoal"
	defaultListenAddr = "0.0.0.0:2377"
	defaultContainerd = "/run/containerd/containerd.sock"
	defaultNamespace  = "shoal"
)

// unlockKeyEnv holds the unlock key of an autolocked manager, for `run`.
const unlockKeyEnv = "SHOALD_UNLOCK_KEY"

// addFlags declares the daemon's flags on fs.
func (c *config) addFlags(fs *pflag.FlagSet) {
	fs.StringVarP(&c.File, "config", "c", "", "config file (YAML or JSON) with the flags' names as keys; flags given here win")
	fs.StringVarP(&c.DataDir, "data-dir", "d", defaultDataDir, "the node's identity, certificates, Raft data and task state")
	fs.StringVar(&c.ListenAddr, "listen-addr", defaultListenAddr, "a manager's management port (host:port, or :port); a restarted manager keeps the one it first had")
	fs.StringVar(&c.AdvertiseAddr, "advertise-addr", "", "how other nodes reach this manager (host or host:port); default: the listen address's host")
	fs.StringVar(&c.DataPathAddr, "data-path-addr", "", "this node's address for overlay (VXLAN) traffic; default: the local address towards the managers")
	fs.IntVar(&c.VXLANPort, "vxlan-port", 4789, "UDP port of the overlay networks (VXLAN), the same on every node")
	fs.StringVar(&c.Containerd, "containerd", defaultContainerd, "containerd's socket")
	fs.StringVar(&c.ContainerdNamespace, "containerd-namespace", defaultNamespace, "containerd namespace of this node's containers")
	fs.StringVar(&c.ImageDir, "image-dir", "", "directory of image tarballs (docker save or OCI layout) used when an image is not in containerd")
	fs.BoolVar(&c.Tasks, "tasks", true, "run tasks on this node (false: a manager that only manages)")
	fs.BoolVar(&c.DataPlane, "data-plane", true, "overlay networks and DNS for this node's tasks, and the routing mesh (published ports answer here, with --tasks=false too); needs root")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "text", "text or json")
	fs.StringVar(&c.DockerSocket, "docker-socket", "", "unix socket serving the Docker Engine API's swarm subset (DOCKER_HOST=unix://PATH); default DATA_DIR/docker.sock, \"none\" for none")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", "", "host:port serving Prometheus metrics on /metrics; empty for none")
	fs.DurationVar(&c.HeartbeatPeriod, "heartbeat-period", 0, "managers' base heartbeat period (0: the SDK's default)")
	c.Fence.addFlags(fs)
	fs.StringVar(&c.Hostname, "hostname", "", "the node's hostname as `docker node ls` shows it and constraints (node.hostname) match; default: the machine's")
}

// load reads the config file, when one is named, into the flags not given
// on the command line, and checks the result.
func (c *config) load(fs *pflag.FlagSet) error {
	if err := loadFile(fs, c.File); err != nil {
		return err
	}
	if c.UnlockKey == "" {
		c.UnlockKey = os.Getenv(unlockKeyEnv)
	}
	// Read once, then gone from the environment: commands this daemon
	// runs (a fence command) must not inherit the key.
	os.Unsetenv(unlockKeyEnv)
	return c.check()
}

// loadFile reads a config file (YAML or JSON; none when path is empty)
// into the flags of fs not given on the command line. A key is a flag's
// name; a list sets a repeatable flag once per item.
func loadFile(fs *pflag.FlagSet, path string) error {
	if path == "" {
		return nil
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(raw, &m); err != nil {
		return fmt.Errorf("config file %s: %v", path, err)
	}
	for _, k := range sortedKeys(m) {
		f := fs.Lookup(k)
		if f == nil || k == "config" || k == "help" {
			return fmt.Errorf("config file %s: unknown key %q (keys are the flags' names: %s)", path, k, strings.Join(flagNames(fs), ", "))
		}
		if f.Changed || m[k] == nil {
			continue
		}
		vals, isList := m[k].([]any)
		if !isList {
			vals = []any{m[k]}
		} else if _, repeatable := f.Value.(pflag.SliceValue); !repeatable {
			return fmt.Errorf("config file %s: %s: one value, not a list", path, k)
		}
		for _, v := range vals {
			if err := f.Value.Set(fmt.Sprint(v)); err != nil {
				return fmt.Errorf("config file %s: %s: %v", path, k, err)
			}
		}
	}
	return nil
}

func sortedKeys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func flagNames(fs *pflag.FlagSet) []string {
	var out []string
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Name != "config" && f.Name != "help" {
			out = append(out, f.Name)
		}
	})
	return out
}

// check refuses what cannot work, with the flag's name.
func (c *config) check() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data-dir: required"))
	}
	errs = append(errs, checkAddrs(c.ListenAddr, c.AdvertiseAddr)...)
	if a := c.DataPathAddr; a != "" && net.ParseIP(a) == nil {
		errs = append(errs, fmt.Errorf("--data-path-addr %q: want an IP address", a))
	}
	if c.VXLANPort <= 0 || c.VXLANPort > 65535 {
		errs = append(errs, fmt.Errorf("--vxlan-port %d: want 1-65535", c.VXLANPort))
	}
	errs = append(errs, checkLogAndMetrics(c.LogLevel, c.LogFormat, c.MetricsAddr)...)
	if h := c.Hostname; h != "" && !validHostname(h) {
		errs = append(errs, fmt.Errorf("--hostname %q: want letters, digits, '-' and '.', at most 253 characters", h))
	}
	if c.HeartbeatPeriod < 0 {
		errs = append(errs, fmt.Errorf("--heartbeat-period %v: must not be negative", c.HeartbeatPeriod))
	}
	if c.Tasks && c.ContainerdNamespace == "" {
		errs = append(errs, errors.New("--containerd-namespace: required to run tasks"))
	}
	return errors.Join(errs...)
}

// checkAddrs checks --listen-addr and --advertise-addr.
func checkAddrs(listen, advertise string) []error {
	var errs []error
	if _, port, err := net.SplitHostPort(listen); err != nil {
		errs = append(errs, fmt.Errorf("--listen-addr %q: want host:port or :port", listen))
	} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		errs = append(errs, fmt.Errorf("--listen-addr %q: bad port", listen))
	}
	if a := advertise; a != "" {
		host := a
		if h, p, err := net.SplitHostPort(a); err == nil {
			host = h
			if n, err := strconv.Atoi(p); err != nil || n <= 0 || n > 65535 {
				errs = append(errs, fmt.Errorf("--advertise-addr %q: bad port", a))
			}
		}
		if host == "" || strings.ContainsAny(host, " /") {
			errs = append(errs, fmt.Errorf("--advertise-addr %q: want a host or host:port", a))
		}
	}
	return errs
}

// checkLogAndMetrics checks --log-level, --log-format and --metrics-addr.
func checkLogAndMetrics(level, format, metrics string) []error {
	var errs []error
	if _, err := parseLevel(level); err != nil {
		errs = append(errs, err)
	}
	if format != "text" && format != "json" {
		errs = append(errs, fmt.Errorf("--log-format %q: want text or json", format))
	}
	if a := metrics; a != "" {
		if _, _, err := net.SplitHostPort(a); err != nil {
			errs = append(errs, fmt.Errorf("--metrics-addr %q: want host:port", a))
		}
	}
	return errs
}

// validHostname reports whether h is a DNS name: dot-separated labels of
// letters, digits and '-', not starting or ending with '-'.
func validHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// dockerSocket is the Docker API socket's path ("" for none).
func (c *config) dockerSocket() string {
	switch c.DockerSocket {
	case "none":
		return ""
	case "":
		return filepath.Join(c.DataDir, "docker.sock")
	}
	return c.DockerSocket
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

func (c *config) logger(w io.Writer) *slog.Logger { return newLogger(w, c.LogLevel, c.LogFormat) }

// newLogger logs to w at level (checked) in format (text or json).
func newLogger(w io.Writer, level, format string) *slog.Logger {
	l, _ := parseLevel(level)
	opts := &slog.HandlerOptions{Level: l}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
