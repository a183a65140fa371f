package swarm

import (
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/shoalproject/shoal/swarm/api"
)

// The assignment stream sends changes; the receiver must rebuild exactly
// the assignment the sender had, whatever the sequence (tasks, secrets,
// configs and the network view appearing, changing and going, the view
// switched off and on, its version rising alone, drained tasks), and a
// message must carry only what changed.
func TestAssignmentWireRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var version uint64
	next := func() uint64 { version++; return version }
	tasks := map[string]*api.Task{}
	secrets := map[string]*api.Secret{}
	services := map[string]*api.ServiceEndpoints{}
	nodes := map[string]*api.NodeEndpoint{}
	networks := map[string]*api.Network{}
	networkOn := false
	kept := map[string]bool{}
	drained := map[string]bool{}
	var viewVersion uint64
	snd, rcv := newAssignmentSender(), newAssignmentReceiver()
	for step := range 2000 {
		id := fmt.Sprint(rng.IntN(8))
		switch rng.IntN(10) {
		case 0:
			tasks[id] = &api.Task{Meta: api.Meta{ID: id, Version: next()}, ServiceID: "s"}
		case 1:
			delete(tasks, id)
		case 2:
			secrets[id] = &api.Secret{Meta: api.Meta{ID: id, Version: next()}, Spec: api.SecretSpec{Data: []byte(id)}}
		case 3:
			if rng.IntN(2) == 0 {
				delete(secrets, id)
			} else {
				delete(services, id)
			}
		case 4:
			// A book entry is replaced by a new pointer when it changes.
			services[id] = &api.ServiceEndpoints{ID: id, Name: fmt.Sprint("svc", next())}
		case 5:
			nodes[id] = &api.NodeEndpoint{ID: id, DataAddr: fmt.Sprintf("10.0.0.%d", next()%250)}
			networks[id] = &api.Network{Meta: api.Meta{ID: id, Version: next()}}
		case 6:
			networkOn = !networkOn
		case 7:
			kept["k"+id] = !kept["k"+id] // an ended task's container kept, or not any more
			if !kept["k"+id] {
				delete(kept, "k"+id)
			}
		case 8:
			drained[id] = !drained[id] // a stopping task's drain ended, or it is gone
			if !drained[id] {
				delete(drained, id)
			}
		case 9:
			viewVersion++ // a task started draining: only the version moves for this node
		}
		a := &api.Assignment{Tasks: sortedValues(tasks, taskID), Secrets: sortedValues(secrets, secretID), Configs: []*api.Config{},
			Kept: slices.Sorted(maps.Keys(kept)), Drained: slices.Sorted(maps.Keys(drained))}
		if networkOn {
			a.Network = &api.NetworkView{Version: viewVersion, Networks: sortedValues(networks, networkID), Services: sortedValues(services, serviceEPID), Nodes: sortedValues(nodes, nodeEPID)}
		}
		msg, changed := snd.next(a)
		// Through JSON, as on the wire.
		raw, err := json.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		var got assignmentMsg
		if err := json.Unmarshal(raw, &got); err != nil {
			t.Fatal(err)
		}
		if !changed {
			if step == 0 {
				t.Fatal("the first message must be sent")
			}
			continue
		}
		if step > 0 && got.Full {
			t.Fatalf("step %d: a later message is full", step)
		}
		b, ok := rcv.take(&got)
		if !ok {
			t.Fatalf("step %d: a change taken for a keepalive: %s", step, raw)
		}
		if !sameJSON(t, normalize(a), normalize(b)) {
			t.Fatalf("step %d: received %s\nwant %s", step, js(t, b), js(t, a))
		}
		// Only what changed travels.
		if n := len(got.Tasks) + len(got.Secrets) + len(got.Kept) + len(got.Unkept) + len(got.Drained) + len(got.Undrained); step > 0 && n > 2 {
			t.Fatalf("step %d: a one-object change sent %d objects", step, n)
		}
	}
	// A message with nothing is a keepalive, not an empty assignment.
	if _, ok := rcv.take(&assignmentMsg{}); ok {
		t.Fatal("a keepalive was taken for an assignment")
	}
}

func normalize(a *api.Assignment) *api.Assignment {
	c := *a
	if len(c.Configs) == 0 {
		c.Configs = nil
	}
	if len(c.Tasks) == 0 {
		c.Tasks = nil
	}
	if len(c.Secrets) == 0 {
		c.Secrets = nil
	}
	if len(c.Kept) == 0 {
		c.Kept = nil
	}
	if len(c.Drained) == 0 {
		c.Drained = nil
	}
	if v := c.Network; v != nil {
		w := *v
		if len(w.Networks) == 0 {
			w.Networks = nil
		}
		if len(w.Services) == 0 {
			w.Services = nil
		}
		if len(w.Nodes) == 0 {
			w.Nodes = nil
		}
		c.Network = &w
	}
	return &c
}

func js(t *testing.T, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func sameJSON(t *testing.T, a, b any) bool {
	var x, y any
	json.Unmarshal([]byte(js(t, a)), &x)
	json.Unmarshal([]byte(js(t, b)), &y)
	return reflect.DeepEqual(x, y)
}
