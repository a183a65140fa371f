package netagent_test

import (
	"context"
	"log"
	"net/netip"

	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/netagent"
)

// A worker's use of the agent: start it, report its WireGuard key, apply
// each assignment's network view, wire tasks before they start, prune after
// a restart, release removed tasks. (It needs root; not run as a test.)
func Example() {
	ctx := context.Background()
	a := &netagent.Agent{
		NodeID:   "node-1",
		DataAddr: netip.MustParseAddr("192.0.2.10"),
		StateDir: "/var/lib/shoal/net",
	}
	if err := a.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer a.Close()
	desc := api.NodeDescription{WireGuardKey: a.PublicKey()}
	_ = desc // sent to the managers with the node's session

	var assignment api.Assignment // from the managers
	if err := a.Apply(ctx, assignment.Network); err != nil {
		log.Print(err) // what the kernel refused; the rest is applied
	}
	keep := map[string]bool{}
	for _, t := range assignment.Tasks {
		netns, resolvConf, err := a.TaskNetwork(ctx, t) // the executor's Network hook
		if err != nil {
			log.Print(err)
			continue
		}
		log.Print(t.ID, netns, resolvConf)
		keep[t.ID] = true
	}
	a.Prune(ctx, keep)          // tasks that ended while no agent ran
	a.ReleaseTask(ctx, "old.1") // a task removed
}
