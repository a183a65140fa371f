package swarm_test

import (
	"context"
	"slices"
	"testing"

	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/swarmtest"
)

// List filters through the Client, as `docker ... ls --filter` uses them:
// IDs and names by prefix, any value of one field matching; every label
// given must match (a key alone, or key=value); tasks by service (ID or
// name), node and desired state; nodes by role and hostname.
func TestListFilters(t *testing.T) {
	ctx := context.Background()
	c := swarmtest.NewTLS(t, swarmtest.TLSOptions{Workers: 2})
	cl := c.Client()
	mk := func(name string, labels map[string]string) *api.Service {
		spec := service(name, api.Replicated(1))
		spec.Labels = labels
		s, err := cl.CreateService(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	front := mk("web-front", map[string]string{"tier": "front", "env": "prod"})
	back := mk("web-back", map[string]string{"tier": "back"})
	db := mk("db", map[string]string{"env": "prod"})
	names := func(f swarm.Filter) []string {
		t.Helper()
		ss, err := cl.Services(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, s := range ss {
			out = append(out, s.Spec.Name)
		}
		slices.Sort(out)
		return out
	}
	for _, tc := range []struct {
		what string
		f    swarm.Filter
		want []string
	}{
		{"name prefix", swarm.Filter{Names: []string{"web"}}, []string{"web-back", "web-front"}},
		{"any of two names", swarm.Filter{Names: []string{"db", "web-b"}}, []string{"db", "web-back"}},
		{"ID prefix", swarm.Filter{IDs: []string{db.ID[:6]}}, []string{"db"}},
		{"a label key", swarm.Filter{Labels: []string{"env"}}, []string{"db", "web-front"}},
		{"every label given", swarm.Filter{Labels: []string{"env=prod", "tier=front"}}, []string{"web-front"}},
		{"a label value no service has", swarm.Filter{Labels: []string{"tier=side"}}, nil},
		{"name and label together", swarm.Filter{Names: []string{"web"}, Labels: []string{"tier=back"}}, []string{"web-back"}},
	} {
		if got := names(tc.f); !slices.Equal(got, tc.want) {
			t.Errorf("services, %s (%+v): %v, want %v", tc.what, tc.f, got, tc.want)
		}
	}

	for _, s := range []*api.Service{front, back, db} {
		c.WaitFor(s.Spec.Name+" running", func() bool { return len(running(t, cl, s.ID)) == 1 })
	}
	tasks := func(f swarm.Filter) []*api.Task {
		t.Helper()
		ts, err := cl.Tasks(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		return ts
	}
	if ts := tasks(swarm.Filter{Services: []string{"web-front"}}); len(ts) != 1 || ts[0].ServiceID != front.ID {
		t.Fatalf("tasks of web-front by name: %d tasks", len(ts))
	}
	onNode := tasks(swarm.Filter{Services: []string{front.ID}})[0].NodeID
	for _, tk := range tasks(swarm.Filter{Nodes: []string{onNode}}) {
		if tk.NodeID != onNode {
			t.Fatalf("tasks on %s: one is on %s", onNode, tk.NodeID)
		}
	}
	if _, err := cl.ScaleService(ctx, "db", 0); err != nil {
		t.Fatal(err)
	}
	c.WaitFor("db's task to be shut down", func() bool {
		return len(tasks(swarm.Filter{Services: []string{db.ID}, DesiredStates: []string{"shutdown"}})) == 1
	})
	if ts := tasks(swarm.Filter{Services: []string{db.ID}, DesiredStates: []string{"running"}}); len(ts) != 0 {
		t.Fatalf("db scaled to 0: %d tasks still desired running", len(ts))
	}
	if ts := tasks(swarm.Filter{DesiredStates: []string{"running"}}); len(ts) != 2 {
		t.Fatalf("tasks desired running: %d, want web-front's and web-back's", len(ts))
	}

	nodes := func(f swarm.Filter) int {
		t.Helper()
		ns, err := cl.Nodes(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		return len(ns)
	}
	if n := nodes(swarm.Filter{Roles: []string{"worker"}}); n != 2 {
		t.Errorf("workers: %d, want 2", n)
	}
	if n := nodes(swarm.Filter{Roles: []string{"manager"}}); n != 1 {
		t.Errorf("managers: %d, want 1", n)
	}
	if n := nodes(swarm.Filter{Roles: []string{"worker", "manager"}}); n != 3 {
		t.Errorf("workers or managers: %d, want 3", n)
	}
}
