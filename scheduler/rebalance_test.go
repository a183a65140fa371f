package scheduler

import (
	"fmt"
	"testing"
)

func TestRebalanceEvensOutAfterNodesJoin(t *testing.T) {
	// 30 tasks on 3 nodes; 3 new nodes join empty; one old node is drained.
	ns := nodes(6, func(i int, n *Node) {
		if i == 0 {
			n.Availability = Drain
		}
	})
	placement := map[string][]string{}
	k := 0
	for i := range 3 {
		for range 10 {
			placement[ns[i].ID] = append(placement[ns[i].ID], fmt.Sprintf("t%d", k))
			k++
		}
	}
	placement["gone"] = []string{"orphan"} // a node that left
	moves := New(Config{}).Rebalance(ns, &Group{ServiceID: "s"}, placement, 0)
	count := map[string]int{}
	for id, ts := range placement {
		count[id] = len(ts)
	}
	movedTask := map[string]bool{}
	for _, m := range moves {
		if movedTask[m.TaskID] {
			t.Fatalf("task %s moved twice", m.TaskID)
		}
		movedTask[m.TaskID] = true
		count[m.From]--
		count[m.To]++
		if m.To == "n000" || m.To == "gone" {
			t.Fatalf("moved onto an ineligible node: %+v", m)
		}
	}
	if count["n000"] != 0 || count["gone"] != 0 {
		t.Fatalf("tasks left on drained/gone nodes: %v", count)
	}
	lo, hi := 1<<30, 0
	for _, n := range ns[1:] {
		lo, hi = min(lo, count[n.ID]), max(hi, count[n.ID])
	}
	if hi-lo > 1 {
		t.Fatalf("after rebalance per node %v", count)
	}
	// Minimal: 11 tasks leave n000 and gone; 31 tasks on 5 nodes end 7,6,6,6,6,
	// so n001 and n002 (10 each) shed 7 between them: 18 moves.
	if len(moves) != 18 {
		t.Fatalf("%d moves, want 18", len(moves))
	}
	if lim := New(Config{}).Rebalance(ns, &Group{ServiceID: "s"}, placement, 5); len(lim) != 5 {
		t.Fatalf("maxMoves: %d", len(lim))
	}
	// Already balanced: nothing to do.
	if m := New(Config{}).Rebalance(ns[1:3], &Group{ServiceID: "s"}, map[string][]string{"n001": {"a"}, "n002": {"b", "c"}}, 0); len(m) != 0 {
		t.Fatalf("balanced input moved %v", m)
	}
}

// apply returns the task count per node after the moves.
func apply(placement map[string][]string, moves []Move) map[string]int {
	count := map[string]int{}
	for id, ts := range placement {
		count[id] = len(ts)
	}
	for _, m := range moves {
		count[m.From]--
		count[m.To]++
	}
	return count
}

func TestRebalanceFollowsPreferences(t *testing.T) {
	// Zone a has one node, zone b three. Eight tasks, all on zone b's
	// first node. Spread over zones: 4 in a, 4 in b (2, 1, 1).
	ns := nodes(4, func(i int, n *Node) {
		n.Labels["zone"] = "b"
		if i == 0 {
			n.Labels["zone"] = "a"
		}
	})
	placement := map[string][]string{"n001": {"t0", "t1", "t2", "t3", "t4", "t5", "t6", "t7"}}
	g := &Group{ServiceID: "s", Preferences: []string{"spread=node.labels.zone"}}
	moves := New(Config{}).Rebalance(ns, g, placement, 0)
	count := apply(placement, moves)
	if count["n000"] != 4 || count["n001"]+count["n002"]+count["n003"] != 4 || count["n001"] != 2 || count["n002"] != 1 || count["n003"] != 1 {
		t.Fatalf("with a zone preference: %v", count)
	}
	if len(moves) != 6 {
		t.Fatalf("%d moves, want the minimal 6", len(moves))
	}
	// The same without the preference evens out nodes instead.
	count = apply(placement, New(Config{}).Rebalance(ns, &Group{ServiceID: "s"}, placement, 0))
	for _, n := range ns {
		if count[n.ID] != 2 {
			t.Fatalf("without preference: %v", count)
		}
	}
	// Balanced by zone already: nothing moves, although nodes differ by 3.
	balanced := map[string][]string{"n000": {"a", "b", "c", "d"}, "n001": {"e"}, "n002": {"f", "g"}, "n003": {"h"}}
	if m := New(Config{}).Rebalance(ns, g, balanced, 0); len(m) != 0 {
		t.Fatalf("balanced by zone, moved %v", m)
	}
	// Two levels: zone, then rack.
	ns2 := nodes(8, func(i int, n *Node) {
		n.Labels["zone"] = []string{"a", "b"}[i/4]
		n.Labels["rack"] = []string{"r1", "r2"}[i/2%2]
	})
	all := map[string][]string{"n000": nil}
	for i := range 16 {
		all["n000"] = append(all["n000"], fmt.Sprint("t", i))
	}
	g2 := &Group{ServiceID: "s", Preferences: []string{"spread=node.labels.zone", "spread=node.labels.rack"}}
	count = apply(all, New(Config{}).Rebalance(ns2, g2, all, 0))
	for _, n := range ns2 {
		if count[n.ID] != 2 {
			t.Fatalf("two levels, 16 tasks on 8 nodes: %v", count)
		}
	}
}
