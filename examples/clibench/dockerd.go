package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// dockerHost is a Docker Swarm node for the side-by-side figure: dockerd
// (20.10.24 from Debian's docker.io) set up as the anchor measurements in
// /work/shared/anchors (docker-swarm-multi/measure.sh, one host of it)
// set theirs up: its own network namespace (an address in 192.0.2.0/24
// on a veth pair of its own; its bridges and iptables rules stay in there), its own
// UTS namespace, a private /run and /etc/docker (its key.json) in its own
// mount namespace, its own --data-root, --exec-root, pidfile and socket
// under a directory of its own, its own dockerd-managed containerd, and
// every process of it in a cgroup of its own, so that Stop finds all of
// them. Stop stops dockerd by its PID, kills what is left in the cgroup
// and removes the namespace, the cgroups and the directory.
type dockerHost struct {
	Dockerd, CLI string
	Logf         func(format string, args ...any)
	// Version is dockerd's, once started.
	Version string

	dir, netns, cgroup, cgroupName string
	cmd                            *exec.Cmd
	exited                         chan struct{}
	cli                            *dockerCLI
}

// hostInner runs inside `ip netns exec NS unshare --uts`: the same steps
// as the anchor's host-inner.sh.
const hostInner = `#!/bin/sh
set -e
H=$1 NAME=$2; shift 2
hostname "$NAME"
# ip netns exec remounted /sys for the namespace, which drops the cgroup
# mounts: mount the same hierarchies again.
while read -r src mnt typ opts _; do mkdir -p "$mnt"; mount -t "$typ" -o "$opts" "$src" "$mnt"; done < $H/cgroup-mounts
# A private /run (shim sockets, runc state, /run/docker) and /etc/docker
# (dockerd writes its key.json there).
mount -t tmpfs -o mode=755 clibench-run /run
mkdir -p /run/docker /run/containerd
mount --bind $H/etc-docker /etc/docker
exec "$@"
`

// dockerAddr is the node's address in its namespace.
const dockerAddr = "192.0.2.2"

// Start starts dockerd and waits until it answers.
func (d *dockerHost) Start(ctx context.Context) error {
	if _, err := os.Stat("/etc/docker"); err != nil {
		return fmt.Errorf("/etc/docker: %v (the docker.io package makes it; dockerd's private one is bind-mounted over it)", err)
	}
	var err error
	if d.dir, err = os.MkdirTemp("", "shoal-clibench-dockerd-"); err != nil {
		return err
	}
	id := strconv.Itoa(os.Getpid())
	d.netns, d.cgroupName = "clibench-dockerd-"+id, "shoal-clibench-"+id
	cg, err := unifiedCgroup()
	if err != nil {
		return err
	}
	d.cgroup = filepath.Join(cg, d.cgroupName)
	for _, sub := range []string{"data", "exec", "etc-docker"} {
		if err := os.MkdirAll(filepath.Join(d.dir, sub), 0o700); err != nil {
			return err
		}
	}
	mounts, err := cgroupMounts()
	if err != nil {
		return err
	}
	files := map[string]string{"daemon.json": "{}\n", "cgroup-mounts": mounts, "host-inner.sh": hostInner}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(d.dir, name), []byte(content), 0o700); err != nil {
			return err
		}
	}
	// No default route, as on the anchor's hosts: Swarm's executor tries
	// to pull a task's image by tag before it uses the loaded one, and
	// without a route that fails at once instead of after DNS timeouts.
	for _, args := range [][]string{
		{"netns", "add", d.netns},
		{"-n", d.netns, "link", "set", "lo", "up"},
		{"-n", d.netns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"},
		{"-n", d.netns, "link", "set", "eth1", "up"},
		{"-n", d.netns, "addr", "add", dockerAddr + "/24", "dev", "eth0"},
		{"-n", d.netns, "link", "set", "eth0", "up"},
	} {
		if out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	if err := os.Mkdir(d.cgroup, 0o755); err != nil {
		return err
	}
	logFile, err := os.Create(filepath.Join(d.dir, "dockerd.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	sock := filepath.Join(d.dir, "docker.sock")
	// The shell moves itself into the cgroup, then everything execs: the
	// process is dockerd in the end, with the same PID.
	launcher := fmt.Sprintf(`echo $$ > %s/cgroup.procs && exec ip netns exec %s unshare --uts %s/host-inner.sh %s clibench-dockerd %s --data-root %s/data --exec-root %s/exec --pidfile %s/docker.pid -H unix://%s --config-file %s/daemon.json --cgroup-parent /%s`,
		d.cgroup, d.netns, d.dir, d.dir, d.Dockerd, d.dir, d.dir, d.dir, sock, d.dir, d.cgroupName)
	d.cmd = exec.Command("sh", "-c", launcher)
	d.cmd.Stdout, d.cmd.Stderr = logFile, logFile
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	d.Logf("starting dockerd (%s) in network namespace %s, files in %s", d.Dockerd, d.netns, d.dir)
	if err := d.cmd.Start(); err != nil {
		return err
	}
	d.exited = make(chan struct{})
	go func() { d.cmd.Wait(); close(d.exited) }()
	d.cli = &dockerCLI{CLI: d.CLI, Host: "unix://" + sock}
	deadline := time.Now().Add(time.Minute)
	for {
		v, err := d.cli.run(ctx, "version", "--format", "{{.Server.Version}}")
		if err == nil {
			d.Version = strings.TrimSpace(v)
			return nil
		}
		select {
		case <-d.exited:
			log, _ := os.ReadFile(filepath.Join(d.dir, "dockerd.log"))
			return fmt.Errorf("dockerd exited at start:\n%s", tail(string(log), 20))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dockerd does not answer after a minute: %v", err)
		}
	}
}

// measure loads the image, makes a one-node swarm and times the commands.
func (d *dockerHost) measure(ctx context.Context, tarball string, replicas int) (*figures, error) {
	if _, err := d.cli.run(ctx, "load", "-q", "-i", tarball); err != nil {
		return nil, err
	}
	if _, err := d.cli.run(ctx, "swarm", "init", "--advertise-addr", dockerAddr); err != nil {
		return nil, err
	}
	f, err := d.cli.timeService(ctx, "Docker Swarm", "shoal.test/web:1", replicas)
	if err != nil {
		return nil, err
	}
	// Wait until the containers are gone, so that Stop is a plain
	// shutdown.
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if out, err := d.cli.run(ctx, "ps", "-aq"); err == nil && strings.TrimSpace(out) == "" {
			break
		}
	}
	return f, nil
}

// Stop leaves the swarm, stops dockerd (SIGTERM by its PID, SIGKILL after
// 30 s), kills whatever is left in its cgroup (its containerd, shims,
// containers), and removes the cgroups, the namespace and the directory.
func (d *dockerHost) Stop() error {
	var errs []error
	if d.cmd != nil && d.cmd.Process != nil {
		select {
		case <-d.exited:
		default:
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if _, err := d.cli.run(ctx, "swarm", "leave", "--force"); err != nil {
				d.Logf("docker swarm leave: %v", err)
			}
			cancel()
			d.Logf("stopping dockerd (pid %d)", d.cmd.Process.Pid)
			d.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-d.exited:
			case <-time.After(30 * time.Second):
				d.cmd.Process.Kill()
				<-d.exited
				errs = append(errs, errors.New("dockerd did not stop on SIGTERM within 30 s: killed"))
			}
		}
	}
	if d.cgroup != "" {
		errs = append(errs, killCgroup(d.cgroup))
		removeCgroups(d.cgroupName)
	}
	if d.netns != "" {
		if _, err := os.Stat("/var/run/netns/" + d.netns); err == nil {
			if out, err := exec.Command("ip", "netns", "del", d.netns).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("ip netns del %s: %v: %s", d.netns, err, out))
			}
		}
	}
	if d.dir != "" {
		errs = append(errs, os.RemoveAll(d.dir))
	}
	return errors.Join(errs...)
}

// unifiedCgroup is the cgroup2 mount (a hybrid or a pure v2 machine).
func unifiedCgroup() (string, error) {
	raw, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[2] == "cgroup2" {
			return f[1], nil
		}
	}
	return "", errors.New("no cgroup2 hierarchy mounted: the bench collects dockerd's processes in one to stop them all")
}

// cgroupMounts are the machine's cgroup mounts, for host-inner.sh to mount
// again.
func cgroupMounts() (string, error) {
	raw, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return "", err
	}
	var out strings.Builder
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) > 1 && (f[1] == "/sys/fs/cgroup" || strings.HasPrefix(f[1], "/sys/fs/cgroup/")) {
			out.WriteString(line + "\n")
		}
	}
	return out.String(), nil
}

// killCgroup kills every process in the cgroup subtree and waits until it
// is empty.
func killCgroup(cg string) error {
	for range 200 {
		if _, err := os.Stat(cg); err != nil {
			return nil
		}
		if len(cgroupProcs(cg)) == 0 {
			return nil
		}
		if err := os.WriteFile(filepath.Join(cg, "cgroup.kill"), []byte("1"), 0o644); err != nil {
			for _, pid := range cgroupProcs(cg) {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("processes left in %s: %v", cg, cgroupProcs(cg))
}

func cgroupProcs(cg string) []int {
	var pids []int
	filepath.WalkDir(cg, func(path string, e os.DirEntry, err error) error {
		if err == nil && e.Name() == "cgroup.procs" {
			raw, _ := os.ReadFile(path)
			for _, f := range strings.Fields(string(raw)) {
				if pid, err := strconv.Atoi(f); err == nil {
					pids = append(pids, pid)
				}
			}
		}
		return nil
	})
	return pids
}

// removeCgroups removes the (empty) cgroup directories named name in
// every hierarchy (dockerd's --cgroup-parent made some in the v1 ones),
// deepest first.
func removeCgroups(name string) {
	raw, _ := os.ReadFile("/proc/mounts")
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || (f[2] != "cgroup" && f[2] != "cgroup2") {
			continue
		}
		root := filepath.Join(f[1], name)
		var dirs []string
		filepath.WalkDir(root, func(path string, e os.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			os.Remove(dirs[i])
		}
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
