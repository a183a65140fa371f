package scheduler

import "slices"

// Move proposes moving one task of a service to another node.
type Move struct {
	TaskID, From, To string
}

// Rebalance proposes moves that even out one service over the nodes that may
// run it, until the busiest and the idlest of them differ by at most one task
// (or maxMoves is reached; 0 means no limit). Tasks on nodes the group may no
// longer use (a filter fails, drained, gone) move first. placement maps node
// IDs to the service's task IDs there; g gives the service's filters and
// per-task reservations. Preferences are not considered. This is what
// `service update --force` and rebalancing when nodes join need (moby#24103).
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
	eligible := make([]bool, len(ids))
	room := make([]int32, len(ids))
	lists := make([][]string, len(ids))
	for i, id := range ids {
		lists[i] = slices.Clone(placement[id])
		c.svc[i] = int32(len(lists[i]))
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
			room[i], _ = p.capacity(c, int32(i))
		}
	}
	srcKey := func(i int32) int64 {
		k := int64(c.svc[i])
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
		if c.svc[x] != c.svc[y] {
			return c.svc[x] < c.svc[y]
		}
		return x < y
	})
	update := func(i int32) {
		src.set(i, c.svc[i] > 0)
		dst.set(i, eligible[i] && room[i] > 0)
	}
	for i := range ids {
		update(int32(i))
	}
	var moves []Move
	for src.len() > 0 && dst.len() > 0 && (maxMoves == 0 || len(moves) < maxMoves) {
		from, to := src.top(), dst.top()
		if from == to || eligible[from] && c.svc[from]-c.svc[to] <= 1 {
			break
		}
		last := len(lists[from]) - 1
		moves = append(moves, Move{TaskID: lists[from][last], From: ids[from], To: ids[to]})
		lists[from] = lists[from][:last]
		c.svc[from]--
		c.svc[to]++
		room[to]--
		if eligible[from] {
			room[from]++
		}
		update(from)
		update(to)
	}
	return moves
}
