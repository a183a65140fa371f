package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/ca"
)

// Child processes. Every process the bench starts is in its own process
// group, dies with the bench (Pdeathsig, and a node child exits when its
// stdin closes), and is tracked by PID until reaped, so that killAll can
// end whatever is left, by PID, on any way out of run.

// proc is one child running a swarm.Node (the hidden "node" subcommand).
type proc struct {
	name  string
	dir   string
	cmd   *exec.Cmd
	pid   int
	stdin io.WriteCloser
	lines chan string   // the child's stdout, a JSON object a line
	done  chan struct{} // closed once the child is reaped
	hello hello

	askMu sync.Mutex
	tlsMu sync.Mutex
	tls   *tls.Config
}

// hello is what a node child prints once its node is ready.
type hello struct {
	ID   string `json:"id"`
	Addr string `json:"addr"`
	Role string `json:"role"`
	PID  int    `json:"pid"`
}

// nodeStatus is a node child's answer to "status".
type nodeStatus struct {
	Leader bool   `json:"leader"`
	Term   uint64 `json:"term"`
	Voters int    `json:"voters"`
	// The Go runtime's view of the child's memory (MB) and goroutines.
	HeapInuse  uint64 `json:"heapInuse"`
	StackInuse uint64 `json:"stackInuse"`
	GoSys      uint64 `json:"goSys"`
	Goroutines int    `json:"goroutines"`
	Err        string `json:"err,omitempty"`
}

// track and untrack keep the PIDs of live children.
func (b *bench) track(pid int, done <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.children[pid] = done
}

func (b *bench) untrack(pid int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.children, pid)
}

// killAll kills every child still alive (its process group, by PID) and
// waits until each is reaped.
func (b *bench) killAll() {
	b.mu.Lock()
	kids := make(map[int]<-chan struct{}, len(b.children))
	for pid, done := range b.children {
		kids[pid] = done
	}
	b.mu.Unlock()
	for pid := range kids {
		syscall.Kill(-pid, syscall.SIGKILL)
	}
	for pid, done := range kids {
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			fmt.Fprintf(os.Stderr, "clusterbench: child %d not reaped\n", pid)
		}
	}
}

// childAttr puts a child in its own process group and kills it if the
// bench dies.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// runTracked runs a command to completion as a tracked child and returns
// its output and resource usage.
func (b *bench) runTracked(ctx context.Context, cmd *exec.Cmd) ([]byte, *syscall.Rusage, error) {
	var out strings.Builder
	cmd.Stdout = &out
	if cmd.Stderr == nil {
		cmd.Stderr = os.Stderr
	}
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	done := make(chan struct{})
	pid := cmd.Process.Pid
	b.track(pid, done)
	waited := make(chan error, 1)
	go func() {
		waited <- cmd.Wait()
		close(done)
		b.untrack(pid)
	}()
	var err error
	select {
	case err = <-waited:
	case <-ctx.Done():
		syscall.Kill(-pid, syscall.SIGKILL)
		<-waited
		err = ctx.Err()
	}
	ru, _ := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	return []byte(out.String()), ru, err
}

// spawn starts a node child on dir with the given node arguments and
// waits until its node is ready.
func (b *bench) spawn(ctx context.Context, name, dir string, args ...string) (*proc, error) {
	if err := os.MkdirAll(filepath.Join(b.tmp, "logs"), 0o700); err != nil {
		return nil, err
	}
	logPath := filepath.Join(b.tmp, "logs", name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(b.self, append([]string{nodeCmd, "-dir", dir}, args...)...)
	cmd.Stderr = logf
	cmd.SysProcAttr = childAttr()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{name: name, dir: dir, cmd: cmd, pid: cmd.Process.Pid, stdin: stdin, lines: make(chan string, 16), done: make(chan struct{})}
	b.track(p.pid, p.done)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case p.lines <- sc.Text():
			default: // nobody asked: drop it
			}
		}
		cmd.Wait()
		close(p.done)
		b.untrack(p.pid)
	}()
	fail := func(err error) (*proc, error) {
		p.kill()
		return nil, fmt.Errorf("node %s: %w (log: %s)", name, err, logPath)
	}
	select {
	case line := <-p.lines:
		if err := json.Unmarshal([]byte(line), &p.hello); err != nil || p.hello.ID == "" {
			return fail(fmt.Errorf("said %q", line))
		}
	case <-p.done:
		return fail(errors.New("exited before it was ready"))
	case <-time.After(2 * time.Minute):
		return fail(errors.New("not ready after 2 minutes"))
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	return p, nil
}

// ask sends a command line to a node child and decodes its answer.
func (p *proc) ask(ctx context.Context, line string, out any) error {
	p.askMu.Lock()
	defer p.askMu.Unlock()
	for len(p.lines) > 0 {
		<-p.lines
	}
	if _, err := fmt.Fprintln(p.stdin, line); err != nil {
		return fmt.Errorf("node %s: %w", p.name, err)
	}
	select {
	case l := <-p.lines:
		return json.Unmarshal([]byte(l), out)
	case <-p.done:
		return fmt.Errorf("node %s exited", p.name)
	case <-time.After(2 * time.Minute):
		return fmt.Errorf("node %s: no answer to %q", p.name, line)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *proc) status(ctx context.Context) (nodeStatus, error) {
	var st nodeStatus
	err := p.ask(ctx, "status", &st)
	if err == nil && st.Err != "" {
		err = errors.New(st.Err)
	}
	return st, err
}

// kill sends SIGKILL to the child's PID (a crash, as kill -9) and waits
// until it is reaped.
func (p *proc) kill() {
	syscall.Kill(p.pid, syscall.SIGKILL)
	<-p.done
}

// stop asks the child to exit (its stdin closes) and kills it if it does
// not within a few seconds.
func (p *proc) stop() {
	p.stdin.Close()
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		syscall.Kill(-p.pid, syscall.SIGKILL)
		<-p.done
	}
}

// alive reports whether the child still runs.
func (p *proc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// clientTLS is a manager child's certificate as a client TLS config, read
// from its data dir: the bench drives the cluster as that manager.
func (p *proc) clientTLS() (*tls.Config, error) {
	p.tlsMu.Lock()
	defer p.tlsMu.Unlock()
	if p.tls == nil {
		cert, root, err := ca.Files{Dir: p.dir}.Load()
		if err != nil {
			return nil, fmt.Errorf("node %s's certificate: %w", p.name, err)
		}
		p.tls = ca.ClientConfig(cert, root, ca.RoleManager)
	}
	return p.tls, nil
}

// client is a control API client through this manager only.
func (p *proc) client() (*swarm.Client, error) {
	conf, err := p.clientTLS()
	if err != nil {
		return nil, err
	}
	return &swarm.Client{Addrs: []string{p.hello.Addr}, TLS: conf}, nil
}

// cpuTicks is a process's user+system CPU time in clock ticks, from
// /proc/PID/stat.
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	f := strings.Fields(s[i+1:])
	// After the command: state(0) ppid pgrp session tty tpgid flags minflt
	// cminflt majflt cmajflt utime(11) stime(12).
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	return u + st, nil
}

// clockTick is USER_HZ, the unit of /proc/PID/stat times on Linux.
const clockTick = 100

// openFDs counts a process's open file descriptors.
func openFDs(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(ents)
}
