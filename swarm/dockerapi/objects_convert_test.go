package dockerapi

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/network"
	dswarm "github.com/moby/moby/api/types/swarm"

	"github.com/shoalproject/shoal/swarm/api"
)

// What docker network create sends, converted: the overlay options Shoal
// has are kept, the others refused by name.
func TestNetworkSpecFromDocker(t *testing.T) {
	yes, no := true, false
	got, err := NetworkSpecFromDocker(network.CreateRequest{Name: "front", Driver: "overlay", Scope: "swarm", EnableIPv4: &yes, EnableIPv6: &no,
		Attachable: true, Internal: true, Labels: map[string]string{"tier": "front"}, Options: map[string]string{"encrypted": ""},
		IPAM: &network.IPAM{Driver: "default", Config: []network.IPAMConfig{{Subnet: netip.MustParsePrefix("10.20.0.0/24"),
			IPRange: netip.MustParsePrefix("10.20.0.128/25"), Gateway: netip.MustParseAddr("10.20.0.254"),
			AuxAddress: map[string]netip.Addr{"printer": netip.MustParseAddr("10.20.0.9")}}}}})
	if err != nil {
		t.Fatal(err)
	}
	want := api.NetworkSpec{Annotations: api.Annotations{Name: "front", Labels: map[string]string{"tier": "front"}}, Driver: "overlay",
		Attachable: true, Internal: true, Encrypted: true, IPAM: &api.IPAMConfig{Subnet: "10.20.0.0/24", Gateway: "10.20.0.254",
			IPRange: "10.20.0.128/25", AuxAddresses: map[string]string{"printer": "10.20.0.9"}}}
	if jsonOf(t, got) != jsonOf(t, want) {
		t.Fatalf("got %s\nwant %s", jsonOf(t, got), jsonOf(t, want))
	}
	// No driver (a direct API call): Shoal's only kind; encrypted=false.
	got, err = NetworkSpecFromDocker(network.CreateRequest{Name: "n", Options: map[string]string{"encrypted": "false"}})
	if err != nil || got.Driver != "overlay" || got.Encrypted || got.IPAM != nil {
		t.Fatalf("a bare request: %+v %v", got, err)
	}

	_, err = NetworkSpecFromDocker(network.CreateRequest{Name: "x", Driver: "macvlan", Scope: "local", EnableIPv4: &no, EnableIPv6: &yes,
		ConfigOnly: true, ConfigFrom: &network.ConfigReference{Network: "base"}, Options: map[string]string{"parent": "eth0", "encrypted": "x"},
		IPAM: &network.IPAM{Driver: "dhcp", Options: map[string]string{"a": "b"}, Config: []network.IPAMConfig{
			{Subnet: netip.MustParsePrefix("fd00::/64"), IPRange: netip.MustParsePrefix("fd00::/80"), AuxAddress: map[string]netip.Addr{"r": netip.MustParseAddr("fd00::9")}},
			{Subnet: netip.MustParsePrefix("10.1.0.0/24")},
		}}})
	var ue *UnsupportedFieldsError
	if !errors.As(err, &ue) || !errors.Is(err, ErrUnsupported) {
		t.Fatalf("want an *UnsupportedFieldsError, got %v", err)
	}
	for _, f := range []string{"Driver", "Scope", "EnableIPv4", "EnableIPv6", "ConfigOnly", "ConfigFrom", "Options[encrypted]", "Options[parent]",
		"IPAM.Driver", "IPAM.Options", "IPAM.Config[0].Subnet", "IPAM.Config[1]"} {
		found := false
		for _, uf := range ue.Fields {
			found = found || uf.Path == f
		}
		if !found {
			t.Errorf("%s not named in: %v", f, err)
		}
	}
	_, err = NetworkSpecFromDocker(network.CreateRequest{Name: "x", IPAM: &network.IPAM{Config: []network.IPAMConfig{{Gateway: netip.MustParseAddr("10.0.0.1")}}}})
	if err == nil || !strings.Contains(err.Error(), "--gateway without --subnet") {
		t.Fatalf("a gateway without a subnet: %v", err)
	}
}

// A network as docker network inspect shows it.
func TestNetworkToDocker(t *testing.T) {
	at := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	n := NetworkToDocker(&api.Network{Meta: api.Meta{ID: "n1", CreatedAt: at}, VNI: 4097,
		Spec: api.NetworkSpec{Annotations: api.Annotations{Name: "front"}, Driver: "overlay", Encrypted: true, Attachable: true},
		IPAM: &api.IPAMConfig{Subnet: "10.0.1.0/24", Gateway: "10.0.1.1"}})
	if n.ID != "n1" || n.Name != "front" || !n.Created.Equal(at) || n.Scope != "swarm" || n.Driver != "overlay" || !n.EnableIPv4 || !n.Attachable ||
		n.Options[optVXLANIDs] != "4097" || n.IPAM.Driver != "default" || len(n.IPAM.Config) != 1 ||
		n.IPAM.Config[0].Subnet != netip.MustParsePrefix("10.0.1.0/24") || n.IPAM.Config[0].Gateway != netip.MustParseAddr("10.0.1.1") ||
		n.Labels == nil || n.Containers == nil {
		t.Fatalf("%+v", n)
	}
	if _, ok := n.Options[optEncrypted]; !ok {
		t.Fatalf("not shown encrypted: %v", n.Options)
	}
	// Not allocated yet: the spec's addressing; none: an empty list.
	n = NetworkToDocker(&api.Network{Spec: api.NetworkSpec{IPAM: &api.IPAMConfig{Subnet: "10.9.0.0/24"}}})
	if len(n.IPAM.Config) != 1 || n.IPAM.Config[0].Gateway.IsValid() {
		t.Fatalf("%+v", n.IPAM)
	}
	if n = NetworkToDocker(&api.Network{}); n.IPAM.Config == nil || len(n.IPAM.Config) != 0 || len(n.Options) != 0 {
		t.Fatalf("%+v", n)
	}
}

// Secrets never show their data; configs do; drivers and templates are
// refused.
func TestSecretAndConfigConversions(t *testing.T) {
	s := SecretToDocker(&api.Secret{Meta: api.Meta{ID: "s1", Version: 3}, Spec: api.SecretSpec{Annotations: api.Annotations{Name: "pw"}, Data: []byte("hunter2")}})
	if s.ID != "s1" || s.Version.Index != 3 || s.Spec.Name != "pw" || len(s.Spec.Data) != 0 || s.Spec.Labels == nil {
		t.Fatalf("secret: %+v", s)
	}
	c := ConfigToDocker(&api.Config{Meta: api.Meta{ID: "c1"}, Spec: api.ConfigSpec{Annotations: api.Annotations{Name: "app.conf"}, Data: []byte("x=1")}})
	if string(c.Spec.Data) != "x=1" || c.Spec.Name != "app.conf" {
		t.Fatalf("config: %+v", c)
	}
	spec, err := SecretSpecFromDocker(dswarm.SecretSpec{Annotations: dswarm.Annotations{Name: "pw", Labels: map[string]string{"a": "b"}}, Data: []byte("d"),
		Driver: &dswarm.Driver{}, Templating: &dswarm.Driver{}})
	if err != nil || spec.Name != "pw" || string(spec.Data) != "d" || spec.Labels["a"] != "b" {
		t.Fatalf("secret spec: %+v %v", spec, err)
	}
	_, err = SecretSpecFromDocker(dswarm.SecretSpec{Driver: &dswarm.Driver{Name: "vault"}, Templating: &dswarm.Driver{Name: "golang"}})
	if err == nil || !strings.Contains(err.Error(), "Driver (--driver") || !strings.Contains(err.Error(), "Templating (--template-driver") {
		t.Fatalf("a secret driver and template: %v", err)
	}
	if _, err = ConfigSpecFromDocker(dswarm.ConfigSpec{Templating: &dswarm.Driver{Options: map[string]string{"a": "b"}}}); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("a config template: %v", err)
	}
}
