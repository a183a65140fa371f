package dockerapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	dswarm "github.com/moby/moby/api/types/swarm"

	"github.com/shoalproject/shoal/swarm/swarmtest"
)

// The stock docker CLIs drive a Shoal cluster through the handler: the
// docker CLI 28.2.2 (API 1.50) through the whole session, the CLI of
// Debian's docker.io 20.10 (API 1.41) through the main commands.

const (
	dockerCLI28  = "/usr/local/bin/docker"
	dockerCLI20  = "/usr/bin/docker"
	testImage    = "busybox:1.36" // a name only: the fake executors run anything
	updatedImage = "busybox:1.37"
)

func TestDockerCLI(t *testing.T) {
	bin := findCLI(t, dockerCLI28, "the docker CLI 28.2.2")
	if testing.Short() {
		t.Skip("a docker CLI session of about two minutes")
	}
	c := swarmtest.NewTLS(t, swarmtest.TLSOptions{Managers: 1, Workers: 1})
	e := serve(t, c, "m0")
	var script strings.Builder
	saveTranscript(t, "docker-28.2.2", &script)
	d := newCLI(t, bin, e, &script)
	node1 := joinWorker(t, c).ID() // promotable: it has a listen address
	m0, node0 := c.NodeID("m0"), c.NodeID("node0")

	mustContain(t, "docker version", d.ok("version"), "Server: Shoal", "1.50 (minimum version 1.24)")
	mustContain(t, "docker info", d.ok("info"), "Swarm: active", "NodeID: "+m0, "Is Manager: true", "Managers: 1", "Nodes: 3")
	ls := d.ok("node", "ls")
	mustContain(t, "docker node ls", ls, m0+" *", "Leader", node0, node1)

	// docker events, from now until the session stops it.
	var events bytes.Buffer
	ev := exec.Command(bin, "events", "--format", "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}")
	ev.Env, ev.Stdout, ev.Stderr = d.env, &events, &events
	if err := ev.Start(); err != nil {
		t.Fatal(err)
	}
	evDone := make(chan error, 1)
	go func() { evDone <- ev.Wait() }()
	t.Cleanup(func() {
		ev.Process.Kill()
		<-evDone
	})
	time.Sleep(500 * time.Millisecond) // the stream is open

	// Create: the progress display polls tasks until they run, then waits
	// for them to stay up.
	out := d.ok("service", "create", "--replicas", "3", "--name", "web", "-p", "8080:80", testImage)
	mustContain(t, "service create", out, "overall progress: 3 out of 3 tasks", "converged")
	mustContain(t, "service ls", d.ok("service", "ls"), "web", "replicated", "3/3", testImage, "*:8080->80/tcp")
	ps := d.ok("service", "ps", "web")
	if n := strings.Count(ps, "Running"); n != 6 { // DESIRED and CURRENT
		t.Fatalf("service ps web: want 3 running tasks:\n%s", ps)
	}
	before := strings.Fields(d.ok("service", "ps", "-q", "-f", "desired-state=running", "web"))

	// Scale: new tasks only; the three stay (no rolling update).
	mustContain(t, "service scale", d.ok("service", "scale", "web=5"), "web scaled to 5", "converged")
	after := strings.Fields(d.ok("service", "ps", "-q", "-f", "desired-state=running", "web"))
	for _, id := range before {
		if !slices.Contains(after, id) {
			t.Fatalf("scaling replaced task %s: before %v, after %v", id, before, after)
		}
	}
	mustContain(t, "service ls", d.ok("service", "ls"), "5/5")

	// Update the image: a rolling update, one task at a time.
	mustContain(t, "service update", d.ok("service", "update", "--image", updatedImage, "web"), "converged")
	ps = d.ok("service", "ps", "web")
	if strings.Count(ps, updatedImage) != 5 || !strings.Contains(ps, `\_ web.1`) {
		t.Fatalf("service ps after update: want 5 tasks of %s and the old ones as history:\n%s", updatedImage, ps)
	}

	// Roll back to the previous spec.
	mustContain(t, "service rollback", d.ok("service", "rollback", "web"), "rollback", "converged")
	var inspected []dswarm.Service
	if err := json.Unmarshal([]byte(d.ok("service", "inspect", "web")), &inspected); err != nil || len(inspected) != 1 {
		t.Fatalf("service inspect: %v", err)
	}
	s := inspected[0]
	if s.Spec.Name != "web" || s.Spec.TaskTemplate.ContainerSpec.Image != testImage || *s.Spec.Mode.Replicated.Replicas != 5 ||
		s.PreviousSpec == nil || s.PreviousSpec.TaskTemplate.ContainerSpec.Image != updatedImage ||
		len(s.Endpoint.Ports) != 1 || s.Endpoint.Ports[0].PublishedPort != 8080 {
		t.Fatalf("service inspect after rollback: %+v", s)
	}
	mustContain(t, "service inspect --pretty", d.ok("service", "inspect", "--pretty", "web"), "Replicas:\t5", "rollback_completed")

	// Nodes: drain, promote and demote, labels.
	mustContain(t, "node update", d.ok("node", "update", "--availability", "drain", node0), node0)
	mustContain(t, "node ls", d.ok("node", "ls"), "Drain")
	poll(t, "no web task running on the drained node", func() bool {
		return !strings.Contains(d.ok("node", "ps", "-f", "desired-state=running", node0), "web.")
	})
	d.ok("node", "update", "--availability", "active", "--label-add", "zone=east", node0)
	mustContain(t, "node inspect", d.ok("node", "inspect", "--format", "{{.Spec.Availability}} {{.Spec.Labels}}", node0), "active map[zone:east]")
	mustContain(t, "node promote", d.ok("node", "promote", node1), "promoted to a manager")
	poll(t, "the promoted node reachable in Raft", func() bool {
		return strings.TrimSpace(d.ok("node", "inspect", "--format", "{{if .ManagerStatus}}{{.ManagerStatus.Reachability}}{{end}}", node1)) == "reachable"
	})
	mustContain(t, "node ls", d.ok("node", "ls"), "Reachable")
	mustContain(t, "node demote", d.ok("node", "demote", node1), "demoted")
	poll(t, "the demoted node out of Raft", func() bool {
		return strings.TrimSpace(d.ok("node", "inspect", "--format", "{{if .ManagerStatus}}manager{{else}}worker{{end}}", node1)) == "worker"
	})

	// Join tokens.
	jt := d.ok("swarm", "join-token", "worker")
	mustContain(t, "swarm join-token", jt, "docker swarm join --token SWMTKN-1-", c.Node("m0").Addr())
	mustContain(t, "swarm update", d.ok("swarm", "update", "--task-history-limit", "3"), "Swarm updated.")
	mustContain(t, "info", d.ok("info"), "Task History Retention Limit: 3")

	// Bad input: clear errors, from the CLI or from Shoal.
	mustContain(t, "replicas -1", d.fails("service", "create", "--replicas", "-1", "--name", "bad", testImage), `invalid argument "-1" for "--replicas"`)
	mustContain(t, "a constraint without an operator", d.fails("service", "create", "--name", "bad", "--constraint", "node.labels.zone=east", testImage),
		"Error response from daemon: invalid spec: spec.taskTemplate.placement.constraints[0]", "no operator; write KEY==VALUE or KEY!=VALUE")
	mustContain(t, "an unknown constraint key", d.fails("service", "create", "--name", "bad", "--constraint", "node.zone==east", testImage), `unknown key "node.zone"`)
	mustContain(t, "unsupported flags", d.fails("service", "create", "--name", "bad", "--tty", "--group", "staff", testImage),
		"not supported by Shoal: TaskTemplate.ContainerSpec.Groups (--group), TaskTemplate.ContainerSpec.TTY (--tty)")
	mustContain(t, "a name in use", d.fails("service", "create", "--detach", "--name", "web", testImage), `service "web" exists`)
	mustContain(t, "docker run", d.fails("run", "--rm", testImage, "true"), "not supported by Shoal: POST /containers/create")
	mustContain(t, "docker service logs", d.ok("service", "logs", "--tail", "1", "web"), "web.1.", "| started ")
	mustContain(t, "docker swarm init", d.fails("swarm", "init"), "already part of a swarm")
	mustContain(t, "an unknown service", d.fails("service", "inspect", "nope"), "no such service: nope")

	// Remove the service; remove a node once it is down.
	mustContain(t, "service rm", d.ok("service", "rm", "web"), "web")
	if out := d.ok("service", "ls", "-q"); strings.TrimSpace(out) != "" {
		t.Fatalf("service ls after rm: %q", out)
	}
	mustContain(t, "node rm of a node that is up", d.fails("node", "rm", node0), "is up")
	c.Kill("node0")
	poll(t, "the killed node down", func() bool {
		return strings.TrimSpace(d.ok("node", "inspect", "--format", "{{.Status.State}}", node0)) == "down"
	})
	d.ok("node", "rm", node0)
	if out := d.ok("node", "ls", "-q"); strings.Contains(out, node0) {
		t.Fatalf("node ls after rm: %q", out)
	}

	// The events seen meanwhile.
	ev.Process.Signal(syscall.SIGTERM)
	select {
	case <-evDone:
	case <-time.After(10 * time.Second):
		t.Fatal("docker events did not stop")
	}
	evDone <- nil
	fmt.Fprintf(&script, "$ docker events --format '{{.Type}} {{.Action}} {{.Actor.Attributes.name}}'   # started before the service create, stopped here\n%s\n", foldRepeats(events.String()))
	mustContain(t, "docker events", events.String(), "service create web", "service update web", "service remove web", "node update", "node remove")
}

// The older CLI of Debian's docker.io (20.10, API 1.41) negotiates down
// and drives the main commands.
func TestDockerCLI20(t *testing.T) {
	bin := findCLI(t, dockerCLI20, "the docker.io package's CLI (20.10)")
	if testing.Short() {
		t.Skip("a docker CLI session of about a minute")
	}
	out, err := exec.CommandContext(context.Background(), bin, "--version").Output()
	if err != nil || !strings.Contains(string(out), "20.10") {
		t.Skipf("%s is not the 20.10 CLI (%q, %v)", bin, out, err)
	}
	c := swarmtest.NewTLS(t, swarmtest.TLSOptions{Managers: 1, Workers: 1})
	e := serve(t, c, "m0")
	var script strings.Builder
	saveTranscript(t, "docker-20.10", &script)
	d := newCLI(t, bin, e, &script)

	mustContain(t, "docker version", d.ok("version"), "1.41", "Server: Shoal")
	mustContain(t, "docker info", d.ok("info"), "Swarm: active", "Is Manager: true", "Nodes: 2")
	mustContain(t, "docker node ls", d.ok("node", "ls"), c.NodeID("m0")+" *", "Leader")
	mustContain(t, "service create", d.ok("service", "create", "--replicas", "2", "--name", "old", "-p", "8081:80", testImage), "converged")
	mustContain(t, "service ls", d.ok("service", "ls"), "old", "2/2", "*:8081->80/tcp")
	mustContain(t, "service ps", d.ok("service", "ps", "old"), "old.1", "old.2", "Running")
	mustContain(t, "service scale", d.ok("service", "scale", "old=3"), "converged")
	mustContain(t, "service update", d.ok("service", "update", "--image", updatedImage, "old"), "converged")
	mustContain(t, "service rollback", d.ok("service", "rollback", "old"), "converged")
	mustContain(t, "service inspect", d.ok("service", "inspect", "--format", "{{.Spec.TaskTemplate.ContainerSpec.Image}} {{.Spec.Mode.Replicated.Replicas}}", "old"), testImage+" 3")
	mustContain(t, "swarm join-token", d.ok("swarm", "join-token", "manager"), "docker swarm join --token SWMTKN-1-")
	mustContain(t, "unsupported flags", d.fails("service", "create", "--name", "bad", "--dns", "192.0.2.53", testImage), "TaskTemplate.ContainerSpec.DNSConfig")
	mustContain(t, "service rm", d.ok("service", "rm", "old"), "old")
	mustContain(t, "docker run", d.fails("run", testImage), "not supported by Shoal: POST /containers/create")
}
