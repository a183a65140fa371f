package main

// arbiterbench fence: failover in two-node mode (swarm.TwoNode). Two managers,
// each a child process (this binary re-executed) whose fence kills the
// other's process by the PID it wrote; each trial kills the leader with
// SIGKILL and times how long until a write is accepted on the survivor
// (its fence, a kill of a process already dead, takes ~0 s). The dead one
// is restarted from its data dir, rejoins, and the next trial kills the
// leader again, so the leader killed alternates between the lower node ID
// and the higher one. The survivor is the dead leader's follower, which
// fences at once whatever its ID (only a manager that led last waits
// -fence-delay first, so that after a cut between two live managers the
// follower fences first); the figures are given by the leader's side.
//
//	go run ./examples/arbiterbench fence -trials 10

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/internal/procstat"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/ca"
)

// fenceNodeCmd is the hidden subcommand that runs a two-node manager:
//
//	arbiterbench fencenode -dir DIR -fence-dir FD [-join TOKEN -addr HOST:PORT]
//
// Without -join it inits a cluster, or starts from DIR if it holds a
// node. Once ready it writes FD/<id>.pid and prints its ID and address as
// JSON; it runs until killed.
const fenceNodeCmd = "fencenode"

type fenceNodeInfo struct {
	ID   string `json:"id"`
	Addr string `json:"addr"`
}

func runFenceNode(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet(fenceNodeCmd, flag.ContinueOnError)
	dir := fl.String("dir", "", "data dir")
	fenceDir := fl.String("fence-dir", "", "where the managers' PID files are")
	token := fl.String("join", "", "manager join token")
	addr := fl.String("addr", "", "a manager's address, to join")
	delay := fl.Duration("fence-delay", swarm.DefaultFenceDelay, "the last leader's wait before fencing its follower")
	if err := fl.Parse(args); err != nil {
		return err
	}
	n := &swarm.Node{Dir: *dir, ListenAddr: "127.0.0.1:0", Executor: &agent.FakeExecutor{},
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
		TwoNode: &swarm.TwoNode{Delay: *delay, Fencer: swarm.FenceFunc(func(ctx context.Context, peer swarm.Peer) error {
			return procstat.KillPIDFile(ctx, filepath.Join(*fenceDir, peer.ID+".pid"))
		})}}
	var err error
	switch _, statErr := os.Stat(filepath.Join(*dir, "node.json")); {
	case statErr == nil:
		err = n.Start(ctx)
	case *token != "":
		err = n.Join(ctx, *token, *addr)
	default:
		err = n.Init(ctx)
	}
	if err != nil {
		return err
	}
	select {
	case <-n.Ready():
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := os.WriteFile(filepath.Join(*fenceDir, n.ID()+".pid"), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		return err
	}
	if err := json.NewEncoder(os.Stdout).Encode(fenceNodeInfo{ID: n.ID(), Addr: n.Addr()}); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

// fenceProc is a two-node manager process the bench started.
type fenceProc struct {
	dir  string
	cmd  *exec.Cmd
	info fenceNodeInfo
}

func startFenceNode(ctx context.Context, dir, fenceDir string, delay time.Duration, join ...string) (*fenceProc, error) {
	args := []string{fenceNodeCmd, "-dir", dir, "-fence-dir", fenceDir, "-fence-delay", delay.String()}
	if len(join) == 2 {
		args = append(args, "-join", join[0], "-addr", join[1])
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &fenceProc{dir: dir, cmd: cmd}
	done := make(chan error, 1)
	go func() { done <- json.NewDecoder(bufio.NewReader(out)).Decode(&p.info) }()
	select {
	case err := <-done:
		if err != nil {
			p.kill()
			return nil, fmt.Errorf("manager process in %s: %v", dir, err)
		}
	case <-time.After(time.Minute):
		p.kill()
		return nil, fmt.Errorf("manager process in %s not ready after a minute", dir)
	case <-ctx.Done():
		p.kill()
		return nil, ctx.Err()
	}
	return p, nil
}

func (p *fenceProc) kill() {
	p.cmd.Process.Kill()
	p.cmd.Wait()
}

// fenceClient is a control API client of the managers at addrs, with the
// certificate in dir.
func fenceClient(dir string, addrs ...string) (*swarm.Client, error) {
	cert, root, err := (ca.Files{Dir: dir}).Load()
	if err != nil {
		return nil, err
	}
	return &swarm.Client{Addrs: addrs, TLS: ca.ClientConfig(cert, root, ca.RoleManager)}, nil
}

// leaderOfTwo waits until both managers vote and returns the leader's ID.
func leaderOfTwo(ctx context.Context, cl *swarm.Client) (string, error) {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		ns, err := cl.Nodes(ctx, swarm.Filter{Roles: []string{"manager"}})
		leader, voters := "", 0
		for _, n := range ns {
			if s := n.ManagerStatus; s != nil && s.Voter {
				voters++
				if s.Leader {
					leader = n.ID
				}
			}
		}
		if err == nil && voters == 2 && leader != "" {
			return leader, nil
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return "", errors.New("no two voting managers after a minute")
}

// fenceCmd is the subcommand that measures two-node failover:
//
//	arbiterbench fence [-trials N] [-fence-delay D] [-keep]
const fenceCmd = "fence"

func runFence(ctx context.Context, args []string) error {
	fl := flag.NewFlagSet(fenceCmd, flag.ContinueOnError)
	trials := fl.Int("trials", 10, "leader kills")
	delay := fl.Duration("fence-delay", swarm.DefaultFenceDelay, "the last leader's wait before fencing its follower")
	keep := fl.Bool("keep", false, "keep the data dirs (printed)")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *trials < 1 || *trials > 1000 {
		return fmt.Errorf("-trials %d: want 1 to 1000", *trials)
	}
	return fenceTrials(ctx, *trials, *delay, *keep)
}

func fenceTrials(ctx context.Context, trials int, delay time.Duration, keep bool) error {
	base, err := os.MkdirTemp("", "fencebench-")
	if err != nil {
		return err
	}
	if keep {
		fmt.Println("data dirs under", base)
	} else {
		defer os.RemoveAll(base)
	}
	fenceDir := filepath.Join(base, "pids")
	if err := os.Mkdir(fenceDir, 0o700); err != nil {
		return err
	}
	p0, err := startFenceNode(ctx, filepath.Join(base, "m0"), fenceDir, delay)
	if err != nil {
		return err
	}
	procs := []*fenceProc{p0}
	defer func() {
		for _, p := range procs {
			p.kill()
		}
	}()
	cl, err := fenceClient(p0.dir, p0.info.Addr)
	if err != nil {
		return err
	}
	c, err := cl.Cluster(ctx)
	if err != nil {
		return err
	}
	p1, err := startFenceNode(ctx, filepath.Join(base, "m1"), fenceDir, delay, c.JoinTokens.Manager, p0.info.Addr)
	if err != nil {
		return err
	}
	procs = append(procs, p1)
	lowID := min(p0.info.ID, p1.info.ID)
	fmt.Printf("two-node mode, fence = SIGKILL of the peer's process (~0 s), -fence-delay %s for the last leader\n", delay)
	var lowLed, highLed, all []float64
	for i := range trials {
		cl, err := fenceClient(p0.dir, procs[0].info.Addr, procs[1].info.Addr)
		if err != nil {
			return err
		}
		leader, err := leaderOfTwo(ctx, cl)
		if err != nil {
			return err
		}
		k := slices.IndexFunc(procs, func(p *fenceProc) bool { return p.info.ID == leader })
		victim, survivor := procs[k], procs[1-k]
		scl, err := fenceClient(p0.dir, survivor.info.Addr)
		if err != nil {
			return err
		}
		victim.cmd.Process.Kill() // SIGKILL
		start := time.Now()
		for n := 0; ; n++ {
			actx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
			_, err := scl.CreateService(actx, api.ServiceSpec{Annotations: api.Annotations{Name: fmt.Sprintf("after-%d", i)},
				Mode: api.Replicated(1), TaskTemplate: api.TaskSpec{Image: "example/bench:1"}})
			cancel()
			if err == nil || errors.Is(err, swarm.ErrNameInUse) {
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if time.Since(start) > time.Minute {
				return fmt.Errorf("trial %d: no write accepted a minute after the leader's death: %v", i+1, err)
			}
		}
		took := time.Since(start).Seconds()
		victim.cmd.Wait()
		side := "lower"
		if leader == lowID {
			lowLed = append(lowLed, took)
		} else {
			side = "higher"
			highLed = append(highLed, took)
		}
		all = append(all, took)
		fmt.Printf("trial %2d: leader %s (%s ID) killed; write accepted on the survivor after %.2f s\n", i+1, leader, side, took)
		back, err := startFenceNode(ctx, victim.dir, fenceDir, delay)
		if err != nil {
			return err
		}
		procs[k] = back
	}
	fmt.Printf("\nfailover in two-node mode, kill -9 of the leader to a write accepted (target <= 2 s plus the fence's time):\n")
	fmt.Printf("  leader with the lower ID killed:  %s\n", spread(lowLed))
	fmt.Printf("  leader with the higher ID killed: %s\n", spread(highLed))
	fmt.Printf("  all trials:                       %s\n", spread(all))
	return nil
}

// spread is "median M s (min to max s) of N".
func spread(v []float64) string {
	if len(v) == 0 {
		return "no trial"
	}
	return fmt.Sprintf("median %.2f s (%.2f to %.2f s) of %d", median(v), slices.Min(v), slices.Max(v), len(v))
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
