package dockerapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/internal/clitest"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/dockerapi"
	"github.com/shoalproject/shoal/swarm/swarmtest"
)

// apiEnv is a TLS cluster with the Docker API of one of its nodes served
// on a unix socket in the test's temp dir.
type apiEnv struct {
	c    *swarmtest.TLSCluster
	h    *dockerapi.Handler
	sock string
	http *http.Client
}

// serve serves the Docker API of the node called name on a new socket.
func serve(t *testing.T, c *swarmtest.TLSCluster, name string) *apiEnv {
	t.Helper()
	h, err := dockerapi.ForNode(c.Node(name))
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv("SHOAL_DOCKERAPI_DEBUG") != "" {
		h.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	sock := filepath.Join(t.TempDir(), "docker.sock") // under 108 bytes, as a socket path must be
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	t.Cleanup(hc.CloseIdleConnections)
	return &apiEnv{c: c, h: h, sock: sock, http: hc}
}

// joinWorker joins one more worker to c with a listen address of its own,
// so that it can manage once promoted (the kit's workers have none).
func joinWorker(t *testing.T, c *swarmtest.TLSCluster) *swarm.Node {
	t.Helper()
	ctx := context.Background()
	cl, err := c.Client().Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e := &agent.FakeExecutor{}
	n := &swarm.Node{Dir: t.TempDir(), ListenAddr: "127.0.0.1:0", Executor: e, HeartbeatPeriod: swarmtest.DefaultHeartbeatPeriod,
		Raft: swarm.RaftTuning{HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond}}
	if err := n.Join(ctx, cl.JoinTokens.Worker, c.Node("m0").Addr()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n.Close()
		e.ExitAll()
	})
	select {
	case <-n.Ready():
	case <-time.After(time.Minute):
		t.Fatal("the joined worker is not ready")
	}
	return n
}

// call sends a request to the API and returns the status and body.
func (e *apiEnv) call(t *testing.T, method, path string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, "http://docker"+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", method, path, err)
	}
	return resp.StatusCode, out
}

// get decodes a 200 answer into out.
func (e *apiEnv) get(t *testing.T, path string, out any) {
	t.Helper()
	code, body := e.call(t, http.MethodGet, path, nil)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, code, body)
	}
	reflect.ValueOf(out).Elem().SetZero() // no fields left from an earlier answer
	if err := json.Unmarshal(body, out); err != nil {
		t.Fatalf("GET %s: %v in %s", path, err, body)
	}
}

// wantError checks an error answer: its status and a part of its
// message, in Docker's {"message": ...}.
func wantError(t *testing.T, what string, code int, body []byte, status int, part string) {
	t.Helper()
	var e struct{ Message string }
	if err := json.Unmarshal(body, &e); err != nil || e.Message == "" {
		t.Fatalf("%s: answer %d %q is not Docker's error JSON", what, code, body)
	}
	if code != status || !strings.Contains(e.Message, part) {
		t.Fatalf("%s: got %d %q, want %d with %q", what, code, e.Message, status, part)
	}
}

// dockerCLI runs a docker binary against an apiEnv, with a private
// config dir, and keeps a transcript of the session.
type dockerCLI struct {
	t      *testing.T
	bin    string
	env    []string
	mu     sync.Mutex
	script *strings.Builder
}

// findCLI returns the docker binary at path, or skips the test saying so.
func findCLI(t *testing.T, path, what string) string {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Skipf("%s is not installed at %s (%v): skipping its session", what, path, err)
	}
	return path
}

func newCLI(t *testing.T, bin string, e *apiEnv, script *strings.Builder) *dockerCLI {
	return newCLIEnv(t, bin, script, "DOCKER_HOST=unix://"+e.sock)
}

// newCLIEnv is a docker CLI with env (DOCKER_HOST and the like) added.
func newCLIEnv(t *testing.T, bin string, script *strings.Builder, env ...string) *dockerCLI {
	cfg := t.TempDir()
	return &dockerCLI{t: t, bin: bin, script: script, env: append([]string{
		"DOCKER_CONFIG=" + cfg, "HOME=" + cfg, "PATH=/usr/bin:/bin",
		"DOCKER_CLI_HINTS=false", "NO_COLOR=1", "TERM=dumb",
	}, env...)}
}

// run runs docker with args (no shell) and returns its output; the
// transcript gets the command and what it printed, repeated progress
// lines folded.
func (d *dockerCLI) run(args ...string) (stdout, stderr string, err error) {
	d.t.Helper()
	return d.runIn("", args...)
}

// runIn is run with stdin.
func (d *dockerCLI) runIn(stdin string, args ...string) (stdout, stderr string, err error) {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.bin, args...)
	cmd.Env = d.env
	cmd.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	d.record(args, o.String(), e.String(), err)
	return o.String(), e.String(), err
}

func (d *dockerCLI) record(args []string, stdout, stderr string, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Fprintf(d.script, "$ %s %s\n", filepath.Base(d.bin), shellQuote(args))
	d.script.WriteString(foldRepeats(stdout))
	d.script.WriteString(foldRepeats(stderr))
	if err != nil {
		fmt.Fprintf(d.script, "[exit: %v]\n", err)
	}
	d.script.WriteString("\n")
}

// ok runs docker and fails the test unless it succeeds.
func (d *dockerCLI) ok(args ...string) string {
	d.t.Helper()
	out, errOut, err := d.run(args...)
	if err != nil {
		d.t.Fatalf("docker %s: %v\nstdout:\n%s\nstderr:\n%s", shellQuote(args), err, out, errOut)
	}
	return out
}

// okIn is ok with stdin.
func (d *dockerCLI) okIn(stdin string, args ...string) string {
	d.t.Helper()
	out, errOut, err := d.runIn(stdin, args...)
	if err != nil {
		d.t.Fatalf("docker %s: %v\nstdout:\n%s\nstderr:\n%s", shellQuote(args), err, out, errOut)
	}
	return out
}

// writeFile writes a test's file.
func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// fails runs docker, wants it to fail, and returns what it printed on
// stderr.
func (d *dockerCLI) fails(args ...string) string {
	d.t.Helper()
	out, errOut, err := d.run(args...)
	if err == nil {
		d.t.Fatalf("docker %s succeeded, want an error\nstdout:\n%s", shellQuote(args), out)
	}
	return errOut
}

func shellQuote(args []string) string { return clitest.ShellQuote(args) }

// foldRepeats folds runs of equal lines ("verify: Waiting 4 seconds ...")
// into one with a count.
func foldRepeats(s string) string { return clitest.FoldRepeats(s) }

// mustContain fails unless s holds every part.
func mustContain(t *testing.T, what, s string, parts ...string) {
	t.Helper()
	clitest.MustContain(t, what, s, parts...)
}

func saveTranscript(t *testing.T, name string, log *strings.Builder) {
	clitest.SaveTranscript(t, name, log)
}

// poll waits for cond, failing after a minute.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
