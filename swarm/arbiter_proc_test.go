package swarm_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/shoalproject/shoal/internal/waitfor"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// runChildArbiter runs an Arbiter in a process of its own
// (SHOAL_TEST_NODE_MODE arbiter-join or arbiter-start), for kill -9.
func runChildArbiter() error {
	env := func(k string) string { return os.Getenv("SHOAL_TEST_" + k) }
	ctx := context.Background()
	a := &swarm.Arbiter{Dir: env("DIR"), ListenAddr: env("LISTEN")}
	var err error
	if env("NODE_MODE") == "arbiter-join" {
		err = a.Join(ctx, env("TOKEN"), env("MANAGER"))
	} else {
		err = a.Start(ctx)
	}
	if err != nil {
		return err
	}
	<-a.Ready()
	return json.NewEncoder(os.Stdout).Encode(childInfo{ID: a.ID(), Addr: a.Addr(), Role: "arbiter"})
}

// startArbiterProc runs an arbiter process: how is "join" (with token,
// through manager) or "start" (from dir).
func startArbiterProc(t *testing.T, dir, how, token, manager string) *procNode {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	cmd.Env = append(os.Environ(), "SHOAL_TEST_NODE_MODE=arbiter-"+how, "SHOAL_TEST_DIR="+dir, "SHOAL_TEST_LISTEN=127.0.0.1:0",
		"SHOAL_TEST_TOKEN="+token, "SHOAL_TEST_MANAGER="+manager)
	return startCmd(t, cmd, dir, "arbiter-"+how)
}

// Two managers and an arbiter, each a process: kill -9 either manager (the
// leader, then the other one) and the survivor takes writes and
// reschedules the dead one's tasks; kill -9 the arbiter and the managers
// go on; the arbiter restarted from its data dir votes again, which a
// last manager kill needs.
func TestTwoManagersAndArbiterSurviveKills(t *testing.T) {
	ctx := context.Background()
	m0 := startProc(t, t.TempDir(), "init", "", "").wait(t)
	cl := clientOf(t, m0)
	c, err := cl.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	managerTokens[c.JoinTokens.Manager] = true
	m1 := startProc(t, t.TempDir(), "join", c.JoinTokens.Manager, m0.info.Addr).wait(t)
	arb := startArbiterProc(t, t.TempDir(), "join", c.JoinTokens.Arbiter, m0.info.Addr).wait(t)
	for range 2 {
		startProc(t, t.TempDir(), "join", c.JoinTokens.Worker, m0.info.Addr).wait(t)
	}
	managers := []*procNode{m0, m1}
	cl = clientOf(t, managers...)
	c, err = cl.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Arbiters) != 1 || c.Arbiters[0].ID != arb.info.ID || len(c.Warnings) != 0 {
		t.Fatalf("arbiters %+v, warnings %q", c.Arbiters, c.Warnings)
	}
	replicas := 6
	svc, err := cl.CreateService(ctx, service("web", api.Replicated(uint64(replicas))))
	if err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, "all running", func() bool { return len(running(t, cl, svc.ID)) == replicas })

	// killAndCheck kills a manager with SIGKILL, then a write must go
	// through the survivor and the service must run whole, with nothing on
	// the dead manager; the dead one comes back from its dir.
	killAndCheck := func(victim *procNode, what string) {
		t.Helper()
		victim.kill()
		replicas++
		waitfor.True(t, fmt.Sprintf("a scale to %d accepted after %s was killed", replicas, what), func() bool {
			_, err := cl.ScaleService(ctx, "web", uint64(replicas))
			return err == nil
		})
		waitfor.True(t, fmt.Sprintf("%d running, none on the killed %s", replicas, what), func() bool {
			ts := running(t, cl, svc.ID)
			return len(ts) == replicas && !slices.ContainsFunc(ts, func(tk *api.Task) bool { return tk.NodeID == victim.info.ID })
		})
		leaderOf(t, cl, managers) // a manager leads, not the arbiter
		back := startProc(t, victim.dir, "start", "", "").wait(t)
		if back.info.ID != victim.info.ID {
			t.Fatalf("%s restarted as %s, was %s", what, back.info.ID, victim.info.ID)
		}
		managers[slices.Index(managers, victim)] = back
		cl = clientOf(t, managers...)
	}
	// Each manager dies once: first the leader, then the other one.
	leader := leaderOf(t, cl, managers)
	killAndCheck(leader, "the leader")
	for _, m := range managers {
		if m.info.ID != leader.info.ID {
			killAndCheck(m, "the other manager")
			break
		}
	}

	// The arbiter dies: both managers go on, and say that it is gone.
	arb.kill()
	replicas++
	if _, err := cl.ScaleService(ctx, "web", uint64(replicas)); err != nil {
		t.Fatalf("a write with the arbiter dead: %v", err)
	}
	waitfor.True(t, "all running with the arbiter dead", func() bool { return len(running(t, cl, svc.ID)) == replicas })
	arbiterWarned := func() bool {
		c, err := cl.Cluster(ctx)
		if err != nil {
			return false
		}
		warned := slices.ContainsFunc(c.Warnings, func(w string) bool {
			return strings.Contains(w, "arbiter "+arb.info.ID) && strings.Contains(w, "unreachable")
		})
		ns, err := cl.Nodes(ctx, swarm.Filter{Roles: []string{"manager"}})
		if err != nil || len(ns) != 2 {
			return false
		}
		for _, n := range ns {
			if n.ManagerStatus == nil || strings.Contains(n.ManagerStatus.Warning, "unreachable") != warned {
				return false
			}
		}
		return warned
	}
	waitfor.True(t, "the cluster and node list warn that the arbiter is unreachable", arbiterWarned)
	// It comes back from its data dir with its identity, and votes: a
	// manager's death now needs its vote.
	back := startArbiterProc(t, arb.dir, "start", "", "").wait(t)
	if back.info.ID != arb.info.ID || back.info.Addr != arb.info.Addr {
		t.Fatalf("arbiter restarted as %+v, was %+v", back.info, arb.info)
	}
	waitfor.True(t, "no warning once the arbiter is back", func() bool {
		c, err := cl.Cluster(ctx)
		return err == nil && len(c.Warnings) == 0
	})
	killAndCheck(leaderOf(t, cl, managers), "the leader, after the arbiter restarted")
}
