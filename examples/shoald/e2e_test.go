package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/shoallab"
	"github.com/shoalproject/shoal/internal/testimages"
	"github.com/shoalproject/shoal/internal/waitfor"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/stack"
)

// newLab builds shoald and makes a lab of n hosts, or skips the test where
// it cannot run (no root, no containerd ...).
func newLab(t *testing.T, n int) *shoallab.Lab {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: not in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("end-to-end test: needs root (network namespaces, containerd); CI runs it as root")
	}
	for _, bin := range []string{"ip", "nft", "nsenter", "containerd", "runc", "containerd-shim-runc-v2"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("end-to-end test: needs %s (apt-get install iproute2 nftables util-linux containerd runc; scripts/test.sh does)", bin)
		}
	}
	bin := filepath.Join(t.TempDir(), "shoald")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build shoald: %v\n%s", err, out)
	}
	lab, err := shoallab.New(context.Background(), shoallab.Options{Shoald: bin, Hosts: n, HeartbeatPeriod: 500 * time.Millisecond, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, h := range lab.Hosts {
				t.Logf("host %d's shoald log, last lines:\n%s", h.Index, h.LogTail(40))
			}
		}
		if err := lab.Close(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return lab
}

// answers returns the answers of the tasks to n requests to url from a
// host ("HOSTNAME TASK_ID [VERSION]": one key per task), with their count;
// an error if any request failed.
func answers(ctx context.Context, h *shoallab.Host, url string, n int) (map[string]int, error) {
	hc := h.HTTPClient(3 * time.Second)
	out := map[string]int{}
	for range n {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := hc.Do(req)
		if err != nil {
			return out, err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			return out, fmt.Errorf("%s: %s %v", url, resp.Status, err)
		}
		out[strings.TrimSpace(string(b))]++
	}
	return out, nil
}

// running is the service's running tasks by node.
func running(ctx context.Context, c *swarm.Client, svc string) (map[string][]*api.Task, int, error) {
	ts, err := c.Tasks(ctx, swarm.Filter{Services: []string{svc}, DesiredStates: []string{"running"}})
	if err != nil {
		return nil, 0, err
	}
	by := map[string][]*api.Task{}
	n := 0
	for _, t := range ts {
		if t.Status.State == api.TaskRunning {
			by[t.NodeID] = append(by[t.NodeID], t)
			n++
		}
	}
	return by, n, nil
}

// The main job with the real binaries: shoald init on one host, join on
// two, a stack deployed from the tutorial's Compose file, its published
// port answering on every host through the routing mesh (the drained
// manager runs no task), a worker killed with SIGKILL and its tasks
// replaced on the other, the worker restarted from its data dir (shoald
// run) and back in the mesh, the manager restarted the same way with the
// tasks still running, and metrics.
func TestClusterEndToEnd(t *testing.T) {
	lab := newLab(t, 4) // three nodes and a client
	ctx := context.Background()
	hosts, client := lab.Hosts[:3], lab.Hosts[3]
	mgr := hosts[0]
	c, err := lab.Init(ctx, mgr)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := c.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts[1:] {
		if err := lab.Join(ctx, c, h, cl.JoinTokens.Worker, mgr.Addr.String()+":2377"); err != nil {
			t.Fatal(err)
		}
	}
	n, err := c.Node(ctx, mgr.NodeID())
	if err != nil {
		t.Fatal(err)
	}
	spec := n.Spec
	spec.Availability = api.NodeDrain
	if _, err := c.UpdateNode(ctx, n.ID, n.Version, spec); err != nil {
		t.Fatal(err)
	}

	st, err := stack.Load(ctx, "demo", []stack.File{{Name: "../quickstart/web-5-replicas.yml"}},
		stack.Options{MapImage: func(string) string { return testimages.WebRef }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stack.Deploy(ctx, c, st, stack.DeployOptions{}); err != nil {
		t.Fatal(err)
	}
	const svc = "demo_web"
	waitfor.Within(t, 2*time.Minute, "5 tasks running on the two workers", func() bool {
		by, n, err := running(ctx, c, svc)
		return err == nil && n == 5 && len(by) == 2 && len(by[mgr.NodeID()]) == 0
	})
	// Every host answers on 4000, the manager too, with no task there.
	everyHostAnswers := func(what string, want int) {
		t.Helper()
		for _, h := range hosts {
			url := fmt.Sprintf("http://%s:4000/", h.Addr)
			var got map[string]int
			waitfor.Within(t, 30*time.Second, what+": "+url+" answers", func() bool {
				got, err = answers(ctx, client, url, 12)
				return err == nil && len(got) >= want
			})
			t.Logf("%s: %s answered by %v", what, url, got)
		}
	}
	everyHostAnswers("deployed", 2)

	// The stock docker CLI, where there is one, on the manager's socket.
	if docker, err := exec.LookPath("docker"); err == nil {
		cmd := exec.Command(docker, "node", "ls")
		cmd.Env = append(os.Environ(), "DOCKER_HOST=unix://"+filepath.Join(mgr.DataDir, "docker.sock"))
		out, err := cmd.CombinedOutput()
		if err != nil || strings.Count(string(out), "Ready") != 3 || !strings.Contains(string(out), "Leader") {
			t.Errorf("docker node ls: %v\n%s", err, out)
		}
		t.Logf("docker node ls:\n%s", out)
	}

	// A worker dies (SIGKILL): its tasks are replaced on the other one,
	// and the mesh keeps answering everywhere but on the dead host.
	victim, other := hosts[1], hosts[2]
	before, _, _ := running(ctx, c, svc)
	lost := before[victim.NodeID()]
	if len(lost) == 0 {
		t.Fatal("the victim runs no task")
	}
	if err := victim.Stop(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitfor.Within(t, time.Minute, "5 running on the surviving worker", func() bool {
		by, n, err := running(ctx, c, svc)
		return err == nil && n == 5 && len(by[other.NodeID()]) == 5
	})
	for _, h := range []*shoallab.Host{mgr, other} {
		url := fmt.Sprintf("http://%s:4000/", h.Addr)
		waitfor.Within(t, 30*time.Second, url+" answers after the worker's death", func() bool {
			_, err := answers(ctx, client, url, 10)
			return err == nil
		})
	}

	// The worker comes back from its data dir: ready again, its old
	// containers gone (their tasks were replaced), its mesh answering.
	if err := lab.Run(victim); err != nil {
		t.Fatal(err)
	}
	if err := lab.WaitReady(ctx, c, victim); err != nil {
		t.Fatal(err)
	}
	waitfor.Within(t, 30*time.Second, "the restarted worker's mesh answers", func() bool {
		_, err := answers(ctx, client, fmt.Sprintf("http://%s:4000/", victim.Addr), 10)
		return err == nil
	})
	for _, tk := range lost {
		waitfor.Within(t, 30*time.Second, "the replaced task "+tk.ID+" ends on the restarted worker", func() bool {
			got, err := c.Task(ctx, tk.ID)
			return err != nil || got.Status.State > api.TaskRunning
		})
	}

	// The manager restarts from its data dir (SIGTERM, shoald run): the
	// tasks keep running, the same ones.
	ids := taskIDs(t, ctx, c, svc)
	if err := mgr.Stop(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := lab.Run(mgr); err != nil {
		t.Fatal(err)
	}
	waitfor.Within(t, time.Minute, "the restarted manager answers with the same 5 tasks", func() bool {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		got, err := taskIDsErr(cctx, c, svc)
		return err == nil && got == ids
	})
	everyHostAnswers("after the manager's restart", 2)

	// Metrics of the manager, from its host: three sessions (its own
	// worker too, drained).
	wants := []string{`shoal_tasks{state="running"} 5`, "shoal_raft_leader 1", `shoal_nodes{availability="active",role="worker",state="ready"} 2`,
		"shoal_reconcile_duration_seconds_count", "shoal_dispatcher_sessions 3", "shoal_raft_term "}
	var resp string
	waitfor.Within(t, 30*time.Second, "the manager's metrics", func() bool {
		resp, err = get(ctx, mgr, "http://127.0.0.1:9323/metrics")
		return err == nil && !slices.ContainsFunc(wants, func(w string) bool { return !strings.Contains(resp, w) })
	}, func() string { return grepShoal(resp) })
	resp, err = get(ctx, other, "http://127.0.0.1:9323/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(resp, "shoal_routing_mesh_published_ports 1") || !strings.Contains(resp, "shoal_routing_mesh_rule_changes_total") {
		t.Errorf("worker metrics:\n%s", grepShoal(resp))
	}

	// A worker's shoald stopped with SIGTERM leaves its tasks running; it
	// comes back with `shoald run` and the service is whole again.
	by, _, err := running(ctx, c, svc)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, tk := range by[other.NodeID()] {
		pids = append(pids, tk.Status.PID)
	}
	if len(pids) == 0 {
		t.Fatal("no task on the worker to stop")
	}
	if err := other.Stop(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if pid <= 0 || syscall.Kill(pid, 0) != nil {
			t.Fatalf("task process %d does not run after its shoald's SIGTERM (pids %v)", pid, pids)
		}
	}
	if err := lab.Run(other); err != nil {
		t.Fatal(err)
	}
	if err := lab.WaitReady(ctx, c, other); err != nil {
		t.Fatal(err)
	}
	waitfor.Within(t, time.Minute, "5 running again", func() bool {
		_, n, err := running(ctx, c, svc)
		return err == nil && n == 5
	})
	everyHostAnswers("after the worker's restart", 2)

	// `shoald leave` asks the running daemon (on its Docker API socket) to
	// leave: it exits, its identity is gone, its tasks end.
	var out bytes.Buffer
	if err := run(ctx, []string{"leave", "--data-dir", other.DataDir}, &out, &out); err != nil {
		t.Fatalf("shoald leave: %v\n%s", err, out.String())
	}
	waitfor.Within(t, 30*time.Second, "the daemon exits after leaving", func() bool { return !other.Running() })
	if other.NodeID() != "" {
		t.Fatal("node.json is still there after leave")
	}
	waitfor.Within(t, time.Minute, "the left node's tasks replaced", func() bool {
		by, n, err := running(ctx, c, svc)
		return err == nil && n == 5 && len(by[victim.NodeID()]) == 5
	}, func() string { return describe(ctx, c) })
}

// describe is the cluster's nodes and tasks, for a failure.
func describe(ctx context.Context, c *swarm.Client) string {
	var b strings.Builder
	nodes, _ := c.Nodes(ctx, swarm.Filter{})
	for _, n := range nodes {
		fmt.Fprintf(&b, "node %s %s %s %s %s\n", n.ID, n.Spec.Role, n.Spec.Availability, n.Status.State, n.Status.Message)
	}
	tasks, _ := c.Tasks(ctx, swarm.Filter{})
	for _, t := range tasks {
		fmt.Fprintf(&b, "task %s slot %d node %s desired %s state %s %s %s\n", t.ID, t.Slot, t.NodeID, t.DesiredState, t.Status.State, t.Status.Message, t.Status.Err)
	}
	return b.String()
}

func taskIDs(t *testing.T, ctx context.Context, c *swarm.Client, svc string) string {
	t.Helper()
	s, err := taskIDsErr(ctx, c, svc)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func taskIDsErr(ctx context.Context, c *swarm.Client, svc string) (string, error) {
	by, n, err := running(ctx, c, svc)
	if err != nil {
		return "", err
	}
	if n != 5 {
		return "", errors.New("not 5 running")
	}
	var ids []string
	for _, ts := range by {
		for _, tk := range ts {
			ids = append(ids, tk.ID)
		}
	}
	return strings.Join(slices.Sorted(slices.Values(ids)), ","), nil
}

func get(ctx context.Context, h *shoallab.Host, url string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := h.HTTPClient(5 * time.Second).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func grepShoal(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "shoal_") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
