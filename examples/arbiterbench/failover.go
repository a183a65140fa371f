package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/ca"
)

// The failover figure, with the real binaries on loopback: two managers
// (`shoald init` and `shoald join`, no tasks) and `shoald arbiter`, each a
// process. Each trial kills the leader with SIGKILL and times how long
// until a write (a label update of a service) is accepted through the
// surviving manager; the dead manager then restarts from its data dir
// (`shoald run`) before the next trial.

// shoaldProc is one shoald process of the bench.
type shoaldProc struct {
	dir, addr string
	metrics   string // a manager's metrics address
	args      []string
	cmd       *exec.Cmd
	log       *os.File
}

func (p *shoaldProc) start(bin string, args ...string) error {
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = p.log, p.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	p.cmd = cmd
	return nil
}

func (p *shoaldProc) kill() {
	if p.cmd != nil && p.cmd.ProcessState == nil {
		p.cmd.Process.Signal(syscall.SIGKILL)
		p.cmd.Wait()
	}
}

// freePort is a loopback port free now.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func failover(ctx context.Context, bin string, trials int) (err error) {
	base, err := os.MkdirTemp("", "arbiterbench-failover-")
	if err != nil {
		return err
	}
	var procs []*shoaldProc
	defer func() {
		for _, p := range procs {
			p.kill()
			p.log.Close()
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "failed: the shoald logs are kept in %s\n", base)
			return
		}
		os.RemoveAll(base)
	}()
	newProc := func(name string) (*shoaldProc, error) {
		addr, err := freePort()
		if err != nil {
			return nil, err
		}
		log, err := os.Create(filepath.Join(base, name+".log"))
		if err != nil {
			return nil, err
		}
		metrics, err := freePort()
		if err != nil {
			return nil, err
		}
		p := &shoaldProc{dir: filepath.Join(base, name), addr: addr, metrics: metrics, log: log}
		procs = append(procs, p)
		return p, nil
	}
	nodeFlags := func(p *shoaldProc) []string {
		return []string{"--data-dir", p.dir, "--listen-addr", p.addr, "--tasks=false", "--docker-socket", "none", "--log-level", "warn",
			"--metrics-addr", p.metrics}
	}
	m0, err := newProc("manager-0")
	if err != nil {
		return err
	}
	if err := m0.start(bin, append([]string{"init"}, nodeFlags(m0)...)...); err != nil {
		return err
	}
	var cl *swarm.Client
	var c *api.Cluster
	if err := waitUntil(ctx, time.Minute, "the first manager", func() bool {
		if cl == nil {
			cert, root, err := (ca.Files{Dir: m0.dir}).Load()
			if err != nil {
				return false
			}
			cl = &swarm.Client{Addrs: []string{m0.addr}, TLS: ca.ClientConfig(cert, root, ca.RoleManager)}
		}
		c, err = cl.Cluster(ctx)
		return err == nil
	}); err != nil {
		return err
	}
	m1, err := newProc("manager-1")
	if err != nil {
		return err
	}
	if err := m1.start(bin, append([]string{"join", "--token", c.JoinTokens.Manager, m0.addr}, nodeFlags(m1)...)...); err != nil {
		return err
	}
	// m1 votes once the cluster warns that two managers tolerate no
	// failure; only then may the arbiter join (or it would vote with m0
	// alone while m1 is still catching up).
	cl.Addrs = []string{m0.addr, m1.addr}
	if err := waitUntil(ctx, time.Minute, "the second manager to vote", func() bool {
		c, err := cl.Cluster(ctx)
		return err == nil && len(c.Warnings) == 1 && strings.Contains(c.Warnings[0], "2 managers and no arbiter")
	}); err != nil {
		return err
	}
	arb, err := newProc("arbiter")
	if err != nil {
		return err
	}
	if err := arb.start(bin, "arbiter", "join", "--token", c.JoinTokens.Arbiter, m0.addr, "--data-dir", arb.dir, "--listen-addr", arb.addr, "--log-level", "warn"); err != nil {
		return err
	}
	if err := waitUntil(ctx, time.Minute, "the arbiter to vote", func() bool {
		c, err := cl.Cluster(ctx)
		return err == nil && len(c.Arbiters) == 1 && len(c.Warnings) == 0
	}); err != nil {
		return err
	}
	svc, err := cl.CreateService(ctx, api.ServiceSpec{Annotations: api.Annotations{Name: "bench"}, Mode: api.Replicated(0), TaskTemplate: api.TaskSpec{Image: "example/bench:1"}})
	if err != nil {
		return err
	}
	managers := []*shoaldProc{m0, m1}
	// write labels the service: what a client does after a failover.
	write := func(ctx context.Context, n int) error {
		cur, err := cl.Service(ctx, svc.ID)
		if err != nil {
			return err
		}
		spec := cur.Spec
		spec.Labels = map[string]string{"trial": fmt.Sprint(n)}
		_, err = cl.UpdateService(ctx, cur.ID, cur.Version, spec)
		return err
	}
	var times []time.Duration
	fmt.Printf("failover: 2 managers + arbiter (shoald processes on loopback, default timings), kill -9 the leader, time until a write is accepted\n")
	for i := range trials {
		var leader *shoaldProc
		if err := waitUntil(ctx, time.Minute, "a manager to lead, the other to follow it", func() bool {
			leader = nil
			followers := 0
			for _, m := range managers {
				switch raftLeader(ctx, m) {
				case "1":
					leader = m
				case "0":
					followers++
				}
			}
			return leader != nil && followers == 1 && write(ctx, -1) == nil
		}); err != nil {
			return err
		}
		killed := time.Now()
		leader.kill()
		var took time.Duration
		if err := waitUntil(ctx, 30*time.Second, "a write after the kill", func() bool {
			wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			if write(wctx, i) != nil {
				return false
			}
			took = time.Since(killed)
			return true
		}); err != nil {
			return err
		}
		times = append(times, took)
		fmt.Printf("trial %2d: killed %s, a write accepted after %4d ms\n", i+1, filepath.Base(leader.dir), took.Milliseconds())
		if err := leader.start(bin, append([]string{"run"}, nodeFlags(leader)...)...); err != nil {
			return err
		}
	}
	slices.Sort(times)
	fmt.Printf("\nfailover median of %d: %d ms (min %d, max %d; target <= 2000 ms)\n", len(times), times[len(times)/2].Milliseconds(),
		times[0].Milliseconds(), times[len(times)-1].Milliseconds())
	return nil
}

// raftLeader is the manager's shoal_raft_leader metric ("1" while it
// leads, "0" when it follows; "" when it does not answer).
func raftLeader(ctx context.Context, p *shoaldProc) string {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.metrics+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "shoal_raft_leader "); ok {
			return v
		}
	}
	return ""
}

// waitUntil polls cond every 20 ms until it holds or timeout passes.
func waitUntil(ctx context.Context, timeout time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return errors.New("timed out waiting for " + what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}
