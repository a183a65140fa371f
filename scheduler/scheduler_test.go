package scheduler

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

const gib = 1 << 30

func nodes(n int, f func(i int, n *Node)) []*Node {
	out := make([]*Node, n)
	for i := range out {
		out[i] = &Node{ID: fmt.Sprintf("n%03d", i), Hostname: fmt.Sprintf("host%d", i), Role: "worker", OS: "linux", Arch: "x86_64",
			Ready: true, Total: Resources{NanoCPUs: 4e9, MemoryBytes: 8 * gib}, Labels: map[string]string{}}
		if f != nil {
			f(i, out[i])
		}
	}
	return out
}

func tasks(n int) []TaskRef {
	out := make([]TaskRef, n)
	for i := range out {
		out[i] = TaskRef{ID: fmt.Sprintf("t%05d", i)}
	}
	return out
}

func perNode(res Result) map[string]int {
	m := map[string]int{}
	for _, d := range res.Decisions {
		m[d.NodeID]++
	}
	return m
}

func spreadOf(counts map[string]int, ns []*Node) (lo, hi int) {
	lo = 1 << 30
	for _, n := range ns {
		c := counts[n.ID]
		lo, hi = min(lo, c), max(hi, c)
	}
	return
}

func TestFilters(t *testing.T) {
	cases := []struct {
		name   string
		node   func(*Node)
		group  Group
		ok     bool
		reason string
	}{
		{"ready", nil, Group{}, true, ""},
		{"not ready", func(n *Node) { n.Ready = false }, Group{}, false, "node not ready"},
		{"paused", func(n *Node) { n.Availability = Pause }, Group{}, false, "node not active"},
		{"drained", func(n *Node) { n.Availability = Drain }, Group{}, false, "node not active"},
		{"cpu", nil, Group{Reservations: Resources{NanoCPUs: 5e9}}, false, "insufficient CPU"},
		{"memory", nil, Group{Reservations: Resources{MemoryBytes: 9 * gib}}, false, "insufficient memory"},
		{"memory already reserved", func(n *Node) { n.Reserved.MemoryBytes = 7 * gib }, Group{Reservations: Resources{MemoryBytes: 2 * gib}}, false, "insufficient memory"},
		{"generic discrete ok", func(n *Node) { n.Total.Generic = map[string]int64{"gpu": 2} }, Group{Reservations: Resources{Generic: map[string]int64{"gpu": 2}}}, true, ""},
		{"generic discrete short", func(n *Node) { n.Total.Generic = map[string]int64{"gpu": 1} }, Group{Reservations: Resources{Generic: map[string]int64{"gpu": 2}}}, false, "insufficient generic resource gpu"},
		{"generic named", func(n *Node) { n.Named = map[string][]string{"gpu": {"G1", "G2"}} }, Group{Reservations: Resources{Generic: map[string]int64{"gpu": 1}}}, true, ""},
		{"constraint label ==", func(n *Node) { n.Labels["zone"] = "east" }, Group{Constraints: []string{"node.labels.zone==east"}}, true, ""},
		{"constraint label == missing", nil, Group{Constraints: []string{"node.labels.zone==east"}}, false, "constraint node.labels.zone==east not met"},
		{"constraint label != missing", nil, Group{Constraints: []string{"node.labels.zone!=east"}}, true, ""},
		{"constraint role", nil, Group{Constraints: []string{"node.role==manager"}}, false, "constraint node.role==manager not met"},
		{"constraint hostname", nil, Group{Constraints: []string{"node.hostname==HOST0"}}, true, ""},
		{"constraint id", nil, Group{Constraints: []string{"node.id!=n000"}}, false, "constraint node.id!=n000 not met"},
		{"constraint os", nil, Group{Constraints: []string{"node.platform.os==linux"}}, true, ""},
		{"constraint arch normalized", nil, Group{Constraints: []string{"node.platform.arch==amd64"}}, true, ""},
		{"constraint engine label", func(n *Node) { n.EngineLabels = map[string]string{"disk": "ssd"} }, Group{Constraints: []string{"engine.labels.disk==ssd"}}, true, ""},
		{"bad constraint", nil, Group{Constraints: []string{"node.color==red"}}, false, "unknown key"},
		{"platform ok", nil, Group{Platforms: []Platform{{OS: "linux", Arch: "amd64"}}}, true, ""},
		{"platform mismatch", nil, Group{Platforms: []Platform{{OS: "linux", Arch: "arm64"}}}, false, "no platform of the image"},
		{"host port in use", func(n *Node) { n.HostPorts = []string{"80/tcp"} }, Group{HostPorts: []string{"80"}}, false, "host-mode port 80/tcp in use"},
		{"host port other proto", func(n *Node) { n.HostPorts = []string{"80/udp"} }, Group{HostPorts: []string{"80"}}, true, ""},
		{"max replicas", func(n *Node) { n.ServiceTasks = map[string]int{"s": 2} }, Group{MaxReplicas: 2}, false, "max replicas per node reached"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ns := nodes(1, func(_ int, n *Node) {
				if c.node != nil {
					c.node(n)
				}
			})
			g := c.group
			g.ServiceID, g.Tasks = "s", tasks(1)
			res := New(Config{}).Place(ns, &g)
			if c.ok != (len(res.Decisions) == 1) {
				t.Fatalf("placed %d, want ok=%v; unplaced %v", len(res.Decisions), c.ok, res.Unplaced)
			}
			if !c.ok {
				err := res.Unplaced[0]
				if !errors.Is(err, ErrNoSuitableNode) || !strings.Contains(err.Error(), c.reason) {
					t.Fatalf("explanation %q, want %q", err, c.reason)
				}
			}
		})
	}
}

func TestExplanationCountsNodesPerFilter(t *testing.T) {
	ns := nodes(5, func(i int, n *Node) {
		if i < 3 {
			n.Labels["zone"] = "east"
			n.Total.MemoryBytes = gib
		}
	})
	res := New(Config{}).Place(ns, &Group{ServiceID: "s", Tasks: tasks(1), Reservations: Resources{MemoryBytes: 2 * gib},
		Constraints: []string{"node.labels.zone==east"}})
	want := "no suitable node (insufficient memory on 3 nodes; constraint node.labels.zone==east not met on 2 nodes)"
	if len(res.Unplaced) != 1 || res.Unplaced[0].Error() != want {
		t.Fatalf("got %v\nwant %s", res.Unplaced, want)
	}
	if got := New(Config{}).Place(nil, &Group{ServiceID: "s", Tasks: tasks(1)}); got.Unplaced[0].Error() != "no suitable node (no nodes in the cluster)" {
		t.Fatal(got.Unplaced[0])
	}
}

func TestSpreadHomogeneousIsBalanced(t *testing.T) {
	for _, tc := range []struct{ nodes, tasks int }{{3, 10}, {7, 100}, {50, 1234}} {
		ns := nodes(tc.nodes, nil)
		res := New(Config{}).Place(ns, &Group{ServiceID: "s", Tasks: tasks(tc.tasks)})
		lo, hi := spreadOf(perNode(res), ns)
		if len(res.Decisions) != tc.tasks || hi-lo > 1 {
			t.Fatalf("%d nodes %d tasks: placed %d, per node %d..%d", tc.nodes, tc.tasks, len(res.Decisions), lo, hi)
		}
	}
}

func TestSpreadCountsExistingTasks(t *testing.T) {
	ns := nodes(3, func(i int, n *Node) {
		n.ServiceTasks = map[string]int{"s": []int{4, 0, 1}[i]}
		n.TotalTasks = []int{4, 0, 1}[i]
	})
	res := New(Config{}).Place(ns, &Group{ServiceID: "s", Tasks: tasks(5)})
	c := perNode(res)
	// 4+0, 0+3, 1+2 (n001 fills to 3, n002 to 3): totals 4,3,3 after 5 tasks.
	if c["n000"] != 0 || c["n001"]+c["n002"] != 5 || c["n001"] < c["n002"] {
		t.Fatalf("placement %v", c)
	}
	// Ties on service count go to the node with fewer tasks in total.
	ns = nodes(2, func(i int, n *Node) { n.TotalTasks = []int{5, 1}[i] })
	res = New(Config{}).Place(ns, &Group{ServiceID: "s", Tasks: tasks(1)})
	if res.Decisions[0].NodeID != "n001" {
		t.Fatalf("tie broken to %s", res.Decisions[0].NodeID)
	}
}

func TestPreferenceSpreadsOverZones(t *testing.T) {
	// Uneven zones: 2, 3 and 10 nodes; tasks still split evenly by zone.
	ns := nodes(15, func(i int, n *Node) {
		switch {
		case i < 2:
			n.Labels["zone"] = "a"
		case i < 5:
			n.Labels["zone"] = "b"
		default:
			n.Labels["zone"] = "c"
		}
	})
	res := New(Config{}).Place(ns, &Group{ServiceID: "s", Tasks: tasks(301), Preferences: []string{"node.labels.zone"}})
	zone := map[string]int{}
	byID := map[string]*Node{}
	for _, n := range ns {
		byID[n.ID] = n
	}
	for _, d := range res.Decisions {
		zone[byID[d.NodeID].Labels["zone"]]++
	}
	lo, hi := 1<<30, 0
	for _, c := range zone {
		lo, hi = min(lo, c), max(hi, c)
	}
	if len(zone) != 3 || hi-lo > 1 {
		t.Fatalf("per zone %v", zone)
	}
	// Nodes without the label are a branch of their own.
	ns = nodes(4, func(i int, n *Node) {
		if i < 3 {
			n.Labels["zone"] = "a"
		}
	})
	res = New(Config{}).Place(ns, &Group{ServiceID: "s", Tasks: tasks(4), Preferences: []string{"node.labels.zone"}})
	if perNode(res)["n003"] != 2 {
		t.Fatalf("unlabelled branch got %d of 4", perNode(res)["n003"])
	}
}

func TestTwoLevelPreferences(t *testing.T) {
	ns := nodes(12, func(i int, n *Node) {
		n.Labels["dc"] = fmt.Sprint(i % 2)
		n.Labels["rack"] = fmt.Sprint(i % 3)
	})
	res := New(Config{}).Place(ns, &Group{ServiceID: "s", Tasks: tasks(60), Preferences: []string{"node.labels.dc", "node.labels.rack"}})
	byID := map[string]*Node{}
	for _, n := range ns {
		byID[n.ID] = n
	}
	dc := map[string]int{}
	rack := map[string]int{}
	for _, d := range res.Decisions {
		n := byID[d.NodeID]
		dc[n.Labels["dc"]]++
		rack[n.Labels["dc"]+"/"+n.Labels["rack"]]++
	}
	if dc["0"] != 30 || dc["1"] != 30 {
		t.Fatalf("per dc %v", dc)
	}
	for k, v := range rack {
		if v != 10 {
			t.Fatalf("rack %s has %d, want 10 (%v)", k, v, rack)
		}
	}
}

func TestBinpackUsesFewestNodes(t *testing.T) {
	ns := nodes(10, nil) // 4 CPUs, 8 GiB each
	res := New(Config{Strategy: Binpack}).Place(ns, &Group{ServiceID: "s", Tasks: tasks(20), Reservations: Resources{NanoCPUs: 1e9, MemoryBytes: gib}})
	used := perNode(res)
	if len(res.Decisions) != 20 || len(used) != 5 { // 4 per node by CPU
		t.Fatalf("binpack used %d nodes: %v", len(used), used)
	}
	// Prefers the fuller node.
	ns = nodes(3, func(i int, n *Node) { n.Reserved.MemoryBytes = int64(i) * gib })
	res = New(Config{}).Place(ns, &Group{ServiceID: "s", Tasks: tasks(1), Reservations: Resources{MemoryBytes: gib}, Strategy: Binpack})
	if res.Decisions[0].NodeID != "n002" {
		t.Fatalf("binpack chose %s", res.Decisions[0].NodeID)
	}
}

func TestRandomIsSeededAndRespectsCapacity(t *testing.T) {
	ns := nodes(20, nil)
	g := func() *Group {
		return &Group{ServiceID: "s", Tasks: tasks(80), Reservations: Resources{NanoCPUs: 1e9}}
	}
	a := New(Config{Strategy: Random, Seed: 7}).Place(ns, g())
	b := New(Config{Strategy: Random, Seed: 7}).Place(ns, g())
	c := New(Config{Strategy: Random, Seed: 8}).Place(ns, g())
	if !slices.EqualFunc(a.Decisions, b.Decisions, func(x, y Decision) bool { return x.TaskID == y.TaskID && x.NodeID == y.NodeID }) {
		t.Fatal("same seed, different decisions")
	}
	if slices.EqualFunc(a.Decisions, c.Decisions, func(x, y Decision) bool { return x.NodeID == y.NodeID }) {
		t.Fatal("different seeds, same decisions")
	}
	for id, n := range perNode(a) {
		if n > 4 {
			t.Fatalf("%s got %d tasks with room for 4", id, n)
		}
	}
}

func TestPinnedGlobalTasksOnlyCheckTheirNode(t *testing.T) {
	ns := nodes(3, func(i int, n *Node) {
		if i == 1 {
			n.Total.MemoryBytes = gib
		}
	})
	g := &Group{ServiceID: "g", Reservations: Resources{MemoryBytes: 2 * gib}}
	for _, n := range ns {
		g.Tasks = append(g.Tasks, TaskRef{ID: "t-" + n.ID, NodeID: n.ID})
	}
	g.Tasks = append(g.Tasks, TaskRef{ID: "t-ghost", NodeID: "ghost"})
	res := New(Config{}).Place(ns, g)
	got := map[string]string{}
	for _, d := range res.Decisions {
		got[d.TaskID] = d.NodeID
	}
	if len(got) != 2 || got["t-n000"] != "n000" || got["t-n002"] != "n002" {
		t.Fatalf("decisions %v", got)
	}
	if len(res.Unplaced) != 2 || !strings.Contains(res.Unplaced[0].Error(), "insufficient memory on 1 node") {
		t.Fatalf("unplaced %v", res.Unplaced)
	}
}

func TestGroupsShareResourcesAndNamedUnits(t *testing.T) {
	ns := nodes(1, func(_ int, n *Node) { n.Named = map[string][]string{"gpu": {"G1", "G2", "G3"}} })
	res := New(Config{}).Place(ns,
		&Group{ServiceID: "a", Tasks: tasks(2), Reservations: Resources{Generic: map[string]int64{"gpu": 1}, MemoryBytes: 3 * gib}},
		&Group{ServiceID: "b", Tasks: tasks(2), Reservations: Resources{Generic: map[string]int64{"gpu": 1}, MemoryBytes: 3 * gib}})
	if len(res.Decisions) != 2 || len(res.Unplaced) != 1 {
		t.Fatalf("decisions %v unplaced %v", res.Decisions, res.Unplaced)
	}
	units := map[string]bool{}
	for _, d := range res.Decisions {
		for _, u := range d.Named {
			if units[u.ID] {
				t.Fatalf("unit %s given twice", u.ID)
			}
			units[u.ID] = true
		}
	}
	if len(units) != 2 {
		t.Fatalf("named units %v", units)
	}
	if ns[0].Named["gpu"][0] != "G1" || len(ns[0].Named["gpu"]) != 3 {
		t.Fatal("input node modified")
	}
}

// TestPropertyNoDecisionViolatesAFilter places random groups on random
// clusters and checks every decision against every filter.
func TestPropertyNoDecisionViolatesAFilter(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for round := range 300 {
		ns := nodes(1+rng.IntN(30), func(i int, n *Node) {
			n.Ready = rng.IntN(10) > 0
			n.Availability = Availability(rng.IntN(4) % 3)
			n.Total = Resources{NanoCPUs: int64(1+rng.IntN(8)) * 1e9, MemoryBytes: int64(1+rng.IntN(16)) * gib, Generic: map[string]int64{"gpu": int64(rng.IntN(3))}}
			n.Reserved = Resources{NanoCPUs: int64(rng.IntN(2)) * 1e9}
			n.Labels["zone"] = []string{"a", "b", "c"}[rng.IntN(3)]
			if rng.IntN(3) == 0 {
				n.HostPorts = []string{"80/tcp"}
			}
			if rng.IntN(4) == 0 {
				n.Role = "manager"
			}
		})
		var groups []*Group
		for gi := range 1 + rng.IntN(4) {
			g := &Group{ServiceID: fmt.Sprint("s", gi), Tasks: tasks(rng.IntN(60)), Strategy: Strategy(rng.IntN(4)),
				Reservations: Resources{NanoCPUs: int64(rng.IntN(3)) * 5e8, MemoryBytes: int64(rng.IntN(3)) * gib / 2}}
			for j := range g.Tasks {
				g.Tasks[j].ID = fmt.Sprintf("g%d-%s", gi, g.Tasks[j].ID)
			}
			if rng.IntN(3) == 0 {
				g.Reservations.Generic = map[string]int64{"gpu": 1}
			}
			if rng.IntN(3) == 0 {
				g.Constraints = []string{"node.labels.zone!=a"}
			}
			if rng.IntN(3) == 0 {
				g.HostPorts = []string{"80"}
			}
			if rng.IntN(3) == 0 {
				g.MaxReplicas = 1 + rng.IntN(3)
			}
			if rng.IntN(3) == 0 {
				g.Preferences = []string{"node.labels.zone"}
			}
			groups = append(groups, g)
		}
		res := New(Config{Seed: uint64(round)}).Place(ns, groups...)
		checkDecisions(t, ns, groups, res)
	}
}

func checkDecisions(t *testing.T, ns []*Node, groups []*Group, res Result) {
	t.Helper()
	byID := map[string]*Node{}
	for _, n := range ns {
		byID[n.ID] = n
	}
	groupOf := map[string]*Group{}
	want := 0
	for _, g := range groups {
		for _, tr := range g.Tasks {
			groupOf[tr.ID] = g
		}
		want += len(g.Tasks)
	}
	cpu, mem, gpu := map[string]int64{}, map[string]int64{}, map[string]int64{}
	perSvc := map[string]int{}
	ports := map[string]int{}
	seen := map[string]bool{}
	for _, d := range res.Decisions {
		g, n := groupOf[d.TaskID], byID[d.NodeID]
		if g == nil || n == nil || seen[d.TaskID] {
			t.Fatalf("bad decision %+v", d)
		}
		seen[d.TaskID] = true
		if !n.Ready || n.Availability != Active {
			t.Fatalf("task on unavailable node %+v", n)
		}
		for _, c := range g.Constraints {
			pc, _ := ParseConstraint(c)
			if !pc.Match(n) {
				t.Fatalf("constraint %s violated on %s", c, n.ID)
			}
		}
		cpu[n.ID] += g.Reservations.NanoCPUs
		mem[n.ID] += g.Reservations.MemoryBytes
		gpu[n.ID] += g.Reservations.Generic["gpu"]
		perSvc[g.ServiceID+"@"+n.ID]++
		if g.MaxReplicas > 0 && perSvc[g.ServiceID+"@"+n.ID] > g.MaxReplicas {
			t.Fatalf("max replicas exceeded on %s", n.ID)
		}
		if len(g.HostPorts) > 0 {
			ports[n.ID]++
			if ports[n.ID] > 1 || slices.Contains(n.HostPorts, "80/tcp") {
				t.Fatalf("host port 80 given twice on %s", n.ID)
			}
		}
	}
	for id, n := range byID {
		if cpu[id] > n.Total.NanoCPUs-n.Reserved.NanoCPUs || mem[id] > n.Total.MemoryBytes || gpu[id] > n.Total.Generic["gpu"] {
			t.Fatalf("over-committed %s: cpu %d/%d mem %d/%d gpu %d/%d", id, cpu[id], n.Total.NanoCPUs-n.Reserved.NanoCPUs, mem[id], n.Total.MemoryBytes, gpu[id], n.Total.Generic["gpu"])
		}
	}
	unplaced := 0
	for _, u := range res.Unplaced {
		unplaced += len(u.TaskIDs)
		if u.Error() == "" {
			t.Fatal("empty explanation")
		}
	}
	if unplaced+len(res.Decisions) != want {
		t.Fatalf("%d placed + %d unplaced != %d tasks", len(res.Decisions), unplaced, want)
	}
}

func TestDeterministic(t *testing.T) {
	mk := func() ([]*Node, *Group) {
		ns := nodes(40, func(i int, n *Node) { n.Labels["zone"] = fmt.Sprint(i % 3); n.TotalTasks = i % 5 })
		return ns, &Group{ServiceID: "s", Tasks: tasks(333), Preferences: []string{"node.labels.zone"}, Reservations: Resources{MemoryBytes: gib}}
	}
	n1, g1 := mk()
	n2, g2 := mk()
	slices.Reverse(n2) // input order does not matter
	a, b := New(Config{}).Place(n1, g1), New(Config{}).Place(n2, g2)
	if !slices.EqualFunc(a.Decisions, b.Decisions, func(x, y Decision) bool { return x.TaskID == y.TaskID && x.NodeID == y.NodeID }) {
		t.Fatal("same input, different decisions")
	}
}

func FuzzParseConstraint(f *testing.F) {
	for _, s := range []string{"node.labels.zone==east", "node.role!=manager", "==", "node.labels.!=x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseConstraint(s)
		if err == nil {
			c.Match(&Node{Labels: map[string]string{}})
			_ = c.String()
		}
	})
}
