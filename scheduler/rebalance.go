package scheduler

import (
	"cmp"
	"math"
	"slices"
)

// Move proposes moving one task of a service to another node.
type Move struct {
	TaskID, From, To string
}

// Rebalance proposes moves that even out one service over the nodes that may
// run it, as placing it afresh would, while moving as few tasks as
// possible: tasks on nodes the group may no longer use (a filter fails,
// drained, gone) move first, then tasks from the fullest nodes to the
// emptiest. With placement preferences the evening is level by level, as in
// Place: label values first, then nodes within each. maxMoves caps the
// moves (0: no limit). placement maps node IDs to the service's task IDs
// there; g gives the service's filters, preferences and per-task
// reservations. This is what `service update --force` and rebalancing when
// nodes join need (moby#24103).
func (s *Scheduler) Rebalance(nodes []*Node, g *Group, placement map[string][]string, maxMoves int) []Move {
	c := &groupCtx{g: g, fails: map[string]int{}}
	for _, cs := range g.Constraints {
		con, err := ParseConstraint(cs)
		if err != nil {
			return nil
		}
		c.constraints = append(c.constraints, con)
	}
	for _, port := range g.HostPorts {
		c.ports = append(c.ports, normPort(port))
	}
	byID := map[string]*Node{}
	ids := make([]string, 0, len(nodes))
	for _, n := range nodes {
		ids = append(ids, n.ID)
		byID[n.ID] = n
	}
	for id := range placement {
		if byID[id] == nil {
			ids = append(ids, id) // a node that is gone: its tasks must move
		}
	}
	slices.Sort(ids)
	p := &placer{nodes: make([]*nodeState, len(ids))}
	c.svc = make([]int32, len(ids))
	c.capacity = make([]int32, len(ids))
	eligible := make([]bool, len(ids))
	lists := make([][]string, len(ids))
	var total int64
	var inTree []int32
	for i, id := range ids {
		lists[i] = slices.Clone(placement[id])
		c.svc[i] = int32(len(lists[i]))
		total += int64(c.svc[i])
		n := byID[id]
		if n == nil {
			p.nodes[i] = &nodeState{n: &Node{ID: id}, rank: int32(i)}
			continue
		}
		// Reservations of the service's own tasks count as free: they leave
		// with the tasks, and only the balance of the service matters here.
		p.nodes[i] = &nodeState{n: n, rank: int32(i), cpu: n.Total.NanoCPUs - n.Reserved.NanoCPUs,
			mem: n.Total.MemoryBytes - n.Reserved.MemoryBytes, generic: n.Total.Generic, named: n.Named, total: n.TotalTasks}
		if c.staticFilter(n) == "" {
			eligible[i] = true
			room, _ := p.capacity(c, int32(i))
			c.capacity[i] = int32(min(int64(c.svc[i])+int64(room), math.MaxInt32))
			inTree = append(inTree, int32(i))
		}
	}
	// The target: the tasks spread as evenly as capacity allows over the
	// preference tree, ties going to whoever holds more tasks already.
	target := make([]int64, len(ids))
	root := p.buildTree(c, g.Preferences, inTree)
	var spread func(b *branch, k int64)
	spread = func(b *branch, k int64) {
		if b.children == nil {
			caps, curs := make([]int64, len(b.nodes)), make([]int64, len(b.nodes))
			for j, i := range b.nodes {
				caps[j], curs[j] = int64(c.capacity[i]), int64(c.svc[i])
			}
			for j, t := range waterfill(caps, curs, k) {
				target[b.nodes[j]] = t
			}
			return
		}
		caps, curs := make([]int64, len(b.children)), make([]int64, len(b.children))
		for j, ch := range b.children {
			caps[j], curs[j] = ch.capacity, ch.count
		}
		for j, t := range waterfill(caps, curs, k) {
			spread(b.children[j], t)
		}
	}
	spread(root, min(total, root.capacity))

	surplus := func(i int32) int64 { return int64(c.svc[i]) - target[i] }
	srcKey := func(i int32) int64 {
		k := surplus(i)
		if !eligible[i] {
			k += 1 << 40 // move off ineligible nodes first
		}
		return k
	}
	src := newIndexedHeap(len(ids), func(x, y int32) bool {
		if kx, ky := srcKey(x), srcKey(y); kx != ky {
			return kx > ky
		}
		return x < y
	})
	dst := newIndexedHeap(len(ids), func(x, y int32) bool {
		if sx, sy := surplus(x), surplus(y); sx != sy {
			return sx < sy // the largest deficit first
		}
		return x < y
	})
	update := func(i int32) {
		src.set(i, surplus(i) > 0)
		dst.set(i, surplus(i) < 0)
	}
	for i := range ids {
		update(int32(i))
	}
	var moves []Move
	for src.len() > 0 && dst.len() > 0 && (maxMoves == 0 || len(moves) < maxMoves) {
		from, to := src.top(), dst.top()
		last := len(lists[from]) - 1
		moves = append(moves, Move{TaskID: lists[from][last], From: ids[from], To: ids[to]})
		lists[from] = lists[from][:last]
		c.svc[from]--
		c.svc[to]++
		update(from)
		update(to)
	}
	return moves
}

// waterfill splits k as evenly as the capacities allow: every part gets the
// same level L (or its capacity, if lower), and what is left goes one each
// to the parts that can take one more, those holding most (curs) first.
func waterfill(caps, curs []int64, k int64) []int64 {
	out := make([]int64, len(caps))
	fill := func(level int64) (sum int64) {
		for _, c := range caps {
			sum += min(c, level)
		}
		return sum
	}
	var hi int64
	for _, c := range caps {
		hi = max(hi, c)
	}
	lo := int64(0) // largest level with fill(level) <= k
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		if fill(mid) <= k {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	left := k
	var more []int
	for j, c := range caps {
		out[j] = min(c, lo)
		left -= out[j]
		if c > lo {
			more = append(more, j)
		}
	}
	slices.SortStableFunc(more, func(a, b int) int { return cmp.Compare(curs[b], curs[a]) })
	for _, j := range more {
		if left == 0 {
			break
		}
		out[j]++
		left--
	}
	return out
}
