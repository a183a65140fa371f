package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/swarm"
)

// nodeCmd is the hidden subcommand that runs one swarm.Node in a child
// process:
//
//	clusterbench node -dir DIR (-init | -join TOKEN -addr HOST:PORT | -start) [-exec] [-raft-timeout D]
//
// It prints a hello line (JSON: id, addr, role, pid) on stdout once the
// node is ready, then answers commands read from stdin, one a line:
// "status" (leader, term, voters, memory), "profile FILE DURATION" (a CPU
// profile of this process) and "heap FILE" (a heap profile). It exits when stdin closes: when the bench stops it, or
// dies.
const nodeCmd = "node"

func runNodeChild(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet(nodeCmd, flag.ContinueOnError)
	dir := fs.String("dir", "", "the node's data dir")
	initF := fs.Bool("init", false, "init a new cluster")
	token := fs.String("join", "", "join with this token")
	addr := fs.String("addr", "", "the manager to join through")
	start := fs.Bool("start", false, "restart the node from its dir")
	execF := fs.Bool("exec", false, "run tasks (fake executor)")
	raftTimeout := fs.Duration("raft-timeout", 0, "Raft heartbeat and election timeout (lease: half); 0: the defaults")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lines := make(chan string)
	go func() {
		// The parent holds our stdin: when it closes, we are done.
		defer cancel()
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()
	n := &swarm.Node{Dir: *dir, ListenAddr: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	if *execF {
		n.Executor = &agent.FakeExecutor{}
	}
	if d := *raftTimeout; d > 0 {
		n.Raft = swarm.RaftTuning{HeartbeatTimeout: d, ElectionTimeout: d, LeaderLeaseTimeout: d / 2}
	}
	var err error
	switch {
	case *initF:
		err = n.Init(ctx)
	case *token != "":
		err = n.Join(ctx, *token, *addr)
	case *start:
		err = n.Start(ctx)
	default:
		err = errors.New("one of -init, -join or -start")
	}
	if err != nil {
		return err
	}
	defer n.Close()
	select {
	case <-n.Ready():
	case <-ctx.Done():
		return nil
	}
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(hello{ID: n.ID(), Addr: n.Addr(), Role: n.Role(), PID: os.Getpid()}); err != nil {
		return err
	}
	for {
		var line string
		select {
		case <-ctx.Done():
			return nil
		case line = <-lines:
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "status":
			enc.Encode(childStatus(ctx, n))
		case "profile":
			var d time.Duration
			if len(f) == 3 {
				d, err = time.ParseDuration(f[2])
			}
			if len(f) != 3 || err != nil {
				enc.Encode(nodeStatus{Err: "profile FILE DURATION"})
				continue
			}
			err := profileFor(ctx, f[1], d)
			st := nodeStatus{}
			if err != nil {
				st.Err = err.Error()
			}
			enc.Encode(st)
		case "heap":
			st := nodeStatus{}
			if err := heapProfile(f[1:]); err != nil {
				st.Err = err.Error()
			}
			enc.Encode(st)
		default:
			enc.Encode(nodeStatus{Err: fmt.Sprintf("unknown command %q", f[0])})
		}
	}
}

func childStatus(ctx context.Context, n *swarm.Node) nodeStatus {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	st := nodeStatus{HeapInuse: ms.HeapInuse >> 20, StackInuse: ms.StackInuse >> 20, GoSys: ms.Sys >> 20, Goroutines: runtime.NumGoroutine()}
	m := n.Manager()
	if m == nil {
		return st
	}
	st.Leader = m.IsLeader()
	if s := m.Store(); s != nil {
		st.Term = s.Leader().Term
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if srvs, err := s.Servers(cctx); err == nil {
			for _, s := range srvs {
				if s.Voter {
					st.Voters++
				}
			}
		}
	}
	return st
}

// heapProfile writes a heap profile (after a GC) to args[0].
func heapProfile(args []string) error {
	if len(args) != 1 {
		return errors.New("heap FILE")
	}
	f, err := os.Create(args[0])
	if err != nil {
		return err
	}
	defer f.Close()
	runtime.GC()
	return pprof.WriteHeapProfile(f)
}

// profileFor writes a CPU profile of this process over d.
func profileFor(ctx context.Context, path string, d time.Duration) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		return err
	}
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
	pprof.StopCPUProfile()
	return nil
}
