package scheduler

import (
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
)

// Strategy chooses among the nodes that pass every filter.
type Strategy int

const (
	// Default means the scheduler's strategy (for a Group) or Spread (for
	// the scheduler).
	Default Strategy = iota
	// Spread puts each task on the node with the fewest tasks of its
	// service, then the fewest tasks in total.
	Spread
	// Binpack puts each task on the most allocated node that still fits it:
	// the score is the mean, over CPU and memory where the node has any, of
	// the fraction reserved; tasks with no reservations pack by task count.
	Binpack
	// Random picks uniformly among the nodes that fit, from the seed.
	Random
)

func (s Strategy) String() string {
	switch s {
	case Spread:
		return "spread"
	case Binpack:
		return "binpack"
	case Random:
		return "random"
	}
	return "default"
}

// Config configures a Scheduler.
type Config struct {
	// Strategy is the default strategy; Default means Spread.
	Strategy Strategy
	// Seed makes Random (and nothing else) reproducible.
	Seed uint64
}

// Scheduler places task groups on nodes. It does no I/O and keeps no state
// between calls: the same input and seed give the same decisions. The zero
// value spreads.
type Scheduler struct {
	cfg Config
}

// New returns a scheduler.
func New(cfg Config) *Scheduler { return &Scheduler{cfg: cfg} }

// unlimited is the capacity of a node for tasks that reserve nothing.
const unlimited = math.MaxInt32

// Filter names, as they appear in explanations.
const (
	reasonNotReady    = "node not ready"
	reasonNotActive   = "node not active (paused or drained)"
	reasonCPU         = "insufficient CPU"
	reasonMemory      = "insufficient memory"
	reasonGenericFmt  = "insufficient generic resource %s"
	reasonPortFmt     = "host-mode port %s in use"
	reasonMaxReplicas = "max replicas per node reached"
	reasonPlatform    = "no platform of the image matches the node"
	reasonNotThisNode = "node is not the one the task is assigned to"
	reasonNoSuchNode  = "node not found"
)

type nodeState struct {
	n        *Node
	rank     int32 // position in ID order: the final tie-breaker
	cpu, mem int64 // available
	generic  map[string]int64
	named    map[string][]string
	ports    map[string]bool
	total    int
	// owned* say whether the maps are this state's copies (copy on write).
	ownedGeneric, ownedNamed, ownedPorts bool
}

type placer struct {
	nodes []*nodeState
	byID  map[string]int32
	svc   map[string][]int32
	rng   *rand.Rand
	def   Strategy
	res   Result
}

// Place decides where the tasks of each group go, in order; each group sees
// the resources taken by the groups before it. Nodes are not modified.
func (s *Scheduler) Place(nodes []*Node, groups ...*Group) Result {
	p := &placer{byID: make(map[string]int32, len(nodes)), svc: map[string][]int32{},
		rng: rand.New(rand.NewPCG(s.cfg.Seed, 0x5ca1ab1e)), def: s.cfg.Strategy}
	if p.def == Default {
		p.def = Spread
	}
	order := make([]int, len(nodes))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return nodes[order[a]].ID < nodes[order[b]].ID })
	p.nodes = make([]*nodeState, len(nodes))
	for rank, i := range order {
		n := nodes[i]
		ns := &nodeState{n: n, rank: int32(rank), cpu: n.Total.NanoCPUs - n.Reserved.NanoCPUs,
			mem: n.Total.MemoryBytes - n.Reserved.MemoryBytes, generic: n.Total.Generic, named: n.Named, total: n.TotalTasks}
		if len(n.Reserved.Generic) > 0 {
			ns.generic = make(map[string]int64, len(n.Total.Generic))
			for k, v := range n.Total.Generic {
				ns.generic[k] = v - n.Reserved.Generic[k]
			}
			ns.ownedGeneric = true
		}
		p.nodes[i] = ns
		p.byID[n.ID] = int32(i)
	}
	total := 0
	for _, g := range groups {
		total += len(g.Tasks)
	}
	p.res.Decisions = make([]Decision, 0, total)
	for _, g := range groups {
		p.placeGroup(g)
	}
	return p.res
}

// groupCtx is a group's parsed requirements and per-node verdicts.
type groupCtx struct {
	g           *Group
	constraints []Constraint
	ports       []string
	svc         []int32
	capacity    []int32 // per node; 0 for nodes that fail a static filter
	static      []bool  // passed the static filters
	fails       map[string]int
	strategy    Strategy
}

func (p *placer) serviceCounts(id string) []int32 {
	if c, ok := p.svc[id]; ok {
		return c
	}
	c := make([]int32, len(p.nodes))
	for i, ns := range p.nodes {
		c[i] = int32(ns.n.ServiceTasks[id])
	}
	p.svc[id] = c
	return c
}

func normPort(s string) string {
	if !strings.Contains(s, "/") {
		return s + "/tcp"
	}
	return strings.ToLower(s)
}

func (p *placer) placeGroup(g *Group) {
	if len(g.Tasks) == 0 {
		return
	}
	c := &groupCtx{g: g, fails: map[string]int{}, strategy: g.Strategy}
	if c.strategy == Default {
		c.strategy = p.def
	}
	for _, s := range g.Constraints {
		con, err := ParseConstraint(s)
		if err != nil {
			p.fail(c, g.Tasks, map[string]int{err.Error(): len(p.nodes)})
			return
		}
		c.constraints = append(c.constraints, con)
	}
	for _, port := range g.HostPorts {
		c.ports = append(c.ports, normPort(port))
	}
	c.svc = p.serviceCounts(g.ServiceID)
	c.capacity = make([]int32, len(p.nodes))
	c.static = make([]bool, len(p.nodes))
	var free []TaskRef
	var pinned []TaskRef
	for _, t := range g.Tasks {
		if t.NodeID != "" {
			pinned = append(pinned, t)
		} else {
			free = append(free, t)
		}
	}
	if len(free) > 0 {
		for i, ns := range p.nodes {
			if reason := c.staticFilter(ns.n); reason != "" {
				c.fails[reason]++
				continue
			}
			c.static[i] = true
			c.capacity[i], _ = p.capacity(c, int32(i))
		}
		p.placeFree(c, free)
	}
	for _, t := range pinned {
		p.placePinned(c, t)
	}
}

// staticFilter returns the first filter a node fails that no placement in
// this round can change, or "".
func (c *groupCtx) staticFilter(n *Node) string {
	if !n.Ready {
		return reasonNotReady
	}
	if n.Availability != Active {
		return reasonNotActive
	}
	for _, con := range c.constraints {
		if !con.Match(n) {
			return "constraint " + con.String() + " not met"
		}
	}
	if len(c.g.Platforms) > 0 {
		ok := false
		for _, pl := range c.g.Platforms {
			if (pl.OS == "" || strings.EqualFold(pl.OS, n.OS)) && (pl.Arch == "" || normArch(pl.Arch) == normArch(n.Arch)) {
				ok = true
				break
			}
		}
		if !ok {
			return reasonPlatform
		}
	}
	return ""
}

// capacity is how many more tasks of the group fit on node i now, and the
// reason when none does.
func (p *placer) capacity(c *groupCtx, i int32) (int32, string) {
	ns, g := p.nodes[i], c.g
	capacity, reason := int64(unlimited), ""
	limit := func(n int64, why string) {
		if n < capacity {
			capacity = max(n, 0)
			if capacity == 0 && reason == "" {
				reason = why
			}
		}
	}
	if g.MaxReplicas > 0 {
		limit(int64(g.MaxReplicas)-int64(c.svc[i]), reasonMaxReplicas)
	}
	for _, port := range c.ports {
		if ns.ports[port] || slices.Contains(ns.n.HostPorts, port) {
			limit(0, sprintf(reasonPortFmt, port))
		}
	}
	if len(c.ports) > 0 {
		limit(1, "")
	}
	if r := g.Reservations.NanoCPUs; r > 0 {
		limit(ns.cpu/r, reasonCPU)
	}
	if r := g.Reservations.MemoryBytes; r > 0 {
		limit(ns.mem/r, reasonMemory)
	}
	for kind, r := range g.Reservations.Generic {
		if r > 0 {
			limit((ns.generic[kind]+int64(len(ns.named[kind])))/r, sprintf(reasonGenericFmt, kind))
		}
	}
	return int32(capacity), reason
}

// assign records a decision and takes the task's resources from node i.
func (p *placer) assign(c *groupCtx, i int32, t TaskRef) {
	ns, g := p.nodes[i], c.g
	d := Decision{TaskID: t.ID, NodeID: ns.n.ID}
	ns.cpu -= g.Reservations.NanoCPUs
	ns.mem -= g.Reservations.MemoryBytes
	for kind, r := range g.Reservations.Generic {
		if !ns.ownedGeneric {
			ns.generic, ns.ownedGeneric = cloneMap(ns.generic), true
		}
		take := min(r, max(ns.generic[kind], 0))
		ns.generic[kind] -= take
		if rest := r - take; rest > 0 {
			if !ns.ownedNamed {
				ns.named, ns.ownedNamed = cloneNamed(ns.named), true
			}
			units := ns.named[kind]
			for _, u := range units[:rest] {
				d.Named = append(d.Named, NamedUnit{Kind: kind, ID: u})
			}
			ns.named[kind] = units[rest:]
		}
	}
	if len(c.ports) > 0 {
		if !ns.ownedPorts {
			m := make(map[string]bool, len(ns.ports)+len(c.ports))
			for k := range ns.ports {
				m[k] = true
			}
			ns.ports, ns.ownedPorts = m, true
		}
		for _, port := range c.ports {
			ns.ports[port] = true
		}
	}
	ns.total++
	c.svc[i]++
	p.res.Decisions = append(p.res.Decisions, d)
}

func (p *placer) placePinned(c *groupCtx, t TaskRef) {
	i, ok := p.byID[t.NodeID]
	if !ok {
		p.fail(c, []TaskRef{t}, map[string]int{reasonNoSuchNode: 1})
		return
	}
	if reason := c.staticFilter(p.nodes[i].n); reason != "" {
		p.fail(c, []TaskRef{t}, map[string]int{reason: 1})
		return
	}
	capacity, reason := p.capacity(c, i)
	if capacity < 1 {
		p.fail(c, []TaskRef{t}, map[string]int{reason: 1})
		return
	}
	p.assign(c, i, t)
}

func (p *placer) fail(c *groupCtx, tasks []TaskRef, fails map[string]int) {
	e := &PlacementError{ServiceID: c.g.ServiceID, Failures: fails, Nodes: len(p.nodes)}
	for _, t := range tasks {
		e.TaskIDs = append(e.TaskIDs, t.ID)
	}
	if len(tasks) == 1 && tasks[0].NodeID != "" {
		e.Nodes = 1
	}
	p.res.Unplaced = append(p.res.Unplaced, e)
}

// branch is a node of the preference tree: children by label value, or a
// leaf with nodes.
type branch struct {
	children []*branch
	nodes    []int32
	count    int64 // tasks of the service already in the subtree
	capacity int64
}

func (p *placer) placeFree(c *groupCtx, tasks []TaskRef) {
	var eligible []int32
	for i := range p.nodes {
		if c.capacity[i] > 0 {
			eligible = append(eligible, int32(i))
		}
	}
	root := p.buildTree(c, c.g.Preferences, eligible)
	k := int64(len(tasks))
	placed := min(k, root.capacity)
	next := 0
	p.allot(c, root, placed, tasks, &next)
	if next < len(tasks) {
		fails := c.fails
		for i := range p.nodes {
			if !c.static[i] {
				continue
			}
			if capacity, reason := p.capacity(c, int32(i)); capacity == 0 && reason != "" {
				fails[reason]++
			}
		}
		p.fail(c, tasks[next:], fails)
	}
}

func (p *placer) buildTree(c *groupCtx, prefs []string, nodes []int32) *branch {
	b := &branch{}
	for _, i := range nodes {
		b.count += int64(c.svc[i])
		b.capacity += int64(c.capacity[i])
	}
	if len(prefs) == 0 {
		b.nodes = nodes
		return b
	}
	label, engine := prefLabel(prefs[0])
	byValue := map[string][]int32{}
	var values []string
	for _, i := range nodes {
		labels := p.nodes[i].n.Labels
		if engine {
			labels = p.nodes[i].n.EngineLabels
		}
		v, ok := labels[label]
		if !ok {
			v = "\x00" // nodes without the label form their own branch
		}
		if _, seen := byValue[v]; !seen {
			values = append(values, v)
		}
		byValue[v] = append(byValue[v], i)
	}
	sort.Strings(values)
	for _, v := range values {
		b.children = append(b.children, p.buildTree(c, prefs[1:], byValue[v]))
	}
	return b
}

func prefLabel(pref string) (label string, engine bool) {
	pref = strings.TrimPrefix(pref, "spread=")
	switch {
	case strings.HasPrefix(pref, "node.labels."):
		return pref[len("node.labels."):], false
	case strings.HasPrefix(pref, "engine.labels."):
		return pref[len("engine.labels."):], true
	}
	return pref, false
}

// allot places k tasks in a subtree: at each level, one at a time to the
// branch with the fewest tasks of the service (existing plus allotted) that
// still has room, so the branches end up as even as their capacity allows.
func (p *placer) allot(c *groupCtx, b *branch, k int64, tasks []TaskRef, next *int) {
	if k == 0 {
		return
	}
	if b.children == nil {
		p.placeLeaf(c, b.nodes, int(k), tasks, next)
		return
	}
	given := make([]int64, len(b.children))
	h := minHeap{less: func(x, y int32) bool {
		cx, cy := b.children[x].count+given[x], b.children[y].count+given[y]
		return cx < cy || cx == cy && x < y
	}}
	for i, ch := range b.children {
		if ch.capacity > 0 {
			h.items = append(h.items, int32(i))
		}
	}
	h.init()
	for range k {
		x := h.pop()
		given[x]++
		if given[x] < b.children[x].capacity {
			h.push(x)
		}
	}
	for i, ch := range b.children {
		p.allot(c, ch, given[i], tasks, next)
	}
}

func (p *placer) placeLeaf(c *groupCtx, nodes []int32, k int, tasks []TaskRef, next *int) {
	capacity := c.capacity
	take := func(i int32) {
		p.assign(c, i, tasks[*next])
		*next++
		capacity[i]--
	}
	switch c.strategy {
	case Binpack:
		score := make([]float64, len(p.nodes))
		for _, i := range nodes {
			score[i] = p.binpackScore(c, i)
		}
		order := slices.Clone(nodes)
		sort.Slice(order, func(a, b int) bool {
			x, y := order[a], order[b]
			if score[x] != score[y] {
				return score[x] > score[y]
			}
			return p.nodes[x].rank < p.nodes[y].rank
		})
		for _, i := range order {
			for k > 0 && capacity[i] > 0 {
				take(i)
				k--
			}
		}
	case Random:
		avail := slices.Clone(nodes)
		for ; k > 0 && len(avail) > 0; k-- {
			j := p.rng.IntN(len(avail))
			take(avail[j])
			if capacity[avail[j]] == 0 {
				avail[j] = avail[len(avail)-1]
				avail = avail[:len(avail)-1]
			}
		}
	default:
		svc := c.svc
		h := minHeap{items: slices.Clone(nodes), less: func(x, y int32) bool {
			if svc[x] != svc[y] {
				return svc[x] < svc[y]
			}
			if tx, ty := p.nodes[x].total, p.nodes[y].total; tx != ty {
				return tx < ty
			}
			return p.nodes[x].rank < p.nodes[y].rank
		}}
		h.init()
		for ; k > 0 && len(h.items) > 0; k-- {
			i := h.pop()
			take(i)
			if capacity[i] > 0 {
				h.push(i)
			}
		}
	}
}

// binpackScore is how full a node is: the mean reserved fraction of CPU and
// memory (those the node has), or its task count for tasks that reserve
// nothing.
func (p *placer) binpackScore(c *groupCtx, i int32) float64 {
	ns := p.nodes[i]
	r := c.g.Reservations
	if r.NanoCPUs == 0 && r.MemoryBytes == 0 {
		return float64(ns.total)
	}
	var sum float64
	var n int
	if t := ns.n.Total.NanoCPUs; t > 0 {
		sum += float64(t-ns.cpu) / float64(t)
		n++
	}
	if t := ns.n.Total.MemoryBytes; t > 0 {
		sum += float64(t-ns.mem) / float64(t)
		n++
	}
	if n == 0 {
		return 0
	}
	return sum / float64(n)
}

func cloneMap(m map[string]int64) map[string]int64 {
	c := make(map[string]int64, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func cloneNamed(m map[string][]string) map[string][]string {
	c := make(map[string][]string, len(m))
	for k, v := range m {
		c[k] = v // assign only reslices: sharing the backing array is safe
	}
	return c
}
