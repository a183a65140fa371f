package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	ctrd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/shoalproject/shoal/internal/nettest"
	"github.com/shoalproject/shoal/internal/shoallab"
)

// The README's first command, end to end: scripts/quickstart.sh (its
// package check, its builds, then this driver) makes the 5-node cluster,
// deploys the demo stack and gets answers through the routing mesh on
// every host from tasks on several nodes; run again it says the cluster
// runs and starts nothing; `down` removes every process, mount,
// namespace and file, and leaves the machine's own nftables tables as
// they were. It uses a directory and namespace prefix of its own, so a
// quickstart cluster of the machine's user is left alone.
func TestQuickstartUpAgainDown(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: not in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("end-to-end test: needs root (network namespaces, containerd); CI runs it as root")
	}
	for _, bin := range []string{"ip", "nft", "nsenter", "containerd", "runc", "containerd-shim-runc-v2", "dpkg"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("end-to-end test: needs %s (apt-get install iproute2 nftables util-linux containerd runc; scripts/test.sh does)", bin)
		}
	}
	script, err := filepath.Abs("../../scripts/quickstart.sh")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "qs")
	prefix := fmt.Sprintf("qst%d", os.Getpid())
	flags := []string{"-dir", dir, "-netns-prefix", prefix, "-requests", "4"}
	nftBefore := rootNftTables(t)
	quickstart := func(args ...string) (string, error) {
		cmd := exec.Command(script, args...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}
	t.Cleanup(func() {
		// A failed run may have left the cluster: remove it.
		if _, err := os.Stat(dir); err == nil || len(nettest.Namespaces(prefix)) > 0 {
			out, err := quickstart(append([]string{"down"}, flags...)...)
			t.Logf("cleanup: quickstart down: %v\n%s", err, out)
		}
	})

	t0 := time.Now()
	out, err := quickstart(flags...)
	t.Logf("quickstart (%.0fs):\n%s", time.Since(t0).Seconds(), out)
	if err != nil {
		t.Fatalf("quickstart: %v", err)
	}
	for _, want := range []*regexp.Regexp{
		// node ls through shoalctl: every node with its own hostname.
		regexp.MustCompile(`manager1 +192\.0\.2\.10 +manager +ready +active +Leader`),
		regexp.MustCompile(`manager2 +192\.0\.2\.11 +manager +ready +active +reachable`),
		regexp.MustCompile(`manager3 +192\.0\.2\.12 +manager +ready +active +reachable`),
		regexp.MustCompile(`worker1 +192\.0\.2\.13 +worker +ready`),
		regexp.MustCompile(`worker2 +192\.0\.2\.14 +worker +ready`),
		// the stack through the stack deploy path, and service ps.
		regexp.MustCompile(`Creating network demo_demo-net`),
		regexp.MustCompile(`Creating secret demo_greeting`),
		regexp.MustCompile(`\$ shoalctl service ps demo_web`),
		regexp.MustCompile(`demo_web\.6 +shoal\.test/web:1`),
		regexp.MustCompile(`\$ shoalctl service ps demo_probe`),
		// every host answers, with the secret.
		regexp.MustCompile(`http://192\.0\.2\.10:8080/ +\(manager1\) 4/4 answered`),
		regexp.MustCompile(`http://192\.0\.2\.14:8080/ +\(worker2\) 4/4 answered`),
		regexp.MustCompile(`says: hello from a Shoal secret`),
		regexp.MustCompile(`answered by tasks on [2-5] different nodes`),
		regexp.MustCompile(`time from the command to the first answered request: [0-9.]+s`),
		regexp.MustCompile(`RSS of each shoald: manager1 [0-9]+ MiB, manager2 [0-9]+ MiB, manager3 [0-9]+ MiB, worker1 [0-9]+ MiB, worker2 [0-9]+ MiB`),
		regexp.MustCompile(regexp.QuoteMeta("DOCKER_HOST=unix://" + dir + "/node0/docker.sock")),
		regexp.MustCompile(regexp.QuoteMeta("./scripts/quickstart.sh down")),
	} {
		if !want.MatchString(out) {
			t.Errorf("the quickstart's output has no %q", want)
		}
	}
	st, err := shoallab.LoadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(st.Running()); n != 6 {
		t.Fatalf("%d of the cluster's processes run after the quickstart, want 6 (5 shoald, containerd): %+v", n, st)
	}

	// Again: it finds the running cluster, starts nothing, says how to
	// use it.
	out, err = quickstart(flags...)
	if err != nil || !strings.Contains(out, "nothing new is started") || !strings.Contains(out, "A quickstart cluster runs") ||
		!strings.Contains(out, "./scripts/quickstart.sh down") {
		t.Fatalf("quickstart again: %v\n%s", err, out)
	}
	if again, err := shoallab.LoadState(dir); err != nil || fmt.Sprint(again.Shoalds) != fmt.Sprint(st.Shoalds) {
		t.Fatalf("quickstart again changed the cluster: %+v, was %+v (%v)", again.Shoalds, st.Shoalds, err)
	}

	tasks := containerTasks(t, st.ContainerdAddress)
	if len(tasks) < 11 {
		t.Fatalf("%d containers run, want 11 (6 web, 5 probe)", len(tasks))
	}

	out, err = quickstart(append([]string{"down"}, flags...)...)
	t.Logf("quickstart down:\n%s", out)
	if err != nil || !strings.Contains(out, "is removed") {
		t.Fatalf("quickstart down: %v", err)
	}
	// Nothing is left: processes (the recorded ones, and any shoald,
	// containerd or shim naming the directory), mounts, namespaces, files.
	if left := st.Leftovers(); len(left) > 0 {
		t.Errorf("left after down: %s", strings.Join(left, "; "))
	}
	for _, p := range tasks {
		if p.Alive() {
			t.Errorf("a container's process runs after down: pid %d", p.PID)
		}
		if cgs := cgroupsNamed(p.ID); len(cgs) > 0 {
			t.Errorf("container %s's cgroups are left after down: %s", p.ID, strings.Join(cgs, " "))
		}
	}
	if ps := processesNaming(dir); len(ps) > 0 {
		t.Errorf("processes naming %s after down:\n%s", dir, strings.Join(ps, "\n"))
	}
	// Tables the quickstart left in the machine's own namespace fail the
	// test; tables that went away are only logged: other tests on a
	// shared machine make and remove theirs while this one runs.
	nftAfter := rootNftTables(t)
	for _, table := range nftAfter {
		if !slices.Contains(nftBefore, table) {
			t.Errorf("a table appeared in the machine's own nftables: %s (before: %q)", table, nftBefore)
		}
	}
	for _, table := range nftBefore {
		if !slices.Contains(nftAfter, table) {
			t.Logf("table %s of the machine's nftables went away during the test (another test's?)", table)
		}
	}
	out, err = quickstart(append([]string{"status"}, flags...)...)
	if err == nil || !strings.Contains(out, "no quickstart cluster") {
		t.Errorf("status after down: %v\n%s", err, out)
	}
}

// task is a container's process.
type task struct {
	shoallab.Proc
	ID string
}

// containerTasks lists the processes of the containers containerd runs,
// in every namespace.
func containerTasks(t *testing.T, address string) []task {
	c, err := ctrd.New(address)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	nss, err := c.NamespaceService().List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []task
	for _, ns := range nss {
		ctx := namespaces.WithNamespace(context.Background(), ns)
		ctrs, err := c.Containers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, ctr := range ctrs {
			if ct, err := ctr.Task(ctx, nil); err == nil {
				out = append(out, task{Proc: shoallab.ProcOf(int(ct.Pid())), ID: ctr.ID()})
			}
		}
	}
	return out
}

// cgroupsNamed lists the cgroup directories named name (a container's:
// HIERARCHY/NAMESPACE/ID) in every hierarchy.
func cgroupsNamed(name string) []string {
	raw, _ := os.ReadFile("/proc/mounts")
	var out []string
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) > 2 && (f[2] == "cgroup" || f[2] == "cgroup2") {
			found, _ := filepath.Glob(filepath.Join(f[1], "*", name))
			out = append(out, found...)
		}
	}
	return out
}

// rootNftTables lists the nftables tables of the machine's own network
// namespace.
func rootNftTables(t *testing.T) []string {
	out, err := exec.Command("nft", "list", "tables").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list tables: %v: %s", err, out)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}

// processesNaming lists the processes whose command line names dir.
func processesNaming(dir string) []string {
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || e.Name() == fmt.Sprint(os.Getpid()) {
			continue
		}
		if s := strings.ReplaceAll(string(cmdline), "\x00", " "); strings.Contains(s, dir) {
			out = append(out, e.Name()+": "+s)
		}
	}
	return out
}
