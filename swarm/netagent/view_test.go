package netagent

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/shoalproject/shoal/netmesh"
	"github.com/shoalproject/shoal/swarm/api"
)

func mkNet(id string, vni uint32, subnet string) *api.Network {
	return &api.Network{Meta: api.Meta{ID: id}, Spec: api.NetworkSpec{Annotations: api.Annotations{Name: id + "-name"}}, VNI: vni,
		IPAM: &api.IPAMConfig{Subnet: subnet}}
}

// Bad entries of a view are logged and left out, each alone; the rest is
// compiled.
func TestCompileSkipsBadData(t *testing.T) {
	ingress := mkNet("ing", 4096, "10.255.0.0/16")
	ingress.Spec.Ingress = true
	key, _ := netmesh.GenerateWireGuardKey()
	v := &api.NetworkView{
		Networks: []*api.Network{
			ingress, mkNet("front", 4097, "10.0.1.0/24"),
			nil, mkNet("", 1, "10.9.0.0/24"), mkNet("novni", 0, "10.9.1.0/24"), mkNet("nosubnet", 4100, ""),
			mkNet("v6", 4101, "fd00::/64"), mkNet("dupvni", 4097, "10.9.2.0/24"), mkNet("front", 4102, "10.9.3.0/24"),
		},
		Nodes: []*api.NodeEndpoint{
			{ID: "me", DataAddr: "192.0.2.10", Attachments: []api.NetworkAttachment{{NetworkID: "ing", Addresses: []string{"10.255.0.10/16"}}}},
			{ID: "n1", DataAddr: "192.0.2.11", WireGuardKey: key.PublicKey().String(),
				Attachments: []api.NetworkAttachment{{NetworkID: "ing", Addresses: []string{"10.255.0.11/16"}}, {NetworkID: "nope", Addresses: []string{"10.1.1.1"}}}},
			{ID: "n2", DataAddr: "192.0.2.12", WireGuardKey: "not-a-key"},
			{ID: "bad", DataAddr: "somewhere"},
			nil,
		},
		Services: []*api.ServiceEndpoints{
			{ID: "web", Name: "web", VirtualIPs: []api.VirtualIP{{NetworkID: "front", Addr: "10.0.1.2/24"}, {NetworkID: "nope", Addr: "10.0.9.2"}, {NetworkID: "ing", Addr: "garbage"}},
				Ports:   []api.PortConfig{{TargetPort: 80, PublishedPort: 8080}, {Protocol: api.SCTP, TargetPort: 80, PublishedPort: 8081}, {TargetPort: 80}},
				Aliases: map[string][]string{"front": {"www", "www"}},
				Tasks: []*api.TaskEndpoint{
					{ID: "w1", NodeID: "me", Ready: true, Addrs: map[string]string{"front": "10.0.1.11", "ing": "10.255.1.11", "nope": "10.0.0.1"}},
					{ID: "w2", NodeID: "n1", Ready: true, Addrs: map[string]string{"front": "10.0.1.12", "ing": "not-an-address"}},
					{ID: "w3", NodeID: "bad", Ready: true, Addrs: map[string]string{"front": "10.0.1.13"}},
					{ID: "w4", NodeID: "n2", Addrs: map[string]string{"front": "10.0.2.14"}}, // outside the subnet
					nil,
				}},
			{ID: "web", Name: "again"},
			nil,
		},
	}
	var logs bytes.Buffer
	c := compile(v, "me", slog.New(slog.NewTextHandler(&logs, nil)))
	if len(c.nets) != 2 || c.ingress != "ing" || c.nets["front"].n.VNI != 4097 {
		t.Fatalf("networks %v ingress %q", c.nets, c.ingress)
	}
	if len(c.nodes) != 3 || c.self == nil || c.self.attach["ing"] != netip.MustParseAddr("10.255.0.10") {
		t.Fatalf("nodes %v", c.nodes)
	}
	if !c.nodes["n2"].key.IsZero() || c.nodes["n1"].key != key.PublicKey() {
		t.Fatal("keys: the bad one must be left out, the good one kept")
	}
	if len(c.services) != 1 {
		t.Fatalf("services %d, want 1", len(c.services))
	}
	s := c.services[0]
	if len(s.vips) != 1 || len(s.ports) != 1 || len(s.tasks) != 3 || len(s.aliases) != 1 {
		t.Fatalf("web: vips %v ports %v tasks %d aliases %v", s.vips, s.ports, len(s.tasks), s.aliases)
	}
	if !c.localNets["front"] || !c.localNets["ing"] || len(c.localNets) != 2 {
		t.Fatalf("local networks %v", c.localNets)
	}
	want := []netmesh.RemoteEndpoint{{Addr: netip.MustParseAddr("10.0.1.12"), Host: netip.MustParseAddr("192.0.2.11")}}
	if got := c.endpoints["front"]; len(got) != 1 || got[0] != want[0] {
		t.Fatalf("front endpoints %v, want %v", got, want)
	}
	if got := c.endpoints["ing"]; len(got) != 1 || got[0].Addr != netip.MustParseAddr("10.255.0.11") {
		t.Fatalf("ingress endpoints %v, want n1's node address", got)
	}
	for _, what := range []string{"network without ID", "network VNI", "network subnet", "VNI already used", "network listed twice",
		"node data address", "node WireGuard key", "unknown network", "service VIP", "service port", "task address",
		"node without data address", "service listed twice", "service without ID", "task endpoint without ID"} {
		if !strings.Contains(logs.String(), what) {
			t.Errorf("nothing logged about %q", what)
		}
	}
	// A service publishing a port reaches every node, with its VIPs and
	// task addresses on networks the node is not on: that is no bad data.
	if strings.Contains(logs.String(), "service VIP on") || strings.Contains(logs.String(), "task address on") {
		t.Errorf("addresses on networks outside the view were logged as bad data:\n%s", logs.String())
	}
	if compile(nil, "me", slog.New(slog.DiscardHandler)) == nil {
		t.Fatal("nil view")
	}
}

func TestNameservers(t *testing.T) {
	got := nameservers([]byte("# x\nnameserver 127.0.0.53\nnameserver 192.0.2.53\nsearch example\nnameserver ::1\nnameserver 2001:db8::1\nnameserver bogus\n"))
	if strings.Join(got, ",") != "192.0.2.53,2001:db8::1" {
		t.Fatalf("nameservers %v", got)
	}
}

func TestGatewayAllocator(t *testing.T) {
	a := &Agent{GatewaySubnet: netip.MustParsePrefix("172.30.0.0/29")} // .2 to .6
	a.gwUsed = map[netip.Addr]string{netip.MustParseAddr("172.30.0.3"): "old"}
	var got []string
	for i := range 4 {
		ad, err := a.allocGateway(string(rune('a' + i)))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ad.String())
	}
	if strings.Join(got, " ") != "172.30.0.2 172.30.0.4 172.30.0.5 172.30.0.6" {
		t.Fatalf("allocated %v", got)
	}
	if _, err := a.allocGateway("e"); err == nil {
		t.Fatal("allocated from a full subnet")
	}
	delete(a.gwUsed, netip.MustParseAddr("172.30.0.4"))
	if ad, err := a.allocGateway("f"); err != nil || ad.String() != "172.30.0.4" {
		t.Fatalf("after a release: %v %v", ad, err)
	}
}

func TestCheckTaskID(t *testing.T) {
	for _, bad := range []string{"", ".", "..", ".hidden", "a/b", "a b", strings.Repeat("x", 129)} {
		if checkTaskID(bad) == nil {
			t.Errorf("task ID %q accepted", bad)
		}
	}
	if err := checkTaskID("web.1.abc-DEF_9"); err != nil {
		t.Error(err)
	}
}

// A service's aliases stay with the network they were given on: a task on
// the service's other network does not resolve them (the view sends them
// by network; they must not be flattened into names for all).
func TestAliasesStayOnTheirNetwork(t *testing.T) {
	v := &api.NetworkView{
		Networks: []*api.Network{mkNet("back", 4097, "10.0.1.0/24"), mkNet("audit", 4098, "10.0.2.0/24")},
		Nodes:    []*api.NodeEndpoint{{ID: "me", DataAddr: "192.0.2.10"}},
		Services: []*api.ServiceEndpoints{{ID: "db", Name: "db",
			VirtualIPs: []api.VirtualIP{{NetworkID: "back", Addr: "10.0.1.2/24"}, {NetworkID: "audit", Addr: "10.0.2.2/24"}},
			Aliases:    map[string][]string{"back": {"database"}},
			Tasks:      []*api.TaskEndpoint{{ID: "d1", NodeID: "me", Ready: true, Addrs: map[string]string{"back": "10.0.1.5", "audit": "10.0.2.5"}}}}},
	}
	c := compile(v, "me", slog.New(slog.DiscardHandler))
	if len(c.services) != 1 {
		t.Fatalf("services %d", len(c.services))
	}
	r := &netmesh.Registry{}
	r.SetService(c.serviceEndpoint(c.services[0]))
	if got, ok := r.Lookup([]string{"back"}, "database"); !ok || len(got) != 1 || got[0].String() != "10.0.1.2" {
		t.Fatalf("database from back: %v %v, want the VIP on back", got, ok)
	}
	if got, ok := r.Lookup([]string{"audit"}, "database"); ok {
		t.Fatalf("database from audit: %v; an alias given on back must not resolve on audit", got)
	}
	if got, ok := r.Lookup([]string{"audit"}, "db"); !ok || len(got) != 1 || got[0].String() != "10.0.2.2" {
		t.Fatalf("db from audit: %v %v, want the VIP on audit", got, ok)
	}
}
