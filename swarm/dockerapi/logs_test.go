package dockerapi_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/syncbuf"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/swarmtest"
)

// frames splits a stdcopy stream into its frames: stream byte and payload.
func frames(t *testing.T, b []byte) (out [][2]string) {
	t.Helper()
	for len(b) > 0 {
		if len(b) < 8 || b[1] != 0 || b[2] != 0 || b[3] != 0 {
			t.Fatalf("not a stdcopy frame header: %q", b[:min(8, len(b))])
		}
		n := int(binary.BigEndian.Uint32(b[4:8]))
		if len(b) < 8+n {
			t.Fatalf("a frame of %d bytes with %d left", n, len(b)-8)
		}
		out = append(out, [2]string{fmt.Sprint(b[0]), string(b[8 : 8+n])})
		b = b[8+n:]
	}
	return out
}

// logService starts a service of fake tasks on a TLS cluster, each task
// with two stdout lines (its "started" line and one more) and one stderr
// line, and returns its running tasks.
func logService(t *testing.T, c *swarmtest.TLSCluster, name string, replicas uint64) []*api.Task {
	t.Helper()
	ctx := context.Background()
	cli := c.Client()
	svc, err := cli.CreateService(ctx, api.ServiceSpec{Annotations: api.Annotations{Name: name}, Mode: api.Replicated(replicas),
		TaskTemplate: api.TaskSpec{Image: testImage}})
	if err != nil {
		t.Fatal(err)
	}
	var tasks []*api.Task
	poll(t, "the tasks running", func() bool {
		ts, _ := cli.Tasks(ctx, swarm.Filter{Services: []string{svc.ID}})
		tasks = slices.DeleteFunc(ts, func(tk *api.Task) bool { return tk.Status.State != api.TaskRunning })
		return len(tasks) == int(replicas)
	})
	slices.SortFunc(tasks, func(a, b *api.Task) int { return int(a.Slot) - int(b.Slot) })
	for _, tk := range tasks {
		for _, nm := range c.Names() {
			if c.NodeID(nm) == tk.NodeID {
				e := c.Exec(nm)
				e.Log(tk.ID, "stdout", "hello from slot "+fmt.Sprint(tk.Slot))
				e.Log(tk.ID, "stderr", "oops from slot "+fmt.Sprint(tk.Slot))
			}
		}
	}
	return tasks
}

// The logs endpoints over HTTP: dockerd's stdcopy stream with details and
// timestamps as the CLI parses them, and clear refusals of bad input.
func TestLogsAPI(t *testing.T) {
	c := swarmtest.NewTLS(t, swarmtest.TLSOptions{Managers: 1, Workers: 1})
	e := serve(t, c, "m0")
	tasks := logService(t, c, "talk", 2)

	code, body := e.call(t, "GET", "/v1.50/services/talk/logs?stdout=1&stderr=1&details=1&timestamps=1&tail=2", nil)
	if code != http.StatusOK {
		t.Fatalf("logs: %d %s", code, body)
	}
	fs := frames(t, body)
	if len(fs) != 4 {
		t.Fatalf("tail 2 of 2 tasks: %d frames %q", len(fs), fs)
	}
	for _, tk := range tasks {
		details := "com.docker.swarm.node.id=" + tk.NodeID + ",com.docker.swarm.service.id=" + tk.ServiceID + ",com.docker.swarm.task.id=" + tk.ID
		var got []string
		for _, f := range fs {
			ts, rest, _ := strings.Cut(f[1], " ")
			if _, err := time.Parse("2006-01-02T15:04:05.000000000Z07:00", ts); err != nil || len(ts) != 30 {
				t.Fatalf("timestamp %q: %v", ts, err)
			}
			if d, line, _ := strings.Cut(rest, " "); d == details {
				got = append(got, f[0]+" "+line)
			}
		}
		want := []string{fmt.Sprintf("1 hello from slot %d\n", tk.Slot), fmt.Sprintf("2 oops from slot %d\n", tk.Slot)}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("task %s: frames %q, want %q (all: %q)", tk.ID, got, want, fs)
		}
	}
	// stderr only, no details: bare lines.
	code, body = e.call(t, "GET", "/v1.41/tasks/"+tasks[0].ID+"/logs?stderr=1", nil)
	if fs := frames(t, body); code != 200 || len(fs) != 1 || fs[0] != [2]string{"2", "oops from slot 1\n"} {
		t.Fatalf("task logs, stderr: %d %q", code, body)
	}
	// tail=0 sends nothing.
	if code, body = e.call(t, "GET", "/v1.50/services/talk/logs?stdout=1&tail=0", nil); code != 200 || len(body) != 0 {
		t.Fatalf("tail=0: %d %q", code, body)
	}
	// since after every line: nothing.
	since := fmt.Sprintf("%d.000000001", time.Now().Add(time.Second).Unix())
	if code, body = e.call(t, "GET", "/v1.50/services/talk/logs?stdout=1&since="+since, nil); code != 200 || len(body) != 0 {
		t.Fatalf("since later: %d %q", code, body)
	}
	for _, bad := range []struct{ query, want string }{
		{"stdout=1&tail=abc", `invalid value for tail: "abc"`},
		{"stdout=1&tail=-3", "negative tail values are not supported"},
		{"", "you must choose at least one stream"},
		{"stdout=1&since=yesterday", `invalid value for since: "yesterday"`},
		{"stdout=maybe", "invalid value for stdout"},
	} {
		code, body := e.call(t, "GET", "/v1.50/services/talk/logs?"+bad.query, nil)
		wantError(t, bad.query, code, body, http.StatusBadRequest, bad.want)
	}
	code, body = e.call(t, "GET", "/v1.50/services/nope/logs?stdout=1", nil)
	wantError(t, "an unknown service", code, body, http.StatusNotFound, "service nope not found")
	code, body = e.call(t, "GET", "/v1.50/tasks/nope/logs?stdout=1", nil)
	wantError(t, "an unknown task", code, body, http.StatusNotFound, "nope")
}

// docker service logs, with the CLI 28.2.2 and the 20.10 one: the
// prefix NAME.SLOT.TASKID@NODE, stderr lines on stderr, tail per task,
// timestamps, task logs, follow, a task on a node that is gone, and bad
// input.
func TestDockerCLIServiceLogs(t *testing.T) {
	for _, cli := range []struct{ name, bin, what string }{
		{"docker-28.2.2-logs", dockerCLI28, "the docker CLI 28.2.2"},
		{"docker-20.10-logs", dockerCLI20, "the docker.io package's CLI (20.10)"},
	} {
		t.Run(cli.name, func(t *testing.T) {
			bin := findCLI(t, cli.bin, cli.what)
			c := swarmtest.NewTLS(t, swarmtest.TLSOptions{Managers: 1, Workers: 1})
			e := serve(t, c, "m0")
			var script strings.Builder
			saveTranscript(t, cli.name, &script)
			d := newCLI(t, bin, e, &script)
			tasks := logService(t, c, "talk", 2)
			prefix := func(tk *api.Task) string {
				n, err := c.Client().Node(context.Background(), tk.NodeID)
				if err != nil {
					t.Fatal(err)
				}
				return fmt.Sprintf("talk.%d.%s@%s", tk.Slot, tk.ID[:12], n.Description.Hostname)
			}

			out, errOut, err := d.run("service", "logs", "talk")
			if err != nil {
				t.Fatalf("service logs: %v\n%s", err, errOut)
			}
			for _, tk := range tasks {
				mustContain(t, "service logs (stdout)", out, prefix(tk)+"    | started "+tk.ID, fmt.Sprintf("%s    | hello from slot %d", prefix(tk), tk.Slot))
				mustContain(t, "service logs (stderr)", errOut, fmt.Sprintf("%s    | oops from slot %d", prefix(tk), tk.Slot))
			}
			out = d.ok("service", "logs", "--tail", "2", "--no-task-ids", "talk")
			if strings.Contains(out, "started") || strings.Count(out, "hello from slot") != 2 {
				t.Fatalf("service logs --tail 2:\n%s", out)
			}
			out = d.ok("service", "logs", "-t", "--raw", tasks[1].ID)
			if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 || !strings.HasSuffix(lines[1], " hello from slot 2") || !strings.HasPrefix(lines[1], time.Now().UTC().Format("2006-")) {
				t.Fatalf("service logs -t --raw TASK:\n%s", out)
			}

			// Follow: a line printed after the command started comes.
			fo := &syncbuf.Buffer{}
			f := exec.Command(bin, "service", "logs", "-f", "--tail", "0", "talk")
			f.Env, f.Stdout, f.Stderr = d.env, fo, fo
			if err := f.Start(); err != nil {
				t.Fatal(err)
			}
			fDone := make(chan error, 1)
			go func() { fDone <- f.Wait() }()
			t.Cleanup(func() {
				f.Process.Kill()
				<-fDone
			})
			poll(t, "a line printed during docker service logs -f", func() bool {
				c.Exec(execName(c, tasks[0].NodeID)).Log(tasks[0].ID, "stdout", "followed line")
				return strings.Contains(fo.String(), prefix(tasks[0])+"    | followed line")
			})
			fmt.Fprintf(&script, "$ docker service logs -f --tail 0 talk   # in the background, while the task prints \"followed line\"\n%s\n", foldRepeats(fo.String()))
			// The CLI goes away (interrupted): the leader forgets the
			// request, and the nodes stop reading for it.
			f.Process.Signal(syscall.SIGINT)
			select {
			case err := <-fDone:
				fDone <- err // for the cleanup
			case <-time.After(10 * time.Second):
				// What is under test is the server noticing its client
				// is gone, not how the CLI takes SIGINT: gone it is.
				t.Logf("docker service logs -f still running 10 s after SIGINT: killed")
				f.Process.Kill()
			}
			poll(t, "the follow forgotten when its CLI went away", func() bool {
				return c.Node("m0").Manager().Stats().LogRequests == 0 && c.Node("m0").Worker().LogReads() == 0
			})

			// Bad input.
			mustContain(t, "an unknown service", d.fails("service", "logs", "nope"), "no such task or service: nope")
			mustContain(t, "tail abc", d.fails("service", "logs", "--tail", "abc", "talk"), `invalid value for tail: "abc"`)

			// The worker goes away: the manager's task is read, the
			// worker's is named as not read.
			var onWorker *api.Task
			for _, tk := range tasks {
				if nodeName(c, tk.NodeID) == "node0" {
					onWorker = tk
				}
			}
			if onWorker == nil {
				t.Skip("no task on the worker")
			}
			c.Kill("node0")
			poll(t, "the worker down", func() bool {
				n, err := c.Client().Node(context.Background(), onWorker.NodeID)
				return err == nil && n.Status.State == api.NodeDown
			})
			out, errOut, err = d.run("service", "logs", "talk")
			if err == nil {
				t.Fatalf("service logs with a node down succeeded:\n%s", out)
			}
			mustContain(t, "service logs with a node down", errOut, "incomplete log stream", onWorker.ID, "node "+onWorker.NodeID+" is down")
			for _, tk := range tasks {
				if tk != onWorker {
					mustContain(t, "service logs with a node down", out, prefix(tk)+"    | hello from slot")
				}
			}
		})
	}
}

func nodeName(c *swarmtest.TLSCluster, id string) string {
	for _, nm := range c.Names() {
		if c.NodeID(nm) == id {
			return nm
		}
	}
	return ""
}

func execName(c *swarmtest.TLSCluster, id string) string { return nodeName(c, id) }
