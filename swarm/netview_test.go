package swarm_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/swarmtest"
)

// fakeNet is a network agent that keeps the views it was given.
type fakeNet struct {
	mu       sync.Mutex
	last     *api.NetworkView
	applies  int
	released []string
	onApply  func(*api.NetworkView)
	// hold, when set, runs before a view is applied: a slow node (it
	// takes its time) or a broken one (an error: the view is not
	// applied).
	hold func(context.Context, *api.NetworkView) error
}

func (f *fakeNet) Apply(ctx context.Context, v *api.NetworkView) error {
	f.mu.Lock()
	hold := f.hold
	f.mu.Unlock()
	if hold != nil {
		if err := hold(ctx, v); err != nil {
			return err
		}
	}
	f.mu.Lock()
	f.last, f.applies = v, f.applies+1
	on := f.onApply
	f.mu.Unlock()
	if on != nil {
		on(v)
	}
	return nil
}

func (f *fakeNet) ReleaseTask(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.released = append(f.released, id)
	return nil
}

func (f *fakeNet) view() (*api.NetworkView, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last, f.applies
}

func serviceIn(v *api.NetworkView, name string) *api.ServiceEndpoints {
	if v == nil {
		return nil
	}
	for _, s := range v.Services {
		if s.Name == name {
			return s
		}
	}
	return nil
}

func readyBackends(s *api.ServiceEndpoints) (ready, draining []string) {
	if s == nil {
		return nil, nil
	}
	for _, t := range s.Tasks {
		if t.Ready {
			ready = append(ready, t.ID)
		} else {
			draining = append(draining, t.ID)
		}
	}
	return ready, draining
}

// The managers send each node with a network agent its network view: the
// networks of its tasks and ingress, the services reachable there with
// their ready backends and VIPs, every node's data-plane address. A node
// without one gets no view. Secrets reach only the nodes whose tasks use
// them. A task that is to stop leaves every backend set (it drains)
// before its node stops it; once stopped it is gone from the views and its
// network is released.
func TestNetworkViews(t *testing.T) {
	ctx := context.Background()
	nets := map[string]*fakeNet{"node0": {}, "node1": {}, "node2": {}}
	addrs := map[string]string{"node0": "127.0.0.2", "node1": "127.0.0.3"} // node2 has no network agent
	const drain = 1500 * time.Millisecond
	c := swarmtest.New(t, swarmtest.Options{Workers: 3, Executor: testImages,
		Description: func(id string) api.NodeDescription {
			d := swarmtest.DefaultDescription(id)
			d.DataAddr = addrs[id]
			return d
		},
		Worker: func(w *swarm.Worker) {
			if addrs[w.NodeID] != "" {
				w.Network = nets[w.NodeID]
			}
			w.DrainDelay = drain
		}})
	m := c.Leader()
	back, err := m.CreateNetwork(ctx, api.NetworkSpec{Annotations: api.Annotations{Name: "back"}})
	if err != nil {
		t.Fatal(err)
	}
	pw, err := m.CreateSecret(ctx, api.SecretSpec{Annotations: api.Annotations{Name: "pw"}, Data: []byte("hunter2")})
	if err != nil {
		t.Fatal(err)
	}
	// db: one task on each networked node, on back, with the secret.
	db := service("db", api.Replicated(2))
	db.TaskTemplate.Networks = []api.NetworkTarget{{Target: "back", Aliases: []string{"database"}}}
	db.TaskTemplate.Secrets = []api.SecretReference{{SecretName: "pw", File: api.FileTarget{Name: "pw"}}}
	db.TaskTemplate.Placement = &api.Placement{Constraints: []string{"node.id!=node2"}}
	db.TaskTemplate.Placement.MaxReplicas = 1
	dbSvc := create(t, c, db)
	web := service("web", api.Replicated(1))
	web.TaskTemplate.Placement = &api.Placement{Constraints: []string{"node.id==node2"}}
	web.EndpointSpec = &api.EndpointSpec{Ports: []api.PortConfig{{TargetPort: 80, PublishedPort: 8080}}}
	create(t, c, web)
	ingress, err := m.Network(swarm.IngressNetworkName)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"node0", "node1"} {
		c.WaitFor(id+"'s view: back and ingress, db with 2 ready backends and a VIP, web published, both nodes", func() bool {
			v, _ := nets[id].view()
			if v == nil || len(v.Networks) != 2 || len(v.Nodes) != 2 {
				return false
			}
			dbe, webe := serviceIn(v, "db"), serviceIn(v, "web")
			ready, _ := readyBackends(dbe)
			if len(ready) != 2 || len(dbe.VirtualIPs) != 1 || dbe.VirtualIPs[0].NetworkID != back.ID ||
				!slices.Equal(dbe.Aliases[back.ID], []string{"database"}) {
				return false
			}
			for _, te := range dbe.Tasks {
				if te.Addrs[back.ID] == "" {
					return false
				}
			}
			if webe == nil || len(webe.Ports) != 1 || webe.Ports[0].PublishedPort != 8080 {
				return false
			}
			for _, n := range v.Nodes {
				if n.DataAddr != addrs[n.ID] || len(n.Attachments) != 1 || n.Attachments[0].NetworkID != ingress.ID {
					return false
				}
			}
			return true
		})
	}
	if _, applies := nets["node2"].view(); applies != 0 {
		t.Fatalf("a node without a network agent's address got %d network views", applies)
	}
	// A node's status shows its data-plane address (node ls's ADDRESS).
	for id, addr := range addrs {
		if n, err := m.Node(id); err != nil || n.Status.Addr != addr {
			t.Fatalf("node %s: status address %q %v, want %s", id, n.Status.Addr, err, addr)
		}
	}
	// The secret's data reached the nodes that run db, and only them.
	ref := api.SecretReference{SecretName: "pw", SecretID: pw.ID}
	for _, id := range []string{"node0", "node1"} {
		if b, err := c.Worker(id).SecretData(ctx, ref); err != nil || string(b) != "hunter2" {
			t.Fatalf("%s's secret: %q %v", id, b, err)
		}
	}
	if b, err := c.Worker("node2").SecretData(ctx, ref); err == nil {
		t.Fatalf("node2 runs no db task but has its secret: %q", b)
	}

	// Scale db down: the task that goes drains first, on every node
	// (the one that runs it and the other), while it still runs.
	var dbTasks []*api.Task
	c.WaitFor("db's tasks", func() bool { dbTasks = c.Running(dbSvc.ID); return len(dbTasks) == 2 })
	type seen struct {
		node, task string
		stopped    int
	}
	drained := make(chan seen, 64)
	for _, id := range []string{"node0", "node1"} {
		nets[id].mu.Lock()
		nets[id].onApply = func(v *api.NetworkView) {
			if _, d := readyBackends(serviceIn(v, "db")); len(d) == 1 {
				for _, tk := range dbTasks {
					if tk.ID == d[0] {
						drained <- seen{id, tk.ID, c.Exec(tk.NodeID).Stopped(tk.ID)}
					}
				}
			}
		}
		nets[id].mu.Unlock()
	}
	cur := mustService(t, m, dbSvc.ID)
	spec := cur.Spec
	spec.Mode = api.Replicated(1)
	if _, err := m.UpdateService(ctx, cur.ID, cur.Version, spec); err != nil {
		t.Fatal(err)
	}
	// The first view of each node with the task draining: each must
	// come while the task still runs.
	first := map[string]seen{}
	timeout := time.After(30 * time.Second)
	for len(first) < 2 {
		select {
		case s := <-drained:
			if _, ok := first[s.node]; !ok {
				first[s.node] = s
			}
		case <-timeout:
			t.Fatalf("the stopping task drained on %d of the 2 networked nodes (%v)", len(first), first)
		}
	}
	gone := first["node0"]
	for id, s := range first {
		if s.task != gone.task {
			t.Fatalf("the nodes saw different tasks drain: %v", first)
		}
		if s.stopped != 0 {
			t.Fatalf("task %s was stopped before %s took it out of its backends", s.task, id)
		}
	}
	var goneNode string
	for _, tk := range dbTasks {
		if tk.ID == gone.task {
			goneNode = tk.NodeID
		}
	}
	c.WaitFor("the stopped task leaves every view and its network is released", func() bool {
		for _, id := range []string{"node0", "node1"} {
			v, _ := nets[id].view()
			dbe := serviceIn(v, "db")
			if id == goneNode {
				// Its node runs no task on back any more: it needs
				// neither the network nor its services.
				if dbe != nil || len(v.Networks) != 1 {
					return false
				}
				continue
			}
			if ready, d := readyBackends(dbe); len(ready) != 1 || len(d) != 0 || slices.Contains(ready, gone.task) {
				return false
			}
		}
		n := nets[goneNode]
		n.mu.Lock()
		defer n.mu.Unlock()
		return slices.Contains(n.released, gone.task)
	})
	if c.Exec(goneNode).Stopped(gone.task) == 0 {
		t.Fatal("the scaled-down task was never stopped")
	}
}
