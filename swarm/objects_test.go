package swarm_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/swarmtest"
)

// dataPlane describes a node with a network agent (its data-plane address
// is never dialled here).
func dataPlane(id string) api.NodeDescription {
	d := swarmtest.DefaultDescription(id)
	d.DataAddr = "127.0.0.1"
	return d
}

func addrOn(t *api.Task, network string) netip.Addr {
	for _, na := range t.Networks {
		if na.NetworkID == network && len(na.Addresses) > 0 {
			p, err := netip.ParsePrefix(na.Addresses[0])
			if err == nil {
				return p.Addr()
			}
		}
	}
	return netip.Addr{}
}

// Networks: subnets from the pools or as asked, unique, VNIs; tasks get
// addresses on their networks and services VIPs; a network in use cannot
// go; addresses come back when tasks end; a leader failover hands out no
// address twice.
func TestNetworksAndAddresses(t *testing.T) {
	ctx := context.Background()
	c := swarmtest.New(t, swarmtest.Options{Managers: 3, Workers: 2, Executor: testImages})
	m := c.Leader()
	ingress, err := m.Network(swarm.IngressNetworkName)
	if err != nil || !ingress.Spec.Ingress || ingress.IPAM.Subnet != "10.0.0.0/24" {
		t.Fatalf("ingress network: %+v %v", ingress, err)
	}
	back, err := m.CreateNetwork(ctx, api.NetworkSpec{Annotations: api.Annotations{Name: "back"}})
	if err != nil {
		t.Fatal(err)
	}
	if back.IPAM == nil || back.IPAM.Subnet == "" || back.VNI < 4096 || back.VNI == ingress.VNI {
		t.Fatalf("allocated network %+v", back)
	}
	front, err := m.CreateNetwork(ctx, api.NetworkSpec{Annotations: api.Annotations{Name: "front"}, Encrypted: true,
		IPAM: &api.IPAMConfig{Subnet: "10.20.0.0/24"}})
	if err != nil {
		t.Fatal(err)
	}
	if front.IPAM.Subnet != "10.20.0.0/24" || front.IPAM.Gateway != "10.20.0.1" || front.WireGuardPort == 0 {
		t.Fatalf("network as asked: %+v", front)
	}
	if _, err := m.CreateNetwork(ctx, api.NetworkSpec{Annotations: api.Annotations{Name: "overlap"}, IPAM: &api.IPAMConfig{Subnet: "10.20.0.0/16"}}); !errors.Is(err, api.ErrInvalidSpec) || !strings.Contains(err.Error(), "overlap") {
		t.Fatalf("an overlapping subnet: %v", err)
	}
	if _, err := m.CreateNetwork(ctx, api.NetworkSpec{Annotations: api.Annotations{Name: "gw"}, IPAM: &api.IPAMConfig{Subnet: "172.18.5.0/24"}}); !errors.Is(err, api.ErrInvalidSpec) || !strings.Contains(err.Error(), "gateway network") {
		t.Fatalf("a subnet inside the nodes' gateway network: %v", err)
	}
	if _, err := m.CreateNetwork(ctx, api.NetworkSpec{Annotations: api.Annotations{Name: "back"}}); !errors.Is(err, swarm.ErrNameInUse) {
		t.Fatalf("a second network named back: %v", err)
	}
	if _, err := m.CreateNetwork(ctx, api.NetworkSpec{Annotations: api.Annotations{Name: "ingress2"}, Ingress: true}); !errors.Is(err, api.ErrInvalidSpec) {
		t.Fatalf("a second ingress network: %v", err)
	}

	spec := service("api", api.Replicated(4))
	spec.TaskTemplate.Networks = []api.NetworkTarget{{Target: "back", Aliases: []string{"backend"}}}
	svc, err := m.CreateService(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if svc.Spec.TaskTemplate.Networks[0].Target != back.ID {
		t.Fatalf("network named by name kept as %q, want its ID", svc.Spec.TaskTemplate.Networks[0].Target)
	}
	c.WaitFor("4 running with addresses and a VIP", func() bool {
		s, _ := m.Service(svc.ID)
		if s.Endpoint == nil || len(s.Endpoint.VirtualIPs) != 1 {
			return false
		}
		for _, tk := range c.Running(svc.ID) {
			if !addrOn(tk, back.ID).IsValid() {
				return false
			}
		}
		return len(c.Running(svc.ID)) == 4
	})
	subnet := netip.MustParsePrefix(back.IPAM.Subnet)
	seen := map[netip.Addr]string{}
	s, _ := m.Service(svc.ID)
	vip, _ := netip.ParsePrefix(s.Endpoint.VirtualIPs[0].Addr)
	seen[vip.Addr()] = "vip"
	for _, tk := range c.Running(svc.ID) {
		ad := addrOn(tk, back.ID)
		if !subnet.Contains(ad) || seen[ad] != "" {
			t.Fatalf("task %s has %s (subnet %s, already %q)", tk.ID, ad, subnet, seen[ad])
		}
		seen[ad] = tk.ID
		if tk.Networks[0].Aliases[0] != "backend" {
			t.Fatalf("aliases %v", tk.Networks[0].Aliases)
		}
	}
	if err := m.RemoveNetwork(ctx, "back"); err == nil || !strings.Contains(err.Error(), "api") {
		t.Fatalf("removing a network in use: %v", err)
	}
	if _, err := m.CreateService(ctx, func() api.ServiceSpec {
		s := service("lost", api.Replicated(1))
		s.TaskTemplate.Networks = []api.NetworkTarget{{Target: "nowhere"}}
		return s
	}()); !errors.Is(err, api.ErrInvalidSpec) || !strings.Contains(err.Error(), "nowhere") {
		t.Fatalf("an unknown network: %v", err)
	}

	// A failover: the new leader rebuilds the book; new tasks get new
	// addresses, none given twice.
	c.StopManager(m.ID)
	if err := c.OnLeader(func(l *swarm.Manager) error {
		m = l
		cur := mustService(t, m, svc.ID)
		sp := cur.Spec
		sp.Mode = api.Replicated(8)
		_, err := m.UpdateService(ctx, svc.ID, cur.Version, sp)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	c.WaitFor("8 running", func() bool { return len(c.Running(svc.ID)) == 8 })
	for _, tk := range c.Running(svc.ID) {
		ad := addrOn(tk, back.ID)
		if owner := seen[ad]; owner != "" && owner != tk.ID {
			t.Fatalf("address %s given to %s and to %s", ad, owner, tk.ID)
		}
		seen[ad] = tk.ID
	}
	// A task that ends frees its address (the replacement may get it).
	if err := m.RemoveService(ctx, svc.ID); err != nil {
		t.Fatal(err)
	}
	c.WaitFor("the network can go once its service is gone", func() bool { return m.RemoveNetwork(ctx, "back") == nil })
}

func mustService(t *testing.T, m *swarm.Manager, id string) *api.Service {
	t.Helper()
	s, err := m.Service(id)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Published ports: ingress ports are unique across the cluster and picked
// from 30000-32767 when not given; reserved ports are refused; an update
// keeps its port; tasks of a service with ingress ports join ingress; nodes
// get their ingress address.
func TestPublishedPorts(t *testing.T) {
	ctx := context.Background()
	c := swarmtest.New(t, swarmtest.Options{Workers: 2, Executor: testImages, Description: dataPlane})
	m := c.Leader()
	web := service("web", api.Replicated(2))
	web.EndpointSpec = &api.EndpointSpec{Ports: []api.PortConfig{{TargetPort: 80, PublishedPort: 8080}, {TargetPort: 443}}}
	svc, err := m.CreateService(ctx, web)
	if err != nil {
		t.Fatal(err)
	}
	if len(svc.Endpoint.Ports) != 2 || svc.Endpoint.Ports[0].PublishedPort != 8080 || svc.Endpoint.Ports[1].PublishedPort != api.DynamicPortStart {
		t.Fatalf("ports %+v", svc.Endpoint.Ports)
	}
	other := service("other", api.Replicated(1))
	other.EndpointSpec = &api.EndpointSpec{Ports: []api.PortConfig{{TargetPort: 80, PublishedPort: 8080}}}
	if _, err := m.CreateService(ctx, other); !errors.Is(err, api.ErrInvalidSpec) || !strings.Contains(err.Error(), "published by service web") {
		t.Fatalf("a port another service publishes: %v", err)
	}
	other.EndpointSpec.Ports[0].PublishedPort = 0
	o, err := m.CreateService(ctx, other)
	if err != nil || o.Endpoint.Ports[0].PublishedPort != api.DynamicPortStart+1 {
		t.Fatalf("next free port: %+v %v", o.Endpoint, err)
	}
	for _, port := range swarm.ReservedPorts {
		r := service("reserved", api.Replicated(1))
		r.EndpointSpec = &api.EndpointSpec{Ports: []api.PortConfig{{TargetPort: 80, PublishedPort: port}}}
		if _, err := m.CreateService(ctx, r); !errors.Is(err, api.ErrInvalidSpec) || !strings.Contains(err.Error(), "reserved") {
			t.Fatalf("reserved port %d: %v", port, err)
		}
	}
	// The same port in host mode is another matter (the scheduler keeps
	// one per node).
	h := service("host", api.Replicated(1))
	h.EndpointSpec = &api.EndpointSpec{Ports: []api.PortConfig{{TargetPort: 80, PublishedPort: 8080, PublishMode: api.PublishHost}}}
	if _, err := m.CreateService(ctx, h); err != nil {
		t.Fatalf("host mode on a port ingress uses: %v", err)
	}
	// An update that names no published port keeps the one it had.
	// (The leader may change the service meanwhile, as it records its
	// tasks' progress: read it again on a conflict, as any client does.)
	for {
		cur := mustService(t, m, svc.ID)
		up := cur.Spec
		up.TaskTemplate.Image = "example/web:2"
		after, err := m.UpdateService(ctx, svc.ID, cur.Version, up)
		if errors.Is(err, raftstore.ErrConflict) {
			continue
		}
		if err != nil || after.Endpoint.Ports[1].PublishedPort != api.DynamicPortStart {
			t.Fatalf("update: %+v %v", after, err)
		}
		break
	}
	ingress, _ := m.Network(swarm.IngressNetworkName)
	c.WaitFor("tasks on ingress, nodes with their ingress address", func() bool {
		ts := c.Running(svc.ID)
		for _, tk := range ts {
			if !addrOn(tk, ingress.ID).IsValid() {
				return false
			}
		}
		nodes, _ := m.Nodes()
		for _, n := range nodes {
			if len(n.Attachments) == 0 || n.Attachments[0].NetworkID != ingress.ID {
				return false
			}
		}
		return len(ts) == 2
	})
	// The ingress network cannot go while services publish ports.
	if err := m.RemoveNetwork(ctx, swarm.IngressNetworkName); err == nil || !strings.Contains(err.Error(), "web") {
		t.Fatalf("removing ingress in use: %v", err)
	}
}

// Secrets and configs: the data never comes back out, only labels change,
// services name them, and one in use cannot go.
func TestSecretsAndConfigs(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, 1)
	m := c.Leader()
	sec, err := m.CreateSecret(ctx, api.SecretSpec{Annotations: api.Annotations{Name: "db-pass"}, Data: []byte("hunter2")})
	if err != nil {
		t.Fatal(err)
	}
	if len(sec.Spec.Data) != 0 {
		t.Fatal("the answer to a create holds the secret")
	}
	if got, _ := m.Secret("db-pass"); got == nil || len(got.Spec.Data) != 0 {
		t.Fatalf("inspect: %+v", got)
	}
	if all, _ := m.Secrets(); len(all) != 1 || len(all[0].Spec.Data) != 0 {
		t.Fatalf("list: %+v", all)
	}
	if _, err := m.CreateSecret(ctx, api.SecretSpec{Annotations: api.Annotations{Name: "db-pass"}, Data: []byte("x")}); !errors.Is(err, swarm.ErrNameInUse) {
		t.Fatalf("a second secret named db-pass: %v", err)
	}
	cur, _ := m.Secret(sec.ID)
	if _, err := m.UpdateSecret(ctx, sec.ID, cur.Version, api.SecretSpec{Annotations: api.Annotations{Name: "db-pass", Labels: map[string]string{"env": "prod"}}}); err != nil {
		t.Fatalf("label update: %v", err)
	}
	cur, _ = m.Secret(sec.ID)
	if _, err := m.UpdateSecret(ctx, sec.ID, cur.Version, api.SecretSpec{Annotations: api.Annotations{Name: "db-pass"}, Data: []byte("other")}); !errors.Is(err, api.ErrInvalidSpec) {
		t.Fatalf("data update: %v", err)
	}
	cfg, err := m.CreateConfig(ctx, api.ConfigSpec{Annotations: api.Annotations{Name: "app.conf"}, Data: []byte("port=80")})
	if err != nil {
		t.Fatal(err)
	}
	spec := service("app", api.Replicated(1))
	spec.TaskTemplate.Secrets = []api.SecretReference{{SecretName: "db-pass", File: api.FileTarget{Name: "password", Mode: 0o400}}}
	spec.TaskTemplate.Configs = []api.ConfigReference{{ConfigName: "app.conf", File: api.FileTarget{Name: "/etc/app.conf"}}}
	svc, err := m.CreateService(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if svc.Spec.TaskTemplate.Secrets[0].SecretID != sec.ID || svc.Spec.TaskTemplate.Configs[0].ConfigID != cfg.ID {
		t.Fatalf("references not resolved: %+v", svc.Spec.TaskTemplate)
	}
	if err := m.RemoveSecret(ctx, "db-pass"); err == nil || !strings.Contains(err.Error(), "app") {
		t.Fatalf("removing a secret in use: %v", err)
	}
	if err := m.RemoveConfig(ctx, "app.conf"); err == nil || !strings.Contains(err.Error(), "app") {
		t.Fatalf("removing a config in use: %v", err)
	}
	bad := service("bad", api.Replicated(1))
	bad.TaskTemplate.Secrets = []api.SecretReference{{SecretName: "missing"}}
	if _, err := m.CreateService(ctx, bad); !errors.Is(err, api.ErrInvalidSpec) || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("an unknown secret: %v", err)
	}
	if err := m.RemoveService(ctx, svc.ID); err != nil {
		t.Fatal(err)
	}
	if err := m.RemoveSecret(ctx, "db-pass"); err != nil {
		t.Fatal(err)
	}
	if err := m.RemoveConfig(ctx, cfg.ID); err != nil {
		t.Fatal(err)
	}
}

// A removal asks for no version: writes to the object meanwhile (here
// updates racing it, as the managers' own writes do) must not fail it.
func TestRemovalOutlastsConcurrentWrites(t *testing.T) {
	ctx := context.Background()
	c := swarmtest.New(t, swarmtest.Options{})
	m := c.Leader()
	for i := range 5 {
		svc, err := m.CreateService(ctx, service(fmt.Sprint("busy", i), api.Replicated(0)))
		if err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					cur, err := m.Service(svc.ID)
					if err != nil {
						return
					}
					spec := cur.Spec
					spec.Labels = map[string]string{"n": fmt.Sprint(cur.Version)}
					m.UpdateService(ctx, cur.ID, cur.Version, spec)
				}
			}()
		}
		time.Sleep(20 * time.Millisecond) // let the writers get going
		err = m.RemoveService(ctx, svc.Spec.Name)
		close(stop)
		wg.Wait()
		if err != nil {
			t.Fatalf("removal %d during writes: %v", i, err)
		}
		if _, err := m.Service(svc.ID); !errors.Is(err, swarm.ErrNotFound) {
			t.Fatalf("service still there: %v", err)
		}
	}
}
