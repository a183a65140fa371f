// Package containerdtest starts a private containerd daemon for tests: its
// own root, state and socket under a temporary directory, stopped (by its
// PID) and cleaned up when the test ends. It needs root and the containerd
// and runc binaries (Debian packages containerd and runc); without them the
// test is skipped with a message saying so.
package containerdtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	ctrd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"

	"github.com/shoalproject/shoal/internal/procstat"
)

// Daemon is a running private containerd.
type Daemon struct {
	// Address is the daemon's socket.
	Address string
	// Dir holds root, state, config and the daemon's log.
	Dir string

	cmd    *exec.Cmd
	logf   *os.File
	exited chan struct{}
}

// Start starts a daemon for t, or skips t when it cannot run here. The
// daemon is stopped when t ends.
func Start(t testing.TB) *Daemon {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("containerd tests need root (CI runs them as root)")
	}
	for _, bin := range []string{"containerd", "runc", "containerd-shim-runc-v2"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("containerd tests need %s: apt-get install containerd runc (scripts/test.sh does)", bin)
		}
	}
	d, err := StartDaemon()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Stop(); err != nil {
			t.Logf("containerdtest: %v", err)
		}
	})
	return d
}

// StartDaemon starts a private containerd for a program (a bench); Stop it.
func StartDaemon() (*Daemon, error) {
	dir, err := os.MkdirTemp("", "shoal-ctrd-")
	if err != nil {
		return nil, err
	}
	return StartDaemonIn(dir)
}

// StartDaemonIn starts a containerd daemon as StartDaemon does, with its
// socket, state and root under dir (made if missing, removed by Stop): for
// a daemon meant to outlive this process (a cluster left running), whose
// files are where its owner keeps the rest.
func StartDaemonIn(dir string) (*Daemon, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	d := &Daemon{Address: filepath.Join(dir, "containerd.sock"), Dir: dir}
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = %q
[ttrpc]
  address = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), d.Address, d.Address+".ttrpc")
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("containerd", "--config", cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		os.RemoveAll(dir)
		return nil, err
	}
	d.cmd, d.logf = cmd, logf
	d.exited = make(chan struct{})
	go func() { cmd.Wait(); close(d.exited) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := ctrd.New(d.Address, ctrd.WithTimeout(time.Second))
		if err == nil {
			_, err = c.Version(context.Background())
			c.Close()
			if err == nil {
				return d, nil
			}
		}
		select {
		case <-d.exited:
			log, _ := os.ReadFile(filepath.Join(dir, "containerd.log"))
			d.Stop()
			return nil, fmt.Errorf("containerd exited at start:\n%s", log)
		default:
		}
		if time.Now().After(deadline) {
			d.Stop()
			return nil, fmt.Errorf("containerd did not answer on %s: %v", d.Address, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Namespace is name made unique to this daemon, for the containerd
// namespace of a test's executor. runc keeps each container's state in
// /run/containerd/runc/<namespace>/<id>, one directory for every containerd
// on the machine: two daemons using the same namespace and container ID
// (tests of several packages running at once, or a run killed before it
// cleaned up, whose state stays until reboot) fail with "container with
// given ID already exists".
//
// Unique for daemons of Start and StartDaemon (a temporary directory of
// their own); StartDaemonIn's directory name is its caller's.
func (d *Daemon) Namespace(name string) string { return name + "-" + d.uniq() }

// uniq is what Namespace adds: the random part of the daemon's directory.
func (d *Daemon) uniq() string { return strings.TrimPrefix(filepath.Base(d.Dir), "shoal-ctrd-") }

// PID is the daemon's process ID.
func (d *Daemon) PID() int { return d.cmd.Process.Pid }

// Stop removes every container left, stops the daemon (by its PID),
// unmounts what it mounted and deletes its directory.
func (d *Daemon) Stop() error {
	nss, left := d.removeAll()
	// Shims outlive containerd by design: one still going (its task was
	// being deleted, or created as its agent was killed) would be left
	// behind for good once containerd and its state are gone.
	shims := d.stopShims()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		d.cmd.Process.Kill()
		<-d.exited
	}
	d.logf.Close()
	UnmountUnder(filepath.Join(d.Dir, "root"))
	// runc's state directories of the namespaces made by Namespace, when
	// empty (os.Remove leaves one that still holds a container's state).
	// Not the others: a fixed name (a node's, "m0") may be another
	// daemon's too, creating a container there right now.
	for _, ns := range nss {
		if strings.HasSuffix(ns, "-"+d.uniq()) {
			os.Remove(filepath.Join(runcRoot, ns))
		}
	}
	return errors.Join(left, shims, os.RemoveAll(d.Dir))
}

// runcRoot is where the runc shim keeps container state by default.
const runcRoot = "/run/containerd/runc"

// Shims are the PIDs of the live containerd shims of this daemon (their
// command line names its socket).
func (d *Daemon) Shims() []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		args := strings.Split(string(cmdline), "\x00")
		if strings.Contains(args[0], "containerd-shim") && slices.Contains(args, d.Address) && !procstat.Dead(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// stopShims waits a little for this daemon's shims to exit on their own
// (a deleted task's shim exits once containerd told it to), then kills
// those left, with the processes they still hold (by PID), and waits until
// they are dead.
func (d *Daemon) stopShims() error {
	deadline := time.Now().Add(2 * time.Second)
	for len(d.Shims()) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	shims := d.Shims()
	if len(shims) == 0 {
		return nil
	}
	for _, pid := range shims {
		for _, child := range procstat.Descendants(pid) {
			syscall.Kill(child, syscall.SIGKILL)
		}
		syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		left := slices.DeleteFunc(slices.Clone(shims), procstat.Dead)
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerdtest: shims %v still alive 10 s after SIGKILL", left)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// RemoveAll kills and deletes every task and container the test left, in
// every namespace, so no shim outlives the test.
func (d *Daemon) RemoveAll() error {
	_, err := d.removeAll()
	return err
}

// removeAll is RemoveAll, which also returns the namespaces it went
// through (Stop removes their runc directories).
func (d *Daemon) removeAll() ([]string, error) {
	c, err := ctrd.New(d.Address, ctrd.WithTimeout(10*time.Second))
	if err != nil {
		return nil, fmt.Errorf("containerdtest: connecting to remove what was left: %w", err)
	}
	defer c.Close()
	var errs []error
	lctx, lcancel := context.WithTimeout(context.Background(), 10*time.Second)
	nss, err := c.NamespaceService().List(lctx)
	lcancel()
	if err != nil {
		errs = append(errs, err)
	}
	for _, ns := range nss {
		ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), ns), 20*time.Second)
		containers, err := c.Containers(ctx)
		if err != nil {
			errs = append(errs, err)
		}
		for _, ctr := range containers {
			if task, err := ctr.Task(ctx, nil); err == nil {
				// Not found: the program under test removed it meanwhile
				// (a service removed just before the teardown).
				if _, err := task.Delete(ctx, ctrd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
					errs = append(errs, fmt.Errorf("containerdtest: deleting task %s/%s: %w", ns, ctr.ID(), err))
				}
			}
			if err := ctr.Delete(ctx, ctrd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("containerdtest: deleting container %s/%s: %w", ns, ctr.ID(), err))
			}
		}
		cancel()
	}
	return nss, errors.Join(errs...)
}

// UnmountUnder detaches every mount below root, deepest first.
func UnmountUnder(root string) {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return
	}
	lines := strings.Split(string(b), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		f := strings.Fields(lines[i])
		if len(f) > 1 && strings.HasPrefix(f[1], root) {
			syscall.Unmount(f[1], syscall.MNT_DETACH)
		}
	}
}
