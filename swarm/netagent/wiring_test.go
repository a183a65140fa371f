package netagent_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"

	"github.com/shoalproject/shoal/internal/nettest"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/netagent"
)

// wiringView is one node with a service of n tasks on network "front"
// (VIP 10.0.1.2), all on that node.
func wiringView(h *nettest.Host, n int) *viewBuilder {
	b := &viewBuilder{nets: []*api.Network{network("front", 4097, "10.0.1.0/24")}}
	b.nodes = []*api.NodeEndpoint{{ID: "n0", DataAddr: h.Addr.String()}}
	web := &api.ServiceEndpoints{ID: "web", Name: "web", VirtualIPs: []api.VirtualIP{{NetworkID: "front", Addr: "10.0.1.2/24"}}}
	for i := range n {
		web.Tasks = append(web.Tasks, &api.TaskEndpoint{ID: fmt.Sprint("web.", i), Name: fmt.Sprint("web.", i, ".x"), NodeID: "n0", Ready: true,
			Addrs: map[string]string{"front": fmt.Sprint("10.0.1.", 10+i)}})
	}
	b.services = []*api.ServiceEndpoints{web}
	return b
}

// Tasks are wired concurrently, never more than TaskWiring at once, and
// each ends up whole: its links, its DNS server answering the service's
// VIP. (Wired one at a time under the agent's lock, 50 tasks took ~15 s to
// start on a loaded node.)
func TestTaskWiringIsConcurrentAndBounded(t *testing.T) {
	const tasks, limit = 12, 3
	lab := nettest.New(t, 1)
	a := newAgent(t, lab.Hosts[0], "n0", stateDir(t, "n0"), []string{}, nil, func(a *netagent.Agent) { a.TaskWiring = limit })
	b := wiringView(lab.Hosts[0], tasks)
	apply(t, b.view(), a)
	var wg sync.WaitGroup
	paths := make([]string, tasks)
	errs := make([]error, tasks)
	for i := range tasks {
		wg.Go(func() { paths[i], _, errs[i] = a.TaskNetwork(context.Background(), b.task(fmt.Sprint("web.", i))) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("TaskNetwork(web.%d): %v", i, err)
		}
	}
	if peak := a.Stats().WiringPeak; peak != limit {
		t.Fatalf("at most %d tasks were wired at once; want exactly TaskWiring=%d (more: the bound does not hold; fewer: wiring is serialized)", peak, limit)
	}
	for i, ns := range paths {
		l := links(t, ns)
		if got := l["eth0"]; !slices.Equal(got, []string{fmt.Sprint("10.0.1.", 10+i)}) {
			t.Errorf("web.%d: eth0 has %v, want 10.0.1.%d; links %v", i, got, 10+i, l)
		}
		if _, ok := l["eth1"]; !ok {
			t.Errorf("web.%d: no gateway link eth1; links %v", i, l)
		}
		if addrs, _, err := lookup(ns, "web"); err != nil || !slices.Equal(addrs, []string{"10.0.1.2"}) {
			t.Errorf("web.%d: web resolves to %v (%v), want the VIP 10.0.1.2", i, addrs, err)
		}
	}
	if got := a.Tasks(); len(got) != tasks {
		t.Fatalf("agent knows %d tasks, want %d: %v", len(got), tasks, got)
	}
}

// A release and a wiring of the same task at once leave it whole or gone,
// never half: the release waits for the wiring.
func TestReleaseDuringWiring(t *testing.T) {
	const tasks = 8
	lab := nettest.New(t, 1)
	a := newAgent(t, lab.Hosts[0], "n0", stateDir(t, "n0"), []string{}, nil)
	b := wiringView(lab.Hosts[0], tasks)
	apply(t, b.view(), a)
	var wg sync.WaitGroup
	for i := range tasks {
		id := fmt.Sprint("web.", i)
		wg.Go(func() {
			if _, _, err := a.TaskNetwork(context.Background(), b.task(id)); err != nil {
				t.Errorf("TaskNetwork(%s): %v", id, err)
			}
		})
		wg.Go(func() {
			if err := a.ReleaseTask(context.Background(), id); err != nil {
				t.Errorf("ReleaseTask(%s): %v", id, err)
			}
		})
	}
	wg.Wait()
	known := a.Tasks()
	for i := range tasks {
		id := fmt.Sprint("web.", i)
		_, err := os.Stat(a.NetNSPath(id))
		switch listed := slices.Contains(known, id); {
		case listed && err != nil:
			t.Errorf("%s: known to the agent but its namespace is gone: %v", id, err)
		case listed:
			if l := links(t, a.NetNSPath(id)); len(l["eth0"]) != 1 {
				t.Errorf("%s: known, but wired by half: links %v", id, l)
			}
		case err == nil:
			t.Errorf("%s: released, but its namespace is left at %s", id, a.NetNSPath(id))
		}
	}
}
