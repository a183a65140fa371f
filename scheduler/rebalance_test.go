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
