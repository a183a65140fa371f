package scheduler_test

import (
	"fmt"

	"github.com/shoalproject/shoal/scheduler"
)

func Example() {
	nodes := []*scheduler.Node{
		{ID: "a", Ready: true, Labels: map[string]string{"zone": "east"}, Total: scheduler.Resources{MemoryBytes: 1 << 30}},
		{ID: "b", Ready: true, Labels: map[string]string{"zone": "east"}, Total: scheduler.Resources{MemoryBytes: 4 << 30}},
		{ID: "c", Ready: true, Labels: map[string]string{"zone": "west"}, Total: scheduler.Resources{MemoryBytes: 4 << 30}},
	}
	res := scheduler.New(scheduler.Config{}).Place(nodes, &scheduler.Group{
		ServiceID:    "web",
		Tasks:        []scheduler.TaskRef{{ID: "web.1"}, {ID: "web.2"}, {ID: "web.3"}},
		Reservations: scheduler.Resources{MemoryBytes: 2 << 30},
		Constraints:  []string{"node.labels.zone==east"},
	})
	for _, d := range res.Decisions {
		fmt.Println(d.TaskID, "->", d.NodeID)
	}
	fmt.Println(res.Unplaced[0])
	// Output:
	// web.1 -> b
	// web.2 -> b
	// no suitable node (insufficient memory on 2 nodes; constraint node.labels.zone==east not met on 1 node)
}
