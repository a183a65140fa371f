package netagent_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/shoalproject/shoal/internal/nettest"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/netagent"
)

// A view with bad entries of every kind: each is logged and skipped, the
// rest applied; Apply reports no error (nothing the kernel refused).
// Tasks that cannot be wired fail with an error saying why, and leave
// nothing behind.
func TestApplySkipsBadViewData(t *testing.T) {
	ctx := context.Background()
	lab := nettest.New(t, 1)
	h := lab.Hosts[0]
	var logs logBuf
	dir := stateDir(t, "n0")

	early := &netagent.Agent{NodeID: "n0", DataAddr: h.Addr, StateDir: dir}
	if err := early.Apply(ctx, &api.NetworkView{}); !errors.Is(err, netagent.ErrNotStarted) {
		t.Fatalf("Apply before Start: %v", err)
	}
	for name, a := range map[string]*netagent.Agent{
		"no node ID":   {DataAddr: h.Addr, StateDir: dir},
		"no address":   {NodeID: "n0", StateDir: dir},
		"no state dir": {NodeID: "n0", DataAddr: h.Addr},
	} {
		if err := a.Start(ctx); !errors.Is(err, netagent.ErrConfig) {
			t.Errorf("%s: Start: %v", name, err)
		}
	}

	a := newAgent(t, h, "n0", dir, nil, &logs)
	ingress := network("ingress", 4096, "10.255.0.0/16")
	ingress.Spec.Ingress = true
	noIPAM := network("noipam", 4100, "")
	noIPAM.IPAM = nil
	v := &api.NetworkView{
		Networks: []*api.Network{ingress, network("good", 4097, "10.0.1.0/24"), nil, noIPAM, network("novni", 0, "10.0.9.0/24"),
			network("badsubnet", 4101, "10.0.300.0/24"), network("dupvni", 4097, "10.0.8.0/24")},
		Nodes: []*api.NodeEndpoint{
			{ID: "n0", DataAddr: h.Addr.String(), Attachments: []api.NetworkAttachment{{NetworkID: "ingress", Addresses: []string{"10.255.0.10/16"}}}},
			{ID: "n1", DataAddr: "192.0.2.99", WireGuardKey: "garbage"},
			{ID: "n2", DataAddr: "not-an-address"},
			{ID: "n3", DataAddr: "192.0.2.98", Attachments: []api.NetworkAttachment{{NetworkID: "ingress", Addresses: []string{"10.255.0.13/8"}}, {NetworkID: "nowhere"}}},
		},
		Services: []*api.ServiceEndpoints{
			{ID: "web", Name: "web", VirtualIPs: []api.VirtualIP{{NetworkID: "good", Addr: "10.0.1.2"}, {NetworkID: "nowhere", Addr: "10.0.1.3"}, {NetworkID: "ingress", Addr: "bad"}},
				Ports: []api.PortConfig{{TargetPort: 80, PublishedPort: 8080}, {Protocol: api.UDP, TargetPort: 53, PublishedPort: 4789},
					{Protocol: api.SCTP, TargetPort: 80, PublishedPort: 8081}, {TargetPort: 0, PublishedPort: 8082}, {TargetPort: 80, PublishedPort: 8083, PublishMode: "sideways"}},
				Tasks: []*api.TaskEndpoint{
					{ID: "web.1", NodeID: "n0", Ready: true, Addrs: map[string]string{"good": "10.0.1.10", "ingress": "10.255.1.10"}},
					{ID: "web.2", NodeID: "n2", Ready: true, Addrs: map[string]string{"good": "10.0.1.11"}},
					{ID: "web.3", NodeID: "n1", Ready: true, Addrs: map[string]string{"good": "10.0.1.999", "nowhere": "10.0.1.12", "ingress": "10.255.1.999"}},
					nil,
				}},
			{ID: "a-dup", Name: "dup", Ports: []api.PortConfig{{TargetPort: 80, PublishedPort: 8080}}},
			nil,
		},
	}
	// The good first, then the bad: a service that claims a port another
	// has does not take it (a-dup comes first by ID).
	good := *v
	good.Services = v.Services[:1]
	if err := a.Apply(ctx, &good); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if err := a.Apply(ctx, v); err != nil {
		t.Fatalf("Apply of a view with bad data: %v", err)
	}
	t.Logf("skipped: %d entries", strings.Count(logs.String(), "bad view data skipped"))
	if n := strings.Count(logs.String(), "bad view data skipped"); n < 12 {
		t.Errorf("%d bad entries logged, want every one:\n%s", n, logs.String())
	}
	for _, what := range []string{"published port is one of the node's own", "published port already taken"} {
		if !strings.Contains(logs.String(), what) {
			t.Errorf("nothing logged about %q", what)
		}
	}
	ns, _, err := a.TaskNetwork(ctx, &api.Task{Meta: api.Meta{ID: "web.1"}, NodeID: "n0", Networks: []api.NetworkAttachment{
		{NetworkID: "ingress", Addresses: []string{"10.255.1.10/16"}}, {NetworkID: "good", Addresses: []string{"10.0.1.10/24"}}}})
	if err != nil {
		t.Fatal(err)
	}
	serve(t, ns, ":80", "web.1")
	// What was good is there: the network, the published port, the VIP.
	if _, ok := links(t, h.Name)["sbr4097"]; !ok {
		t.Fatal("the good network was not made")
	}
	if body, err := get(h.Name, fmt.Sprintf("http://%s:8080/", h.Addr)); err != nil || body != "web.1" {
		t.Fatalf("the good published port: %q %v", body, err)
	}
	if body, err := get(ns, "http://10.0.1.2:80/"); err != nil || body != "web.1" {
		t.Fatalf("the good VIP from the task: %q %v", body, err)
	}
	// The VXLAN port was not published over the node's own.
	if body, err := get(h.Name, fmt.Sprintf("http://%s:8082/", h.Addr)); err == nil {
		t.Fatalf("a port with no target answered: %q", body)
	}

	// Tasks that cannot be wired.
	for name, c := range map[string]struct {
		task *api.Task
		want error
	}{
		"nil":             {nil, netagent.ErrBadTask},
		"bad ID":          {&api.Task{Meta: api.Meta{ID: "../escape"}}, netagent.ErrBadTask},
		"unknown network": {&api.Task{Meta: api.Meta{ID: "x.1"}, Networks: []api.NetworkAttachment{{NetworkID: "nowhere", Addresses: []string{"10.0.1.20/24"}}}}, netagent.ErrUnknownNetwork},
		"address outside": {&api.Task{Meta: api.Meta{ID: "x.2"}, Networks: []api.NetworkAttachment{{NetworkID: "good", Addresses: []string{"10.0.2.20/24"}}}}, netagent.ErrBadTask},
		"no address":      {&api.Task{Meta: api.Meta{ID: "x.3"}, Networks: []api.NetworkAttachment{{NetworkID: "good"}}}, netagent.ErrBadTask},
	} {
		_, _, err := a.TaskNetwork(ctx, c.task)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
		if c.task != nil {
			if _, serr := os.Stat(a.NetNSPath(c.task.ID)); serr == nil {
				t.Errorf("%s: a namespace was left", name)
			}
		}
	}
	if got := a.Tasks(); len(got) != 1 {
		t.Fatalf("tasks after the failures: %v", got)
	}
	if err := a.ReleaseTask(ctx, "never-seen"); err != nil {
		t.Fatalf("release of an unknown task: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(ctx, v); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Apply after Close: %v", err)
	}
}
