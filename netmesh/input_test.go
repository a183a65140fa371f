package netmesh_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/shoalproject/shoal/internal/nettest"
	"github.com/shoalproject/shoal/netmesh"
)

// Bad input gets an error that says what is wrong, never a panic.
func TestIPAMRejectsBadInput(t *testing.T) {
	for _, a := range []*netmesh.IPAM{
		{Pools: []netip.Prefix{netip.MustParsePrefix("fd00::/64")}},
		{Pools: []netip.Prefix{{}}},
		{SubnetBits: 31},
	} {
		if _, err := a.AllocateSubnet("n", netip.Prefix{}); err == nil {
			t.Errorf("IPAM %+v: no error", a)
		}
	}
	var a netmesh.IPAM
	if _, err := a.AllocateSubnet("n", netip.MustParsePrefix("fd00::/64")); err == nil || !strings.Contains(err.Error(), "IPv4") {
		t.Errorf("IPv6 subnet: %v", err)
	}
	// A subnet asked for must hold a gateway and a task: /30 at most.
	if _, err := a.AllocateSubnet("n", netip.MustParsePrefix("10.60.0.0/31")); !errors.Is(err, netmesh.ErrBadPrefix) {
		t.Errorf("a /31 asked for: %v", err)
	}
	if sn, err := a.AllocateSubnet("n", netip.MustParsePrefix("10.60.0.4/30")); err != nil || sn.Gateway != netip.MustParseAddr("10.60.0.5") {
		t.Errorf("a /30 asked for: %+v %v", sn, err)
	}
	bad := netmesh.IPAMState{Networks: []netmesh.NetworkState{{ID: "n", Subnet: netip.MustParsePrefix("fd00::/64"), Gateway: netip.MustParseAddr("fd00::1")}}}
	if err := a.Restore(bad); err == nil {
		t.Error("IPv6 state restored")
	}
}

func TestOverlayAndLBRejectBadInput(t *testing.T) {
	lab := nettest.New(t, 1)
	ns := "/var/run/netns/" + lab.Hosts[0].Name
	o := &netmesh.Overlay{NetNS: ns, LocalAddr: lab.Hosts[0].Addr}
	if err := o.Start(); err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	v6 := netmesh.OverlayNetwork{ID: "v6", VNI: 10, Subnet: netip.MustParsePrefix("fd00::/64")}
	good := netmesh.OverlayNetwork{ID: "ok", VNI: 11, Subnet: netip.MustParsePrefix("10.50.0.0/24")}
	v6addr := netip.MustParseAddr("fd00::5")
	for name, err := range map[string]error{
		"IPv6 subnet":           o.EnsureNetwork(v6),
		"VNI 0":                 o.EnsureNetwork(netmesh.OverlayNetwork{ID: "z", Subnet: good.Subnet}),
		"subnet /31":            o.EnsureNetwork(netmesh.OverlayNetwork{ID: "z", VNI: 12, Subnet: netip.MustParsePrefix("10.50.1.0/31")}),
		"no subnet":             o.EnsureNetwork(netmesh.OverlayNetwork{ID: "z", VNI: 12}),
		"WireGuard port":        o.EnsureNetwork(netmesh.OverlayNetwork{ID: "z", VNI: 12, Subnet: good.Subnet, Encrypted: true, WireGuardPort: 70000}),
		"IPv6 endpoints":        o.SetEndpoints(v6, []netmesh.RemoteEndpoint{{Addr: v6addr, Host: netip.MustParseAddr("192.0.2.99")}}),
		"endpoint without host": o.SetEndpoints(good, []netmesh.RemoteEndpoint{{Addr: netip.MustParseAddr("10.50.0.9")}}),
		"IPv6 attach":           o.Attach(v6, ns, "eth0", v6addr),
		"node address outside":  o.SetNodeAddr(good, netip.MustParseAddr("10.99.0.1")),
	} {
		if err == nil {
			t.Errorf("%s: no error", name)
		} else if !strings.Contains(err.Error(), "netmesh") {
			t.Errorf("%s: error %q does not say where it comes from", name, err)
		}
	}
	// A VNI over 24 bits is refused before anything is made (the kernel
	// would refuse it too, but after the bridge was made).
	if err := o.EnsureNetwork(netmesh.OverlayNetwork{ID: "z", VNI: 1 << 24, Subnet: good.Subnet}); err == nil || !strings.Contains(err.Error(), "outside 1..16777215") {
		t.Errorf("VNI 2^24: %v", err)
	}
	if _, err := netlinkIn(t, lab.Hosts[0].Name).LinkByName("sbr16777216"); err == nil {
		t.Error("a bridge was made for VNI 2^24")
	}
	// The bounds themselves are fine: the largest VNI, a /30.
	if err := o.EnsureNetwork(netmesh.OverlayNetwork{ID: "edge", VNI: 1<<24 - 1, Subnet: netip.MustParsePrefix("10.50.2.0/30")}); err != nil {
		t.Errorf("VNI 16777215 with a /30: %v", err)
	}
	lb := &netmesh.ServiceLB{NetNS: ns}
	if err := lb.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	err := lb.Set(context.Background(), netmesh.VIPService{ServiceID: "s", VIP: netip.MustParseAddr("10.50.0.2"), Protocol: netmesh.TCP, Port: 80,
		Backends: []netmesh.Backend{{Addr: v6addr, Port: 80}}})
	if err == nil || !strings.Contains(err.Error(), "backend") {
		t.Errorf("IPv6 backend: %v", err)
	}
}
