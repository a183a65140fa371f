package swarm_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/swarmtest"
)

// keyOf is the WireGuard key a view says a node has.
func keyOf(v *api.NetworkView, nodeID string) string {
	if v == nil {
		return ""
	}
	for _, n := range v.Nodes {
		if n.ID == nodeID {
			return n.WireGuardKey
		}
	}
	return ""
}

// A node whose network agent rotated its WireGuard key tells the managers at
// once (Worker.DescriptionChanged, which a swarm.Node calls from the agent's
// OnKeyChange), and the other nodes get the new key in their network view
// well before the next heartbeat: until they have it, their encrypted
// traffic to the node is lost. The heartbeat here is a minute, so a key
// that waited for it would miss the bound.
func TestRotatedKeyReachesPeersBeforeTheNextHeartbeat(t *testing.T) {
	nets := map[string]*fakeNet{"node0": {}, "node1": {}}
	addrs := map[string]string{"node0": "127.0.0.2", "node1": "127.0.0.3"}
	keys := map[string]*atomic.Value{"node0": {}, "node1": {}}
	keys["node0"].Store("key-of-node0-first")
	keys["node1"].Store("key-of-node1-first")
	var mu sync.Mutex
	workers := map[string]*swarm.Worker{}
	c := swarmtest.New(t, swarmtest.Options{Workers: 2, Executor: testImages, HeartbeatPeriod: time.Minute,
		Worker: func(w *swarm.Worker) {
			id := w.NodeID
			d := swarmtest.DefaultDescription(id)
			d.DataAddr = addrs[id]
			w.Describe = func() api.NodeDescription {
				d := d
				d.WireGuardKey = keys[id].Load().(string)
				return d
			}
			w.Network = nets[id]
			mu.Lock()
			workers[id] = w
			mu.Unlock()
		}})
	c.WaitFor("node1's view has node0's first key", func() bool {
		v, _ := nets["node1"].view()
		return keyOf(v, "node0") == "key-of-node0-first"
	})

	keys["node0"].Store("key-of-node0-rotated")
	rotated := time.Now()
	mu.Lock()
	workers["node0"].DescriptionChanged()
	mu.Unlock()
	const bound = 10 * time.Second // the heartbeat is a minute
	for {
		v, _ := nets["node1"].view()
		if keyOf(v, "node0") == "key-of-node0-rotated" {
			break
		}
		if time.Since(rotated) > bound {
			t.Fatalf("node1's view still has node0's key %q %v after the rotation; want the new key before the next heartbeat (%v)",
				keyOf(v, "node0"), bound, time.Minute)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("the rotated key reached the peer's view in %v", time.Since(rotated).Round(time.Millisecond))
	if n, err := c.Leader().Node("node0"); err != nil || n.Description.WireGuardKey != "key-of-node0-rotated" {
		t.Fatalf("node0 in the managers' store: key %q %v", n.Description.WireGuardKey, err)
	}
}
