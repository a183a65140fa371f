package main

import (
	"context"
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

	"github.com/shoalproject/shoal/internal/clitest"
	"github.com/shoalproject/shoal/internal/shoallab"
	"github.com/shoalproject/shoal/internal/testimages"
	"github.com/shoalproject/shoal/internal/waitfor"
)

// The docker CLI scenario with the real binaries: a cluster of three
// managers (one that only manages, shoald --tasks=false) and two workers
// on network-namespace hosts, driven by the stock docker CLI 28.2.2 on a
// manager's shoald socket: node ls, a service with a published port
// answered on every host, scale, update --image, rollback, a secret a
// task reads, a stack deployed and removed; the leader's shoald killed
// (SIGKILL) and the CLI pointed at a surviving manager, a worker's shoald
// killed and restarted from its data dir; bad input through the docker
// CLI and shoalctl refused with nothing half-made; then the docker.io
// 20.10 CLI through the main commands.
func TestDockerCLIEndToEnd(t *testing.T) {
	if _, err := os.Stat(dockerCLI28); err != nil {
		t.Skipf("end-to-end test: the docker CLI 28.2.2 is not installed at %s (%v)", dockerCLI28, err)
	}
	lab := newLab(t, 6) // five nodes and a client
	ctx := context.Background()
	if _, err := testimages.BuildWeb2(ctx, lab.ImageDir); err != nil {
		t.Fatal(err)
	}
	shoalctl := filepath.Join(t.TempDir(), "shoalctl")
	if out, err := exec.Command("go", "build", "-o", shoalctl, "../shoalctl").CombinedOutput(); err != nil {
		t.Fatalf("go build shoalctl: %v\n%s", err, out)
	}
	nodes, client := lab.Hosts[:5], lab.Hosts[5]
	managers, workers := nodes[:3], nodes[3:]
	manageOnly := managers[2]
	began := time.Now()

	// The cluster: init, two managers (one runs no task), two workers.
	c, err := lab.Init(ctx, managers[0])
	if err != nil {
		t.Fatal(err)
	}
	cl, err := c.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	join := managers[0].Addr.String() + ":2377"
	if err := lab.Join(ctx, c, managers[1], cl.JoinTokens.Manager, join); err != nil {
		t.Fatal(err)
	}
	if err := lab.Join(ctx, c, manageOnly, cl.JoinTokens.Manager, join, "--tasks=false"); err != nil {
		t.Fatal(err)
	}
	for _, h := range workers {
		if err := lab.Join(ctx, c, h, cl.JoinTokens.Worker, join); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("cluster of 5 up in %v", time.Since(began).Round(time.Millisecond))

	var script strings.Builder
	clitest.SaveTranscript(t, "docker-28.2.2-e2e", &script)
	d := newDockerCLI(t, dockerCLI28, managers[0], &script)

	// node ls: five nodes by their own hostnames, the managers marked,
	// this one (*) the leader.
	ls := d.ok("node", "ls", "--format", "{{.Hostname}} {{.Self}} {{.Status}} {{.Availability}} {{.ManagerStatus}}")
	wantNodes := []string{"host0 true Ready Active Leader", "host1 false Ready Active Reachable", "host2 false Ready Drain Reachable",
		"host3 false Ready Active ", "host4 false Ready Active "}
	if got := sortedLines(ls); !slices.Equal(got, wantNodes) {
		t.Fatalf("docker node ls: got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantNodes, "\n"))
	}
	clitest.MustContain(t, "docker node ls", d.ok("node", "ls"), "HOSTNAME", "MANAGER STATUS", "host0      Ready     Active         Leader")

	// A service with a published port: every host answers on it.
	// (A monitor period of 1 s, not 5: Shoal watches each new task that
	// long before it takes the next; the test's wall time.)
	out := d.ok("service", "create", "--name", "web", "-p", "8080:80", "--replicas", "3",
		"--update-monitor", "1s", "--rollback-monitor", "1s", testimages.WebRef)
	clitest.MustContain(t, "service create", out, "overall progress: 3 out of 3 tasks", "converged")
	clitest.MustContain(t, "service ls", d.ok("service", "ls"), "web", "replicated", "3/3", testimages.WebRef, "*:8080->80/tcp")
	ps := d.ok("service", "ps", "--format", "{{.Name}} {{.Node}} {{.DesiredState}} {{.CurrentState}}", "web")
	if n := strings.Count(ps, " Running Running"); n != 3 || strings.Contains(ps, manageOnly.Hostname) {
		t.Fatalf("service ps web: want 3 running tasks, none on %s:\n%s", manageOnly.Hostname, ps)
	}
	everyHostAnswers(t, client, nodes, 8080, "")

	// Scale, update the image, roll back: each converges and every host
	// answers with the version it runs.
	clitest.MustContain(t, "service scale", d.ok("service", "scale", "web=5"), "web scaled to 5", "converged")
	runningOf(t, d, "web", 5)
	clitest.MustContain(t, "service update", d.ok("service", "update", "--image", testimages.Web2Ref, "web"), "converged")
	ps = runningOf(t, d, "web", 5)
	if strings.Count(ps, testimages.Web2Ref) != 5 {
		t.Fatalf("after update --image: want 5 tasks of %s:\n%s", testimages.Web2Ref, ps)
	}
	everyHostAnswers(t, client, nodes, 8080, "v2")
	clitest.MustContain(t, "service rollback", d.ok("service", "rollback", "web"), "rollback", "converged")
	ps = runningOf(t, d, "web", 5)
	if strings.Count(ps, testimages.WebRef) != 5 {
		t.Fatalf("after rollback: want 5 tasks of %s:\n%s", testimages.WebRef, ps)
	}
	everyHostAnswers(t, client, nodes, 8080, "")

	// The logs of every task of web, the running ones and those kept in
	// history, each line prefixed with its task and node (web.N.ID@hostN),
	// read from the workers through the leader.
	logs := d.ok("service", "logs", "web")
	if n := strings.Count(logs, "serving HTTP on :80"); n < 5 {
		t.Fatalf("docker service logs web: %d lines of the app's start, want one per task (at least 5):\n%s", n, logs)
	}
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		if !strings.HasPrefix(line, "web.") || !strings.Contains(line, "@host") || !strings.Contains(line, "| ") {
			t.Fatalf("docker service logs web: a line without its task@node prefix: %q", line)
		}
	}

	// A secret: a task reads it at /run/secrets/NAME.
	secretID := strings.TrimSpace(d.okIn("s3cr3t-value\n", "secret", "create", "db_password", "-"))
	clitest.MustContain(t, "secret ls", d.ok("secret", "ls"), secretID, "db_password")
	clitest.MustContain(t, "service create with a secret", d.ok("service", "create", "--name", "reader", "--secret", "db_password", testimages.WebRef), "converged")
	if got := readInTask(t, d, "reader", "/run/secrets/db_password"); got != "s3cr3t-value\n" {
		t.Fatalf("the task reads %q at /run/secrets/db_password, want the secret", got)
	}

	// The leader dies (SIGKILL): the CLI goes to another manager, which
	// sees a new leader; the service is whole again, writes go through.
	leader := managers[0]
	if err := leader.Stop(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	d.use(managers[1])
	ls = d.poll(time.Minute, "a new leader and the old one down", func(out string) bool {
		return strings.Contains(out, "host0 Down") && strings.Count(out, "Leader") == 1
	}, "node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}")
	t.Logf("a new leader %v after the kill", time.Since(killed).Round(time.Millisecond))
	runningOf(t, d, "web", 5, leader)
	clitest.MustContain(t, "service scale after the leader's death", d.ok("service", "scale", "web=4"), "converged")
	runningOf(t, d, "web", 4, leader)
	survivors := []*shoallab.Host{managers[1], managers[2], workers[0], workers[1]}
	everyHostAnswers(t, client, survivors, 8080, "")
	// Back from its data dir, the old leader is a reachable manager.
	if err := lab.Run(leader); err != nil {
		t.Fatal(err)
	}
	d.poll(time.Minute, "the old leader back, reachable", func(out string) bool {
		return strings.Contains(out, "host0 Ready Reachable")
	}, "node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}")

	// A stack from a Compose file, converted by the docker CLI: a network,
	// a secret from a file, a published port; stack rm removes it all.
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "greeting.txt"), "hello\n")
	compose := filepath.Join(dir, "demo.yml")
	writeFile(t, compose, `version: "3.8"
services:
  api:
    image: `+testimages.WebRef+`
    deploy:
      replicas: 2
    ports:
      - "8090:80"
    networks: [back]
    secrets: [greeting]
networks:
  back:
    driver: overlay
secrets:
  greeting:
    file: ./greeting.txt
`)
	out = d.ok("stack", "deploy", "-c", compose, "demo")
	clitest.MustContain(t, "stack deploy", out, "Creating network demo_back", "Creating secret demo_greeting", "Creating service demo_api")
	d.poll(time.Minute, "2 demo tasks running", func(out string) bool { return strings.Count(out, "Running") == 2 },
		"stack", "ps", "--filter", "desired-state=running", "--format", "{{.CurrentState}}", "demo")
	clitest.MustContain(t, "stack services", d.ok("stack", "services", "demo"), "demo_api", "2/2", "*:8090->80/tcp")
	everyHostAnswers(t, client, nodes[3:4], 8090, "")
	if got := readInTask(t, d, "demo_api", "/run/secrets/greeting"); got != "hello\n" {
		t.Fatalf("the stack's task reads %q at /run/secrets/greeting", got)
	}
	clitest.MustContain(t, "stack rm", d.ok("stack", "rm", "demo"), "Removing service demo_api", "Removing secret demo_greeting", "Removing network demo_back")
	d.poll(time.Minute, "the stack gone", func(out string) bool { return !strings.Contains(out, "demo") },
		"service", "ls", "--format", "{{.Name}}")
	for _, what := range [][]string{{"stack", "ls"}, {"network", "ls"}, {"secret", "ls"}} {
		if out := d.ok(append(what, "--format", "{{.Name}}")...); strings.Contains(out, "demo") {
			t.Fatalf("docker %s after stack rm: %q", strings.Join(what, " "), out)
		}
	}

	// A worker dies (SIGKILL): its tasks are replaced on the other nodes;
	// restarted from its data dir, it is back in the cluster and serves the
	// published port again.
	victim := workers[0]
	runningOf(t, d, "web", 4)
	var lost []int // the PIDs of its tasks' processes
	for _, id := range strings.Fields(d.ok("node", "ps", "-q", "--filter", "desired-state=running", victim.Hostname)) {
		lost = append(lost, taskPID(t, d, id))
	}
	if len(lost) == 0 {
		t.Fatalf("%s runs no task to lose", victim.Hostname)
	}
	if err := victim.Stop(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	d.poll(time.Minute, "the worker down", func(out string) bool { return strings.TrimSpace(out) == "down" },
		"node", "inspect", "--format", "{{.Status.State}}", victim.Hostname)
	runningOf(t, d, "web", 4, victim)
	if err := lab.Run(victim); err != nil {
		t.Fatal(err)
	}
	d.poll(time.Minute, "the worker ready again", func(out string) bool { return strings.TrimSpace(out) == "ready" },
		"node", "inspect", "--format", "{{.Status.State}}", victim.Hostname)
	// Back, it stops what it ran before: those tasks run elsewhere now.
	waitfor.Within(t, time.Minute, fmt.Sprintf("the processes of the replaced tasks (%v) gone", lost), func() bool {
		return !slices.ContainsFunc(lost, func(pid int) bool { return syscall.Kill(pid, 0) == nil })
	})
	everyHostAnswers(t, client, nodes, 8080, "")

	// Bad input, through the docker CLI and shoalctl: a clear error naming
	// the problem, and nothing made.
	badInput(t, d, &cliSession{t: t, bin: shoalctl, name: "shoalctl", host: managers[1], log: &script,
		env: []string{"PATH=/usr/bin:/bin", "SHOAL_DATA_DIR=" + managers[1].DataDir}}, dir)

	clitest.MustContain(t, "service rm", d.ok("service", "rm", "web", "reader"), "web", "reader")
	t.Logf("the docker CLI 28.2.2 scenario took %v", time.Since(began).Round(time.Millisecond))

	// The docker.io 20.10 CLI, where installed: the main commands.
	if _, err := os.Stat(dockerCLI20); err != nil {
		t.Logf("the docker.io CLI (20.10) is not installed at %s: its pass is skipped", dockerCLI20)
		return
	}
	if v, _ := exec.Command(dockerCLI20, "--version").Output(); !strings.Contains(string(v), "20.10") {
		t.Logf("%s is not the 20.10 CLI (%q): its pass is skipped", dockerCLI20, v)
		return
	}
	var script20 strings.Builder
	clitest.SaveTranscript(t, "docker-20.10-e2e", &script20)
	old := newDockerCLI(t, dockerCLI20, managers[2], &script20)
	clitest.MustContain(t, "docker 20.10 version", old.ok("version"), "1.41", "Server: Shoal")
	ls = old.ok("node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}")
	if got := sortedLines(ls); len(got) != 5 || strings.Count(ls, "Leader") != 1 || strings.Count(ls, "Reachable") != 2 {
		t.Fatalf("docker 20.10 node ls:\n%s", ls)
	}
	clitest.MustContain(t, "docker 20.10 service create", old.ok("service", "create", "--name", "old", "-p", "8081:80", "--replicas", "2", testimages.WebRef), "converged")
	runningOf(t, old, "old", 2)
	clitest.MustContain(t, "docker 20.10 service scale", old.ok("service", "scale", "old=3"), "converged")
	runningOf(t, old, "old", 3)
	everyHostAnswers(t, client, nodes, 8081, "")
	clitest.MustContain(t, "docker 20.10 --replicas abc", old.fails("service", "create", "--replicas", "abc", testimages.WebRef), `invalid argument "abc" for "--replicas"`)
	clitest.MustContain(t, "docker 20.10 service rm", old.ok("service", "rm", "old"), "old")
}

// badInput sends bad flags, compose files and constraints through the
// docker CLI d and shoalctl s: each is refused with an error naming the
// problem, and no service, stack, network or secret is left of it.
func badInput(t *testing.T, d, s *cliSession, dir string) {
	t.Helper()
	state := func() string {
		var b strings.Builder
		for _, what := range [][]string{{"service", "ls"}, {"network", "ls"}, {"secret", "ls"}, {"config", "ls"}} {
			b.WriteString(d.ok(append(what, "--format", "{{.Name}}")...))
		}
		return b.String()
	}
	before := state()
	malformed := filepath.Join(dir, "malformed.yml")
	writeFile(t, malformed, "services:\n  web:\n    image: "+testimages.WebRef+"\n   ports: [80\n")
	missing := filepath.Join(dir, "missing.yml")
	writeFile(t, missing, "services:\n  web:\n    image: ${WEB_IMAGE:?set WEB_IMAGE to the image to run}\n")
	badConstraint := filepath.Join(dir, "constraint.yml")
	writeFile(t, badConstraint, "services:\n  web:\n    image: "+testimages.WebRef+"\n    deploy:\n      placement:\n        constraints: [node.role=manager]\n")

	for _, c := range []struct {
		what string
		args []string
		d, s []string // the docker CLI's and shoalctl's errors
		// dLeaves is what the docker CLI leaves: it deploys a stack one
		// call at a time, networks first (against dockerd too), so a
		// service refused leaves the stack's network for `stack rm`.
		dLeaves string
	}{
		{"replicas abc", []string{"service", "create", "--name", "bad", "--replicas", "abc", testimages.WebRef},
			[]string{`invalid argument "abc" for "--replicas"`}, []string{`invalid argument "abc" for "--replicas"`}, ""},
		{"mode bogus", []string{"service", "create", "--name", "bad", "--mode", "bogus", testimages.WebRef},
			[]string{"bogus"}, []string{`--mode "bogus": want replicated, global`}, ""},
		{"constraint syntax", []string{"service", "create", "--name", "bad", "--constraint", "node.labels.zone=east", testimages.WebRef},
			[]string{"constraints[0]", "no operator; write KEY==VALUE or KEY!=VALUE"}, []string{"constraints[0]", "no operator"}, ""},
		// The docker CLI parses the file itself and names neither the file
		// nor the right line ("yaml: line 1: did not find expected key").
		{"malformed compose", []string{"stack", "deploy", "-c", malformed, "bad"},
			[]string{"yaml: line", "did not find expected key"}, []string{"malformed.yml", "line 3, column 4: did not find expected key"}, ""},
		{"missing variable", []string{"stack", "deploy", "-c", missing, "bad"},
			[]string{"set WEB_IMAGE to the image to run"}, []string{"WEB_IMAGE", "set WEB_IMAGE to the image to run"}, ""},
		{"constraint in compose", []string{"stack", "deploy", "-c", badConstraint, "bad"},
			[]string{"failed to create service bad_web", "constraints[0]", "no operator"}, []string{"services.web (service bad_web)", "constraints[0]", "no operator"}, "bad_default"},
	} {
		clitest.MustContain(t, "docker: "+c.what, d.fails(c.args...), c.d...)
		if c.dLeaves != "" {
			if after := state(); after == before || !strings.Contains(after, c.dLeaves) {
				t.Fatalf("%s: docker stack deploy left:\n%s\nwant %s more than:\n%s", c.what, after, c.dLeaves, before)
			}
			d.ok("stack", "rm", "bad")
			d.poll(30*time.Second, "the half-deployed stack removed", func(string) bool { return state() == before }, "stack", "ls")
		}
		if after := state(); after != before {
			t.Fatalf("docker: %s: something was left:\nbefore:\n%s\nafter:\n%s", c.what, before, after)
		}
		// shoalctl checks every service of a stack before it makes anything.
		clitest.MustContain(t, "shoalctl: "+c.what, s.fails(c.args...), c.s...)
		if after := state(); after != before {
			t.Fatalf("shoalctl: %s: something was left:\nbefore:\n%s\nafter:\n%s", c.what, before, after)
		}
	}
}

// runningOf waits until svc has n running tasks, none on the hosts in
// not, and returns `service ps` of them (name node image state).
func runningOf(t *testing.T, d *cliSession, svc string, n int, not ...*shoallab.Host) string {
	t.Helper()
	return d.poll(90*time.Second, fmt.Sprintf("%d tasks of %s running", n, svc), func(out string) bool {
		for _, h := range not {
			if strings.Contains(out, " "+h.Hostname+" ") {
				return false
			}
		}
		return strings.Count(out, " Running") == n && len(sortedLines(out)) == n
	}, "service", "ps", "--filter", "desired-state=running", "--format", "{{.Name}} {{.Node}} {{.Image}} {{.CurrentState}}", svc)
}

// everyHostAnswers sends requests from client to port on every host until
// each answers (twice, with version at the end of the answer when set).
func everyHostAnswers(t *testing.T, client *shoallab.Host, hosts []*shoallab.Host, port int, version string) {
	t.Helper()
	ctx := context.Background()
	for _, h := range hosts {
		url := fmt.Sprintf("http://%s:%d/", h.Addr, port)
		var got map[string]int
		var err error
		deadline := time.Now().Add(time.Minute)
		for {
			got, err = answers(ctx, client, url, 4)
			if err == nil && answeredBy(got, version) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no answer of version %q: %v %v", url, version, got, err)
			}
			time.Sleep(300 * time.Millisecond)
		}
		t.Logf("%s (%s) answered by %v", url, h.Hostname, got)
	}
}

// answeredBy reports whether every answer came from a task of version
// (the answer's last field, "" for the first version).
func answeredBy(got map[string]int, version string) bool {
	return len(got) > 0 && !slices.ContainsFunc(keys(got), func(line string) bool {
		f := strings.Fields(line)
		v := ""
		if len(f) == 3 {
			v = f[2]
		}
		return v != version
	})
}

func keys(m map[string]int) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// readInTask reads a file inside the container of svc's running task,
// through /proc/PID/root of its process (the PID from docker inspect).
func readInTask(t *testing.T, d *cliSession, svc, path string) string {
	t.Helper()
	id := strings.Fields(d.poll(time.Minute, svc+" running", func(out string) bool { return strings.TrimSpace(out) != "" },
		"service", "ps", "-q", "--filter", "desired-state=running", svc))[0]
	pid := taskPID(t, d, id)
	file := fmt.Sprintf("/proc/%d/root%s", pid, path)
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("reading %s in task %s (pid %d): %v", path, id, pid, err)
	}
	d.mu.Lock()
	fmt.Fprintf(d.log, "$ cat %s   # the test reads the file in the task's root\n%s\n", file, b)
	d.mu.Unlock()
	return string(b)
}

// taskPID is the PID of the task's process (docker inspect).
func taskPID(t *testing.T, d *cliSession, id string) int {
	t.Helper()
	out := d.poll(time.Minute, "the task's PID", func(out string) bool {
		pid, err := strconv.Atoi(strings.TrimSpace(out))
		return err == nil && pid > 0
	}, "inspect", "--type", "task", "--format", "{{.Status.ContainerStatus.PID}}", id)
	pid, _ := strconv.Atoi(strings.TrimSpace(out))
	return pid
}

// sortedLines is s's non-empty lines, sorted.
func sortedLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	slices.Sort(out)
	return out
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
