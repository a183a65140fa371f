package swarm_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/nettest"
	"github.com/shoalproject/shoal/internal/waitfor"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// minorityWriteBound is how long a write on the cut-off leader may take to
// be refused: its lease (250 ms) runs out, or the change it took cannot
// commit; a write that hangs for longer is a failure of its own.
const minorityWriteBound = 10 * time.Second

// Three managers and three workers, each a node process on a host of its
// own, joined with tokens over mutual TLS. The leader's host is cut off
// from every other node by a partition in the network (nftables drops on
// the wire), with a client on its side: the majority elects a new leader
// and takes writes, and the workers follow it with their tasks; the old
// leader stops leading on its own and refuses writes, saying so, without
// hanging. Healed, it follows the new leader, the writes it was sent are
// nowhere, and the service that ran before the partition still runs its
// first tasks, one per slot.
func TestLeaderMinorityPartitionOverTheNetwork(t *testing.T) {
	needPartitions(t)
	ctx := context.Background()
	// Shoal's default heartbeat period (the children's is 500 ms): a new
	// leader's grace, three periods, is what the workers have to find it.
	t.Setenv("SHOAL_TEST_HEARTBEAT", swarm.DefaultHeartbeatPeriod.String())
	// Hosts: 3 managers, 3 workers, a client on the majority's side, a
	// client on the minority's side.
	lab := nettest.New(t, 8)
	hM, hW, hC, hL := lab.Hosts[0:3], lab.Hosts[3:6], lab.Hosts[6], lab.Hosts[7]
	dir0 := t.TempDir()
	m0 := startInHost(t, hM[0], dir0, "init", "", "").wait(t)
	c, err := labClient(t, hC, dir0, m0.info.Addr).Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	managers := []*procNode{m0}
	hostOf := map[*procNode]*nettest.Host{m0: hM[0]}
	for _, h := range hM[1:] {
		p := startInHost(t, h, t.TempDir(), "join", c.JoinTokens.Manager, m0.info.Addr)
		managers = append(managers, p)
		hostOf[p] = h
	}
	for _, p := range managers[1:] {
		p.wait(t)
	}
	client := func(h *nettest.Host, ps ...*procNode) *swarm.Client {
		var addrs []string
		for _, p := range ps {
			addrs = append(addrs, p.info.Addr)
		}
		return labClient(t, h, dir0, addrs...)
	}
	cl := client(hC, managers...)
	managersVoting(t, cl, 3)
	// The workers join once the three managers vote, so that their
	// sessions name all three: a worker that joined before learns of
	// the others from the answers it gets later (a second or two; see
	// TestWorkersLearnManagersAddedAfterThem), and one that only knew
	// the old leader when the partition came could not leave it (a run
	// cut 0.3 s after the last manager voted had one such worker).
	var workers []*procNode
	for _, h := range hW {
		workers = append(workers, startInHost(t, h, t.TempDir(), "join", c.JoinTokens.Worker, m0.info.Addr))
	}
	for _, p := range workers {
		p.wait(t)
	}
	onWorkers := func(name string) api.ServiceSpec {
		spec := service(name, api.Replicated(3))
		spec.TaskTemplate.Placement = &api.Placement{Constraints: []string{"node.role==worker"}}
		return spec
	}
	svc, err := cl.CreateService(ctx, onWorkers("web"))
	if err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, "3 running on the workers", func() bool { return len(running(t, cl, svc.ID)) == 3 })
	before := ids(running(t, cl, svc.ID))

	old := leaderOf(t, cl, managers)
	var majority []*procNode
	for _, m := range managers {
		if m != old {
			majority = append(majority, m)
		}
	}
	// The old leader alone with a client of its own; everyone else with
	// the test's other client.
	rest := append(slices.Clone(hW), hC)
	for _, m := range majority {
		rest = append(rest, hostOf[m])
	}
	if err := lab.Partition([]*nettest.Host{hostOf[old], hL}, rest); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	// A write at once, to the old leader alone (one request, no retry): it
	// may still lead and take the change into its log, which it cannot
	// commit.
	refused := func(name string) {
		t.Helper()
		b, err := json.Marshal(onWorkers(name))
		if err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, minorityWriteBound)
		defer cancel()
		start := time.Now()
		status, answer := requestOnce(t, wctx, hL, dir0, http.MethodPost, old.info.Addr, "/v1/services", bytes.NewReader(b))
		took := time.Since(start)
		if status == 0 {
			t.Fatalf("the write %q on the cut-off leader got no answer in %v: %s", name, took, answer)
		}
		if status != http.StatusServiceUnavailable || !strings.Contains(answer, "quorum") && !strings.Contains(answer, "leader") {
			t.Fatalf("the write %q on the cut-off leader: %d %s, want 503 saying no quorum or no leader", name, status, answer)
		}
		t.Logf("%.1fs: the write %q on the cut-off leader refused in %v: %d %s", time.Since(cut).Seconds(), name, took.Round(time.Millisecond), status, strings.TrimSpace(answer))
	}
	refused("ghost")

	// The majority elects one of its own; the old leader, asked directly,
	// no longer leads and knows no leader.
	for _, m := range majority {
		waitfor.True(t, "the majority's leader, as "+m.info.ID+" sees it", func() bool {
			l, _ := leaderSeenBy(t, hC, dir0, m)
			return l != "" && l != old.info.ID
		})
	}
	t.Logf("%.1fs: a new leader on the majority side", time.Since(cut).Seconds())
	waitfor.True(t, "the old leader steps down", func() bool {
		l, ok := leaderSeenBy(t, hL, dir0, old)
		return ok && l == ""
	})
	t.Logf("%.1fs: the old leader knows no leader", time.Since(cut).Seconds())
	refused("minority")

	// The majority takes writes; the workers, all on its side, run them.
	mcl := client(hC, majority...)
	svc2, err := mcl.CreateService(ctx, onWorkers("after"))
	if err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, "the service created during the partition runs", func() bool { return len(running(t, mcl, svc2.ID)) == 3 },
		func() string { return describeTasks(mcl, svc2.ID) })
	t.Logf("%.1fs: the service created during the partition runs", time.Since(cut).Seconds())

	if err := lab.Heal(); err != nil {
		t.Fatal(err)
	}
	healed := time.Now()
	waitfor.True(t, "the old leader follows the new one", func() bool {
		l, _ := leaderSeenBy(t, hL, dir0, old)
		now, _ := leaderSeenBy(t, hC, dir0, majority[0])
		return l != "" && l != old.info.ID && l == now
	})
	waitfor.True(t, "the old leader caught up", func() bool {
		names, ok := serviceNamesSeenBy(t, hL, dir0, old)
		return ok && names["after"]
	})
	t.Logf("%.1fs after the heal: the old leader follows and caught up", time.Since(healed).Seconds())
	for _, m := range managers {
		names, ok := serviceNamesSeenBy(t, hC, dir0, m)
		if !ok {
			t.Fatalf("manager %s did not answer after the heal", m.info.ID)
		}
		if names["ghost"] || names["minority"] {
			t.Fatalf("manager %s has a write sent to the cut-off leader: %v", m.info.ID, names)
		}
	}
	cl = client(hC, managers...)
	managersVoting(t, cl, 3)
	// Every slot of the first service runs once, with the task it ran
	// before: its workers stayed with the majority.
	all, err := cl.Tasks(ctx, swarm.Filter{Services: []string{svc.ID}})
	if err != nil {
		t.Fatal(err)
	}
	bySlot := map[uint64]int{}
	for _, tk := range all {
		if tk.Status.State == api.TaskRunning {
			bySlot[tk.Slot]++
		}
		if !before[tk.ID] {
			t.Errorf("task %s (slot %d, %s on %s) is new: the partition replaced a task", tk.ID, tk.Slot, tk.Status.State, tk.NodeID)
		}
	}
	for slot, n := range bySlot {
		if n != 1 {
			t.Errorf("slot %d has %d RUNNING tasks after the heal", slot, n)
		}
	}
	if len(bySlot) != 3 {
		t.Errorf("slots RUNNING after the heal: %v, want 3", bySlot)
	}
}

// leaderSeenBy is the ID of the leader manager p knows of ("" for none),
// asked of p alone from host h; false if p did not answer.
func leaderSeenBy(t *testing.T, h *nettest.Host, dir string, p *procNode) (string, bool) {
	t.Helper()
	var ns []*api.Node
	if !getOnce(t, h, dir, p, "/v1/nodes", &ns) {
		return "", false
	}
	for _, n := range ns {
		if n.ManagerStatus != nil && n.ManagerStatus.Leader {
			return n.ID, true
		}
	}
	return "", true
}

// serviceNamesSeenBy is the names of the services in p's own store, asked
// of p alone from host h; false if p did not answer.
func serviceNamesSeenBy(t *testing.T, h *nettest.Host, dir string, p *procNode) (map[string]bool, bool) {
	t.Helper()
	var ss []*api.Service
	if !getOnce(t, h, dir, p, "/v1/services", &ss) {
		return nil, false
	}
	names := map[string]bool{}
	for _, s := range ss {
		names[s.Spec.Name] = true
	}
	return names, true
}

// getOnce reads path from manager p alone into out; false if p did not
// answer with it within a few seconds.
func getOnce(t *testing.T, h *nettest.Host, dir string, p *procNode, path string, out any) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	status, answer := requestOnce(t, ctx, h, dir, http.MethodGet, p.info.Addr, path, nil)
	return status == http.StatusOK && json.Unmarshal([]byte(answer), out) == nil
}

// describeTasks lists a service's tasks and the nodes, for a failure.
func describeTasks(cl *swarm.Client, serviceID string) string {
	ctx := context.Background()
	var b strings.Builder
	ts, err := cl.Tasks(ctx, swarm.Filter{Services: []string{serviceID}})
	fmt.Fprintf(&b, "tasks (%v):\n", err)
	for _, tk := range ts {
		fmt.Fprintf(&b, "  %s slot %d on %s: %s (desired %s) %s\n", tk.ID, tk.Slot, tk.NodeID, tk.Status.State, tk.DesiredState, tk.Status.Err)
	}
	ns, err := cl.Nodes(ctx, swarm.Filter{})
	fmt.Fprintf(&b, "nodes (%v):\n", err)
	for _, n := range ns {
		fmt.Fprintf(&b, "  %s %s %s\n", n.ID, n.Spec.Role, n.Status.State)
	}
	return b.String()
}
