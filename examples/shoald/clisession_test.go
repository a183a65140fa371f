package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/clitest"
	"github.com/shoalproject/shoal/internal/shoallab"
)

// The stock docker CLIs the end-to-end tests drive shoald with: the
// docker CLI 28.2.2 (API 1.50) and the CLI of Debian's docker.io package
// (20.10, API 1.41), as swarm/dockerapi's tests find them.
const (
	dockerCLI28 = "/usr/local/bin/docker"
	dockerCLI20 = "/usr/bin/docker"
)

// cliSession runs a command line tool (the docker CLI on a shoald's
// socket, or shoalctl inside a host's network namespace) and keeps a
// transcript of what it ran and printed.
type cliSession struct {
	t    *testing.T
	bin  string
	name string         // as the transcript shows it
	host *shoallab.Host // shoalctl: the host it runs on (its namespace)
	mu   sync.Mutex
	env  []string
	log  *strings.Builder
}

// newDockerCLI is a session of the docker binary at bin on h's shoald, with
// a private config dir.
func newDockerCLI(t *testing.T, bin string, h *shoallab.Host, log *strings.Builder) *cliSession {
	cfg := t.TempDir()
	d := &cliSession{t: t, bin: bin, name: "docker", log: log, env: []string{
		"DOCKER_CONFIG=" + cfg, "HOME=" + cfg, "PATH=/usr/bin:/bin",
		"DOCKER_CLI_HINTS=false", "NO_COLOR=1", "TERM=dumb",
	}}
	d.use(h)
	return d
}

// use points a docker session at h's shoald.
func (d *cliSession) use(h *shoallab.Host) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.env = append(d.env, "DOCKER_HOST=unix://"+h.DockerSocket())
	fmt.Fprintf(d.log, "$ export DOCKER_HOST=unix://%s   # %s's shoald\n\n", h.DockerSocket(), h.Hostname)
}

// run runs the tool with args and returns what it printed; stdin is its
// input.
func (d *cliSession) runIn(stdin string, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := d.command(ctx, args)
	cmd.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	d.record(args, o.String(), e.String(), err)
	return o.String(), e.String(), err
}

// quiet runs the tool without a transcript entry (polls).
func (d *cliSession) quiet(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := d.command(ctx, args).CombinedOutput()
	return string(out), err
}

// command is the tool's command line, in the host's namespace for
// shoalctl.
func (d *cliSession) command(ctx context.Context, args []string) *exec.Cmd {
	var cmd *exec.Cmd
	if d.host != nil {
		cmd = d.host.Command(ctx, d.bin, args...)
	} else {
		cmd = exec.CommandContext(ctx, d.bin, args...)
	}
	d.mu.Lock()
	cmd.Env = append([]string(nil), d.env...)
	d.mu.Unlock()
	return cmd
}

func (d *cliSession) record(args []string, stdout, stderr string, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Fprintf(d.log, "$ %s %s\n", d.name, clitest.ShellQuote(args))
	d.log.WriteString(clitest.FoldRepeats(stdout))
	d.log.WriteString(clitest.FoldRepeats(stderr))
	if err != nil {
		fmt.Fprintf(d.log, "[exit: %v]\n", err)
	}
	d.log.WriteString("\n")
}

// ok runs the tool and fails the test unless it succeeds.
func (d *cliSession) ok(args ...string) string {
	d.t.Helper()
	return d.okIn("", args...)
}

func (d *cliSession) okIn(stdin string, args ...string) string {
	d.t.Helper()
	out, errOut, err := d.runIn(stdin, args...)
	if err != nil {
		d.t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", d.name, clitest.ShellQuote(args), err, out, errOut)
	}
	return out
}

// fails runs the tool, wants it to fail, and returns what it printed on
// stderr.
func (d *cliSession) fails(args ...string) string {
	d.t.Helper()
	out, errOut, err := d.runIn("", args...)
	if err == nil {
		d.t.Fatalf("%s %s succeeded, want an error\nstdout:\n%s", d.name, clitest.ShellQuote(args), out)
	}
	return errOut
}

// poll runs the tool every 300 ms until cond holds on what it printed,
// failing the test after timeout with the last output.
func (d *cliSession) poll(timeout time.Duration, what string, cond func(out string) bool, args ...string) string {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		out, err := d.quiet(args...)
		if err == nil && cond(out) {
			d.record(args, out, "", nil)
			return out
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("timed out after %v waiting for %s; last %s %s: %v\n%s", timeout, what, d.name, clitest.ShellQuote(args), err, out)
		}
		time.Sleep(300 * time.Millisecond)
	}
}
