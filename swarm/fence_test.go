package swarm_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/syncbuf"
	"github.com/shoalproject/shoal/internal/waitfor"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// A fence command gets the peer in its environment; exit 0 is success,
// anything else an error with its output; an empty command is refused.
func TestCommandFencer(t *testing.T) {
	ctx := context.Background()
	peer := swarm.Peer{ID: "p1", Addr: "192.0.2.2:2377"}
	ok := &swarm.CommandFencer{Path: "sh", Args: []string{"-c", `test "$SHOAL_FENCE_PEER_ID $SHOAL_FENCE_PEER_ADDR" = "p1 192.0.2.2:2377"`}}
	if err := ok.Fence(ctx, peer); err != nil {
		t.Fatalf("fence with the peer in the environment: %v", err)
	}
	bad := &swarm.CommandFencer{Path: "sh", Args: []string{"-c", "echo ipmitool: no answer from the BMC >&2; exit 3"}}
	err := bad.Fence(ctx, peer)
	if err == nil || !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "no answer from the BMC") {
		t.Fatalf("a failing fence command: %v", err)
	}
	if err := (&swarm.CommandFencer{}).Fence(ctx, peer); !errors.Is(err, api.ErrInvalidSpec) {
		t.Fatalf("an empty fence command: %v", err)
	}
	// At its deadline the command's children die with it: a shell's
	// child left running could power the peer off after the fence
	// counted as failed.
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	slow := &swarm.CommandFencer{Path: "sh", Args: []string{"-c", `sleep 60 >/dev/null 2>&1 & echo $! > ` + pidFile + `; wait`}}
	tctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if err := slow.Fence(tctx, peer); err == nil {
		t.Fatal("a fence command past its deadline reported success")
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("the command never started its child: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	waitGone := func(what string, pid int) {
		waitfor.Within(t, 5*time.Second, what, func() bool {
			stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			// Gone, or a zombie waiting for its new parent to reap it.
			return err != nil || strings.Contains(string(stat), ") Z ")
		})
	}
	waitGone("the fence command's child killed at the deadline", pid)
	// A command that fails early leaves nothing behind either: a
	// power-off started in the background must not strike later.
	early := &swarm.CommandFencer{Path: "sh", Args: []string{"-c", `sleep 60 >/dev/null 2>&1 & echo $! > ` + pidFile + `; exit 1`}}
	if err := early.Fence(ctx, peer); err == nil || !strings.Contains(err.Error(), "exit status 1") {
		t.Fatalf("a fence command that failed: %v", err)
	}
	if b, err = os.ReadFile(pidFile); err != nil {
		t.Fatal(err)
	}
	if pid, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
		t.Fatal(err)
	}
	waitGone("the background child of a failed fence command killed", pid)
}

// Settings that cannot work are refused at Start with what is wrong:
// two-node mode without a fence or a data dir, drain bounds workers would
// not take.
func TestManagerStartRefusesBadSettings(t *testing.T) {
	ctx := context.Background()
	m := &swarm.Manager{Dir: t.TempDir(), TwoNode: &swarm.TwoNode{}}
	if err := m.Start(ctx); !errors.Is(err, api.ErrInvalidSpec) || !strings.Contains(err.Error(), "Fencer") {
		t.Fatalf("no Fencer: %v", err)
	}
	m = &swarm.Manager{TwoNode: &swarm.TwoNode{Fencer: swarm.FenceFunc(func(context.Context, swarm.Peer) error { return nil })}}
	if err := m.Start(ctx); !errors.Is(err, api.ErrInvalidSpec) || !strings.Contains(err.Error(), "Dir") {
		t.Fatalf("no Dir: %v", err)
	}
	// Drain bounds past what workers take from the session are refused
	// too: a worker, not the managers, would decide them.
	for _, bad := range []*swarm.Manager{{Dir: t.TempDir(), DrainTimeout: 2 * time.Hour}, {Dir: t.TempDir(), DrainDelay: 2 * time.Minute}} {
		if err := bad.Start(ctx); !errors.Is(err, api.ErrInvalidSpec) || !strings.Contains(err.Error(), "DrainTimeout") {
			t.Fatalf("drain timeout %v, delay %v: %v", bad.DrainTimeout, bad.DrainDelay, err)
		}
	}
	// A node is refused them at its first step, before it writes anything,
	// not when it is promoted to manager later.
	dir := t.TempDir()
	n := &swarm.Node{Dir: dir, DrainTimeout: 2 * time.Hour}
	if err := n.Join(ctx, "SWMTKN-1-x-y", "127.0.0.1:1"); !errors.Is(err, api.ErrInvalidSpec) || !strings.Contains(err.Error(), "DrainTimeout") {
		t.Fatalf("a node joining with a 2 h drain timeout: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("the refused node wrote %d entries in its dir", len(ents))
	}
}

// Two-node mode on a node: the fence is a command (IPMI, a cloud API, a
// PDU) and the witness the default gateway's DNS port. The other node is
// set up the same way, with the means to fence this one.
func ExampleTwoNode() {
	n := &swarm.Node{Dir: "/var/lib/shoal", AdvertiseAddr: "192.0.2.10",
		TwoNode: &swarm.TwoNode{
			Fencer:  &swarm.CommandFencer{Path: "/usr/local/sbin/fence-peer"}, // gets $SHOAL_FENCE_PEER_ID
			Witness: swarm.DialWitness("192.0.2.1:53"),
		}}
	_ = n // n.Init(ctx) or n.Join(ctx, managerToken, "192.0.2.11:2377")
}

// A fence delay that does not outlast the fence timeout by more than a
// second is refused: the two managers could fence each other at once.
func TestTwoNodeDelayMustOutlastTheFence(t *testing.T) {
	fencer := swarm.FenceFunc(func(context.Context, swarm.Peer) error { return nil })
	for _, tn := range []*swarm.TwoNode{
		{Fencer: fencer, Timeout: 10 * time.Second},             // the default delay is shorter
		{Fencer: fencer, Delay: 4 * time.Second},                // the default timeout plus a second
		{Fencer: fencer, Delay: 2 * time.Second, Timeout: -1},   // negative
		{Fencer: fencer, Delay: 10 * time.Second, Timeout: 9e9}, // 9 s + 1 s is not under 10 s
	} {
		m := &swarm.Manager{Dir: t.TempDir(), TwoNode: tn}
		err := m.Start(context.Background())
		if err == nil {
			m.Close()
		}
		if !errors.Is(err, api.ErrInvalidSpec) {
			t.Fatalf("delay %v, timeout %v: %v, want it refused", tn.Delay, tn.Timeout, err)
		}
	}
	m := &swarm.Manager{Dir: t.TempDir(), TwoNode: &swarm.TwoNode{Fencer: fencer, Delay: 15 * time.Second, Timeout: 10 * time.Second}}
	if err := m.Start(context.Background()); err != nil {
		t.Fatalf("delay 15 s, timeout 10 s: %v", err)
	}
	m.Close()
}

// A manager that fenced its peer and went on alone was killed before it
// recorded the fence in the cluster object: only its fence file has it.
// Its next leadership records it and removes the file. Killed again
// between recording it and removing the file (the file written again
// here, as that crash leaves it), the next leadership finds the fence
// recorded: the cluster keeps it once, and the file goes.
func TestTheLastFenceIsRecordedAtTheNextLeadership(t *testing.T) {
	dir := t.TempDir()
	m := startManager(t, &swarm.Manager{Dir: dir})
	ready(t, m)
	m.Close()
	rec := api.Fence{Peer: "peer1", PeerAddr: "192.0.2.2:2377", By: "m0", At: time.Now().UTC().Add(-time.Minute).Round(0)}
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "fence.json")
	for round := range 2 {
		if err := os.WriteFile(file, b, 0o600); err != nil {
			t.Fatal(err)
		}
		var log syncbuf.Buffer
		m := startManager(t, &swarm.Manager{Dir: dir, Logger: slog.New(slog.NewTextHandler(&log, nil))})
		ready(t, m)
		waitfor.True(t, "the last fence recorded", func() bool {
			return strings.Contains(log.String(), "the last fence by this manager is in the cluster object")
		})
		c, err := m.Cluster()
		if err != nil {
			t.Fatal(err)
		}
		if fences := c.Fences; len(fences) != 1 || fences[0].Peer != rec.Peer || fences[0].By != rec.By || !fences[0].At.Equal(rec.At) {
			t.Fatalf("round %d: fences %+v, want %+v alone", round, c.Fences, rec)
		}
		if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("round %d: the fence file once the fence is recorded: %v, want it gone", round, err)
		}
		m.Close()
	}
}
