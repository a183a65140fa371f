package swarm_test

import (
	"context"
	"slices"
	"testing"

	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/swarmtest"
)

// Workers that joined through the only manager there was learn the
// managers added after them from the managers' answers, and when that
// first manager goes away they go on through the others: new tasks reach
// them. Nobody told them the new managers' addresses.
func TestWorkersLearnManagersAddedAfterThem(t *testing.T) {
	ctx := context.Background()
	c := swarmtest.NewTLS(t, swarmtest.TLSOptions{Workers: 2})
	m1, m2 := c.Join("m1", true), c.Join("m2", true)
	for _, w := range []string{"node0", "node1"} {
		c.WaitFor(w+" to know the 3 managers", func() bool {
			known := c.Node(w).Managers()
			return slices.Contains(known, m1.Addr()) && slices.Contains(known, m2.Addr()) && slices.Contains(known, c.Node("m0").Addr())
		})
	}
	c.Kill("m0") // the address every node joined through
	spec := service("after", api.Replicated(2))
	spec.TaskTemplate.Placement = &api.Placement{Constraints: []string{"node.role==worker"}}
	var svc *api.Service
	c.WaitFor("a write through the managers left", func() bool {
		var err error
		svc, err = c.Client().CreateService(ctx, spec)
		return err == nil
	})
	c.WaitFor("the new service running on both workers", func() bool {
		on := map[string]bool{}
		for _, tk := range running(t, c.Client(), svc.ID) {
			on[tk.NodeID] = true
		}
		return on[c.NodeID("node0")] && on[c.NodeID("node1")]
	})
}
