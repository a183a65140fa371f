// Package scheduler is Shoal's placement engine: it decides which node runs
// each task. It does no I/O and imports nothing else of Shoal: it takes
// nodes and task groups in its own small types and returns decisions, so a
// host program can embed it alone.
//
// Filters (each named in explanations): node ready and active; resources
// (CPU, memory, discrete and named generic resources, net of reservations
// already made); constraints (node.id, node.hostname, node.role,
// node.platform.os, node.platform.arch, node.labels.KEY, engine.labels.KEY
// with == and !=); platform; host-mode port conflicts; max replicas per node.
// Strategies: Spread (default), Binpack, Random. Placement preferences spread
// tasks evenly over label values, several levels deep.
//
// Tasks of a group are identical, so each node's capacity for the group is
// computed once and the tasks are handed out from a heap (spread), a sorted
// fill (binpack) or a seeded draw (random): O(nodes + tasks log nodes), not
// a scan of all nodes per task.
//
//	res := scheduler.New(scheduler.Config{Strategy: scheduler.Spread}).Place(nodes, &scheduler.Group{
//		ServiceID:    "web",
//		Tasks:        []scheduler.TaskRef{{ID: "t1"}, {ID: "t2"}},
//		Reservations: scheduler.Resources{MemoryBytes: 256 << 20},
//		Constraints:  []string{"node.labels.zone==east"},
//	})
//	for _, d := range res.Decisions { ... }         // task -> node
//	for _, e := range res.Unplaced { log.Print(e) } // no suitable node (insufficient memory on 3 nodes; ...)
package scheduler
