package swarm_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/swarmtest"
)

// A network's IP range (Docker's --ip-range) bounds the addresses handed
// out on it: every task address and the VIP are inside it, none is the
// gateway or an auxiliary address, also once the tasks are replaced and
// after a leader failover (the allocator rebuilt from the store). A range
// or address outside the subnet is refused with a clear error.
func TestNetworkIPRange(t *testing.T) {
	ctx := context.Background()
	c := swarmtest.New(t, swarmtest.Options{Managers: 3, Workers: 2, Executor: testImages})
	m := c.Leader()
	for _, bad := range []struct {
		ipam api.IPAMConfig
		want string
	}{
		{api.IPAMConfig{Subnet: "10.30.0.0/24", IPRange: "10.31.0.0/28"}, "ipam.ipRange: 10.31.0.0/28 is not inside subnet 10.30.0.0/24"},
		{api.IPAMConfig{Subnet: "10.30.0.0/24", IPRange: "10.30.0.0/16"}, "ipam.ipRange: 10.30.0.0/16 is not inside subnet"},
		{api.IPAMConfig{IPRange: "10.30.0.0/28"}, "ipam.ipRange: an IP range needs its subnet"},
		{api.IPAMConfig{Subnet: "10.30.0.0/24", IPRange: "10.30.0.5/28"}, "ipam.ipRange"},
		{api.IPAMConfig{Subnet: "10.30.0.0/24", Gateway: "10.30.0.255"}, "ipam.gateway: 10.30.0.255 is the network or broadcast address"},
		{api.IPAMConfig{Subnet: "10.30.0.0/24", AuxAddresses: map[string]string{"printer": "10.40.0.9"}}, "ipam.auxAddresses[printer]: 10.40.0.9 is not inside subnet"},
		{api.IPAMConfig{Subnet: "10.30.0.0/24", Gateway: "10.30.0.9", AuxAddresses: map[string]string{"printer": "10.30.0.9"}}, "is the gateway"},
	} {
		ipam := bad.ipam
		_, err := m.CreateNetwork(ctx, api.NetworkSpec{Annotations: api.Annotations{Name: "bad"}, IPAM: &ipam})
		if !errors.Is(err, api.ErrInvalidSpec) || !strings.Contains(err.Error(), bad.want) {
			t.Fatalf("IPAM %+v: %v, want an invalid spec saying %q", bad.ipam, err, bad.want)
		}
	}

	rng := netip.MustParsePrefix("10.30.0.64/29") // .64 to .71
	net, err := m.CreateNetwork(ctx, api.NetworkSpec{Annotations: api.Annotations{Name: "ranged"}, IPAM: &api.IPAMConfig{
		Subnet: "10.30.0.0/24", Gateway: "10.30.0.70", IPRange: rng.String(), AuxAddresses: map[string]string{"printer": "10.30.0.64"}}})
	if err != nil {
		t.Fatal(err)
	}
	if net.IPAM.IPRange != rng.String() || net.IPAM.AuxAddresses["printer"] != "10.30.0.64" || net.IPAM.Gateway != "10.30.0.70" {
		t.Fatalf("the network's IPAM: %+v", net.IPAM)
	}
	spec := service("ranged", api.Replicated(4))
	spec.TaskTemplate.Networks = []api.NetworkTarget{{Target: "ranged"}}
	svc, err := m.CreateService(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	// The range has 8 addresses, less the gateway and printer: 6, for a
	// VIP and 4 tasks.
	check := func(what string) {
		t.Helper()
		var ads []netip.Addr
		c.WaitFor(what, func() bool {
			s, _ := m.Service(svc.ID)
			ts := c.Running(svc.ID)
			if s == nil || s.Endpoint == nil || len(s.Endpoint.VirtualIPs) != 1 || len(ts) != 4 {
				return false
			}
			vip, _ := netip.ParsePrefix(s.Endpoint.VirtualIPs[0].Addr)
			ads = []netip.Addr{vip.Addr()}
			for _, tk := range ts {
				if !addrOn(tk, net.ID).IsValid() {
					return false
				}
				ads = append(ads, addrOn(tk, net.ID))
			}
			return true
		})
		seen := map[netip.Addr]bool{}
		for _, ad := range ads {
			if !rng.Contains(ad) || ad.String() == "10.30.0.70" || ad.String() == "10.30.0.64" || seen[ad] {
				t.Fatalf("%s: addresses %v; want each once, inside %s, none the gateway (.70) or printer (.64)", what, ads, rng)
			}
			seen[ad] = true
		}
	}
	check("4 tasks and a VIP inside the range")

	// A rolling replacement of every task: the new tasks' addresses come
	// from the range too (those of the old are freed as they end).
	cur := mustService(t, m, svc.ID)
	up := cur.Spec
	up.TaskTemplate.Image = "example/web:2"
	if _, err := m.UpdateService(ctx, svc.ID, cur.Version, up); err != nil {
		t.Fatal(err)
	}
	c.WaitFor("every task replaced", func() bool {
		ts := c.Running(svc.ID)
		for _, tk := range ts {
			if tk.Spec.Image != "example/web:2" {
				return false
			}
		}
		return len(ts) == 4
	})
	check("after the update, inside the range")

	// A new leader rebuilds the book from the store: the range holds.
	c.StopManager(m.ID)
	if err := c.OnLeader(func(l *swarm.Manager) error { return l.RemoveService(ctx, svc.ID) }); err != nil {
		t.Fatal(err)
	}
	if err := c.OnLeader(func(l *swarm.Manager) (err error) {
		m = l
		svc, err = l.CreateService(ctx, spec)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	check("after a failover, inside the range")
}
