package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/internal/waitfor"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// cluster is a one-node cluster on loopback with a fake executor; shoalctl
// reaches it with the node's data dir.
func cluster(t *testing.T) *swarm.Node {
	t.Helper()
	n := &swarm.Node{Dir: t.TempDir(), ListenAddr: "127.0.0.1:0", Executor: &agent.FakeExecutor{}, HeartbeatPeriod: 300 * time.Millisecond}
	if err := n.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close(); n.Executor.(*agent.FakeExecutor).ExitAll() })
	select {
	case <-n.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("node not ready")
	}
	return n
}

// ctl runs shoalctl against the node and returns its output.
func ctl(t *testing.T, n *swarm.Node, stdin string, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	all := append([]string{"--data-dir", n.Dir}, args...)
	err := run(context.Background(), all, strings.NewReader(stdin), &out, &errOut)
	return out.String() + errOut.String(), err
}

func must(t *testing.T, n *swarm.Node, args ...string) string {
	t.Helper()
	began := time.Now()
	out, err := ctl(t, n, "", args...)
	if d := time.Since(began); d > 2*time.Second {
		t.Logf("shoalctl %s took %v", strings.Join(args, " "), d)
	}
	if err != nil {
		t.Fatalf("shoalctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func contains(t *testing.T, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
}

// The verbs through the Go client: nodes, services (with the progress
// display), secrets, configs, networks, stacks, the cluster, join tokens;
// tables and JSON.
func TestVerbs(t *testing.T) {
	n := cluster(t)
	contains(t, must(t, n, "node", "ls"), "HOSTNAME", n.ID(), "manager", "ready", "active", "Leader")
	var nodes []map[string]any
	if err := json.Unmarshal([]byte(must(t, n, "node", "ls", "--format", "json")), &nodes); err != nil || len(nodes) != 1 {
		t.Fatalf("node ls json: %v %v", nodes, err)
	}
	must(t, n, "node", "update", "--label-add", "zone=east", n.ID())
	contains(t, must(t, n, "node", "inspect", n.ID()), `"zone": "east"`)

	out := must(t, n, "service", "create", "--name", "web", "--replicas", "3", "-p", "8080:80", "--update-parallelism", "0", "-e", "A=1", "nginx:1", "sleep", "1000")
	contains(t, out, "web: 3/3 running", "verify: Service converged")
	contains(t, must(t, n, "service", "ls"), "web", "replicated", "3/3", "nginx:1", "*:8080->80/tcp")
	contains(t, must(t, n, "service", "ps", "web"), "web.1", "web.3", "running")
	contains(t, must(t, n, "service", "scale", "web=5"), "web scaled to 5", "web: 5/5 running")
	contains(t, must(t, n, "service", "update", "--image", "nginx:2", "--env-add", "B=2", "web"), "verify: Service converged")
	out = must(t, n, "service", "inspect", "web")
	contains(t, out, `"image": "nginx:2"`, `"B=2"`, `"A=1"`)
	must(t, n, "service", "rollback", "-d", "web")
	contains(t, must(t, n, "service", "inspect", "web"), `"image": "nginx:1"`)
	contains(t, must(t, n, "service", "ps", "web"), `\_ web.1`, "nginx:2", "shutdown")

	if out, err := ctl(t, n, "hunter2", "secret", "create", "pw", "-"); err != nil || strings.TrimSpace(out) == "" {
		t.Fatalf("secret create: %v %s", err, out)
	}
	out = must(t, n, "secret", "inspect", "pw")
	if strings.Contains(out, "data") {
		t.Fatalf("secret inspect shows data:\n%s", out)
	}
	cfg := filepath.Join(t.TempDir(), "c.txt")
	os.WriteFile(cfg, []byte("x=1"), 0o644)
	must(t, n, "config", "create", "conf", cfg)
	contains(t, must(t, n, "config", "ls"), "conf")
	must(t, n, "network", "create", "--attachable", "-o", "encrypted", "back")
	contains(t, must(t, n, "network", "ls"), "back", "attachable,encrypted", "ingress")

	out = must(t, n, "stack", "deploy", "-c", "testdata/web.yml", "--detach=false", "demo")
	contains(t, out, "Creating network demo_front", "Creating secret demo_token", "Creating service demo_web", "demo_web: 2/2 running")
	contains(t, must(t, n, "stack", "ls"), "demo", "1")
	contains(t, must(t, n, "stack", "services", "demo"), "demo_web", "2/2")
	contains(t, must(t, n, "stack", "ps", "demo"), "demo_web.1", "demo_web.2")
	t.Setenv("WEB_REPLICAS", "3")
	contains(t, must(t, n, "stack", "deploy", "-c", "testdata/web.yml", "demo"), "Updating service demo_web")
	contains(t, must(t, n, "stack", "rm", "demo"), "Removing service demo_web", "Removing network demo_front", "Removing secret demo_token")

	contains(t, must(t, n, "join-token", "worker"), "shoald join --token SWMTKN-1-")
	old := strings.TrimSpace(must(t, n, "join-token", "-q", "manager"))
	contains(t, must(t, n, "join-token", "--rotate", "manager"), "rotated")
	if now := strings.TrimSpace(must(t, n, "join-token", "-q", "manager")); now == old {
		t.Fatal("the manager token did not change")
	}
	must(t, n, "cluster", "update", "--task-history-limit", "2")
	contains(t, must(t, n, "cluster", "inspect"), `"taskHistoryRetentionLimit": 2`)

	// Logs: every task's lines with the NAME.SLOT.TASKID@NODE prefix;
	// tail per task; a task's own; JSON lines.
	var ts []*api.Task
	waitfor.True(t, "web's 5 tasks running again after the rollback", func() bool {
		all, err := n.Client().Tasks(context.Background(), swarm.Filter{Services: []string{"web"}})
		ts = slices.DeleteFunc(all, func(tk *api.Task) bool { return err != nil || tk.Status.State != api.TaskRunning })
		return len(ts) == 5
	})
	ex := n.Executor.(*agent.FakeExecutor)
	for _, tk := range ts {
		ex.Log(tk.ID, "stderr", "complaint of "+tk.ID)
	}
	out = must(t, n, "service", "logs", "web")
	for _, tk := range ts {
		contains(t, out, fmt.Sprintf("web.%d.%s@", tk.Slot, tk.ID[:12]), "    | started "+tk.ID, "    | complaint of "+tk.ID)
	}
	out = must(t, n, "service", "logs", "--tail", "1", "--no-task-ids", "web")
	if strings.Count(out, "complaint of") != 5 || strings.Contains(out, "started") {
		t.Errorf("service logs --tail 1:\n%s", out)
	}
	out = must(t, n, "service", "logs", "--raw", "--stdout", ts[0].ID)
	if strings.TrimSpace(out) != "started "+ts[0].ID {
		t.Errorf("service logs --raw --stdout TASK:\n%s", out)
	}
	out = must(t, n, "--format", "json", "service", "logs", "--stderr", "web")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 5 || !strings.Contains(lines[0], `"stream":"stderr"`) {
		t.Errorf("service logs --format json --stderr:\n%s", out)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var evOut bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--data-dir", n.Dir, "events", "--type", "service"}, nil, &evOut, &evOut)
	}()
	time.Sleep(500 * time.Millisecond)
	must(t, n, "service", "rm", "web")
	time.Sleep(500 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Errorf("events: %v", err)
	}
	contains(t, evOut.String(), "service remove", "web")
	waitfor.True(t, "no service", func() bool { return !strings.Contains(must(t, n, "service", "ls"), "web") })
	must(t, n, "secret", "rm", "pw")
	must(t, n, "config", "rm", "conf")
	must(t, n, "network", "rm", "back")
}

// Bad input gives a clear error, never a panic.
func TestBadInput(t *testing.T) {
	n := cluster(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"service", "create", "--replicas", "x", "nginx"}, `invalid argument "x" for "--replicas"`},
		{[]string{"service", "create", "-p", "99999:80", "nginx"}, `--publish "99999:80"`},
		{[]string{"service", "create", "--name", "bad!", "nginx"}, `spec.name: "bad!"`},
		{[]string{"service", "create", "--constraint", "node.labels.zone=east", "nginx"}, "constraint"},
		{[]string{"service", "create", "--limit-memory", "lots", "nginx"}, `--limit-memory "lots"`},
		{[]string{"service", "create"}, "needs at least 1 argument"},
		{[]string{"service", "scale", "web"}, "want SERVICE=REPLICAS"},
		{[]string{"service", "ps", "nosuch"}, `not found: service "nosuch"`},
		{[]string{"node", "update", "--availability", "bogus", "x"}, `--availability "bogus"`},
		{[]string{"stack", "deploy", "-c", "/work/nosuch.yml", "s"}, "nosuch.yml"},
		{[]string{"stack", "deploy", "-c", "testdata/token.txt", "s"}, "token.txt"},
		{[]string{"join-token", "admin"}, `"admin": want worker or manager`},
		{[]string{"--format", "yaml", "node", "ls"}, `--format "yaml"`},
		{[]string{"network", "create", "--driver", "bridge", "n"}, "overlay networks only"},
		{[]string{"events", "--type", "container"}, `--type "container"`},
		{[]string{"nosuch"}, `unknown command "nosuch"`},
		{[]string{"service", "logs", "--tail", "abc", "x"}, `--tail "abc": give a number of lines`},
		{[]string{"service", "logs", "--since", "yesterday", "x"}, `--since "yesterday"`},
		{[]string{"service", "logs", "nosuch"}, "no such service or task: nosuch"},
	} {
		out, err := ctl(t, n, "", c.args...)
		if err == nil || !strings.Contains(err.Error()+out, c.want) {
			t.Errorf("shoalctl %s: %v\n%s\nwant an error with %q", strings.Join(c.args, " "), err, out, c.want)
		}
	}
	// No certificate: says where it looked.
	var out bytes.Buffer
	err := run(context.Background(), []string{"--data-dir", t.TempDir(), "node", "ls"}, nil, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "no node certificate in") {
		t.Fatalf("without a certificate: %v", err)
	}
}
