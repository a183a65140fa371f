// Package nettest makes test hosts out of network namespaces: each host has
// a veth link ("eth0") into a bridge in a "wire" namespace and an address in
// 192.0.2.0/24 (TEST-NET-1), reachable only between the hosts of the lab.
// Hosts can run commands and Go code inside their namespace, and be
// partitioned and healed. Everything the lab makes is removed when it is
// closed, and labs left by test processes that died are removed by the next
// one. It needs root and iproute2 (and nftables for partitions).
package nettest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/vishvananda/netns"
)

// Lab is a set of test hosts on one wire.
type Lab struct {
	// Wire is the namespace holding the bridge.
	Wire  string
	Hosts []*Host

	prefix string
	mu     sync.Mutex
	procs  []*exec.Cmd
	extra  []string
}

// Host is one test host.
type Host struct {
	// Name is the host's network namespace (usable with `ip netns exec`).
	Name string
	// Addr is the host's address on eth0.
	Addr netip.Addr
	lab  *Lab
	peer string // its link's name in the wire namespace
}

// namePrefix starts every namespace a lab makes, followed by the creating
// process's PID, so stale labs of dead processes can be told apart.
const namePrefix = "stl"

// New makes a lab of n hosts for t, or skips t when it cannot run here.
func New(t testing.TB, n int) *Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespace tests need root (CI runs them as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("network namespace tests need iproute2: apt-get install iproute2 (scripts/test.sh does)")
	}
	l, err := NewLab(n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Logf("nettest: %v", err)
		}
	})
	return l
}

var labSeq struct {
	sync.Mutex
	n int
}

// NewLab makes a lab of n hosts (at most 200); Close it.
func NewLab(n int) (*Lab, error) {
	if n < 1 || n > 200 {
		return nil, fmt.Errorf("nettest: %d hosts: want 1 to 200", n)
	}
	cleanStale()
	labSeq.Lock()
	labSeq.n++
	seq := labSeq.n
	labSeq.Unlock()
	return newLab(fmt.Sprintf("%s%d-%d", namePrefix, os.Getpid(), seq), n)
}

// NewNamedLab makes a lab of n hosts whose namespaces are named
// PREFIX-wire and PREFIX-hN, meant to outlive the process that made it (a
// cluster left running): other labs never take it for a stale one, so the
// prefix must not start with "stl" and no namespace may carry it yet.
// Close it, or rebuild it with Attach and Close it, to remove it.
func NewNamedLab(prefix string, n int) (*Lab, error) {
	if n < 1 || n > 200 {
		return nil, fmt.Errorf("nettest: %d hosts: want 1 to 200", n)
	}
	if prefix == "" || strings.HasPrefix(prefix, namePrefix) || strings.ContainsAny(prefix, "/ ") || len(prefix) > 40 {
		return nil, fmt.Errorf("nettest: namespace prefix %q: want up to 40 characters, no slash or space, not starting with %q", prefix, namePrefix)
	}
	if names := Namespaces(prefix); len(names) > 0 {
		return nil, fmt.Errorf("nettest: namespaces named %s-* exist already (%s): remove them first", prefix, strings.Join(names, " "))
	}
	return newLab(prefix, n)
}

// Attach rebuilds the lab NewNamedLab(prefix, n) made, for another process
// to use or Close it.
func Attach(prefix string, n int) *Lab {
	l := &Lab{prefix: prefix, Wire: prefix + "-wire"}
	for i := range n {
		l.Hosts = append(l.Hosts, newHost(l, i))
	}
	return l
}

// Namespaces lists the network namespaces named PREFIX-*.
func Namespaces(prefix string) []string {
	var out []string
	entries, _ := os.ReadDir("/var/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix+"-") {
			out = append(out, e.Name())
		}
	}
	return out
}

// DeleteNamespace deletes a network namespace by name (with the links in
// it).
func DeleteNamespace(name string) error { return ip("netns", "del", name) }

func newHost(l *Lab, i int) *Host {
	return &Host{Name: fmt.Sprintf("%s-h%d", l.prefix, i), Addr: netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)}), lab: l, peer: fmt.Sprintf("w%d", i)}
}

func newLab(prefix string, n int) (*Lab, error) {
	l := &Lab{prefix: prefix}
	l.Wire = l.prefix + "-wire"
	cmds := [][]string{
		{"netns", "add", l.Wire},
		{"-n", l.Wire, "link", "set", "lo", "up"},
		{"-n", l.Wire, "link", "add", "br0", "type", "bridge"},
		{"-n", l.Wire, "link", "set", "br0", "up"},
	}
	for i := range n {
		h := newHost(l, i)
		l.Hosts = append(l.Hosts, h)
		cmds = append(cmds,
			[]string{"netns", "add", h.Name},
			[]string{"-n", h.Name, "link", "set", "lo", "up"},
			[]string{"link", "add", "eth0", "netns", h.Name, "type", "veth", "peer", "name", h.peer, "netns", l.Wire},
			[]string{"-n", l.Wire, "link", "set", h.peer, "master", "br0", "up"},
			[]string{"-n", h.Name, "addr", "add", h.Addr.String() + "/24", "dev", "eth0"},
			[]string{"-n", h.Name, "link", "set", "eth0", "up"},
		)
	}
	for _, c := range cmds {
		if err := ip(c...); err != nil {
			l.Close()
			return nil, err
		}
	}
	return l, nil
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("nettest: ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// Command returns a command that runs inside the host's namespace.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.Name, name}, args...)...)
}

// Start starts a command inside the host's namespace; the lab stops it (by
// its PID) when closed, if it still runs.
func (h *Host) Start(ctx context.Context, name string, args ...string) (*exec.Cmd, error) {
	cmd := h.Command(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	h.lab.mu.Lock()
	h.lab.procs = append(h.lab.procs, cmd)
	h.lab.mu.Unlock()
	return cmd, nil
}

// Do runs fn with the calling goroutine's OS thread inside the host's
// namespace; sockets fn opens stay in that namespace afterwards.
func (h *Host) Do(fn func() error) error { return Do(h.Name, fn) }

// NewNamespace makes an extra namespace (a task's sandbox, say) that the
// lab deletes when closed. It returns the namespace's name.
func (l *Lab) NewNamespace(suffix string) (string, error) {
	name := l.prefix + "-" + suffix
	if err := ip("netns", "add", name); err != nil {
		return "", err
	}
	if err := ip("-n", name, "link", "set", "lo", "up"); err != nil {
		return "", err
	}
	l.mu.Lock()
	l.extra = append(l.extra, name)
	l.mu.Unlock()
	return name, nil
}

// Do runs fn with the calling goroutine's OS thread inside the named
// network namespace.
func Do(name string, fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	target, err := netns.GetFromName(name)
	if err != nil {
		return err
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		return err
	}
	defer netns.Set(orig)
	return fn()
}

// Isolate cuts a host off the wire (its link there goes down).
func (l *Lab) Isolate(h *Host) error { return ip("-n", l.Wire, "link", "set", h.peer, "down") }

// Partition drops traffic between the two groups of hosts, in both
// directions, with an nftables bridge rule on the wire.
func (l *Lab) Partition(a, b []*Host) error {
	var rules strings.Builder
	rules.WriteString("table bridge nettest {\n chain forward {\n  type filter hook forward priority 0; policy accept;\n")
	for _, x := range a {
		for _, y := range b {
			fmt.Fprintf(&rules, "  ip saddr %s ip daddr %s drop\n  ip saddr %s ip daddr %s drop\n", x.Addr, y.Addr, y.Addr, x.Addr)
		}
	}
	rules.WriteString(" }\n}\n")
	cmd := exec.Command("ip", "netns", "exec", l.Wire, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nettest: partition: %v: %s", err, out)
	}
	return nil
}

// Heal undoes every partition and isolation.
func (l *Lab) Heal() error {
	exec.Command("ip", "netns", "exec", l.Wire, "nft", "delete", "table", "bridge", "nettest").Run()
	var errs []error
	for _, h := range l.Hosts {
		errs = append(errs, ip("-n", l.Wire, "link", "set", h.peer, "up"))
	}
	return errors.Join(errs...)
}

// Close stops the lab's processes and deletes its namespaces (which takes
// their links with them).
func (l *Lab) Close() error {
	l.mu.Lock()
	procs := l.procs
	l.procs = nil
	l.mu.Unlock()
	for _, p := range procs {
		if p.ProcessState == nil && p.Process != nil {
			syscall.Kill(-p.Process.Pid, syscall.SIGKILL)
			p.Wait()
		}
	}
	var errs []error
	l.mu.Lock()
	extra := l.extra
	l.mu.Unlock()
	for _, name := range extra {
		if exists(name) {
			errs = append(errs, ip("netns", "del", name))
		}
	}
	for _, h := range l.Hosts {
		if exists(h.Name) {
			errs = append(errs, ip("netns", "del", h.Name))
		}
	}
	if exists(l.Wire) {
		errs = append(errs, ip("netns", "del", l.Wire))
	}
	return errors.Join(errs...)
}

func exists(name string) bool {
	_, err := os.Stat("/var/run/netns/" + name)
	return err == nil
}

// cleanStale deletes namespaces of labs whose process is gone.
func cleanStale() {
	entries, _ := os.ReadDir("/var/run/netns")
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), namePrefix)
		if !ok {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, 0) == syscall.ESRCH {
			ip("netns", "del", e.Name())
		}
	}
}
