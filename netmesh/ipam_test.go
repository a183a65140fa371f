package netmesh

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestIPAMSubnetsFromPool(t *testing.T) {
	a := &IPAM{}
	s1, err := a.AllocateSubnet("n1", netip.Prefix{})
	if err != nil || s1.Prefix.String() != "10.0.0.0/24" || s1.Gateway.String() != "10.0.0.1" {
		t.Fatalf("%v %v", s1, err)
	}
	s2, _ := a.AllocateSubnet("n2", netip.Prefix{})
	if s2.Prefix.String() != "10.0.1.0/24" {
		t.Fatalf("second subnet %v", s2)
	}
	if _, err := a.AllocateSubnet("n3", netip.MustParsePrefix("10.0.1.128/25")); !errors.Is(err, ErrOverlap) {
		t.Fatalf("overlap: %v", err)
	}
	if _, err := a.AllocateSubnet("n3", netip.MustParsePrefix("10.0.2.1/24")); !errors.Is(err, ErrBadPrefix) {
		t.Fatalf("host bits: %v", err)
	}
	own, err := a.AllocateSubnet("n3", netip.MustParsePrefix("192.168.50.0/24"))
	if err != nil || own.Gateway.String() != "192.168.50.1" {
		t.Fatalf("chosen subnet %v %v", own, err)
	}
	a.ReleaseSubnet("n1")
	if s, _ := a.AllocateSubnet("n4", netip.Prefix{}); s.Prefix.String() != "10.0.0.0/24" {
		t.Fatalf("released subnet not reused: %v", s)
	}
	small := &IPAM{Pools: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/23")}}
	small.AllocateSubnet("a", netip.Prefix{})
	small.AllocateSubnet("b", netip.Prefix{})
	if _, err := small.AllocateSubnet("c", netip.Prefix{}); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("exhausted pool: %v", err)
	}
}

func TestIPAMAddressesCursorAndReuse(t *testing.T) {
	a := &IPAM{SubnetBits: 29} // 6 hosts: gateway .1 and .2-.6
	a.AllocateSubnet("n", netip.Prefix{})
	var got []string
	for i := range 5 {
		ad, err := a.AllocateAddr("n", fmt.Sprint("t", i), netip.Addr{})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ad.String())
	}
	if fmt.Sprint(got) != "[10.0.0.2 10.0.0.3 10.0.0.4 10.0.0.5 10.0.0.6]" {
		t.Fatalf("addresses %v", got)
	}
	if _, err := a.AllocateAddr("n", "x", netip.Addr{}); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("full subnet: %v", err)
	}
	a.ReleaseAddr("n", netip.MustParseAddr("10.0.0.3"))
	if ad, _ := a.AllocateAddr("n", "y", netip.Addr{}); ad.String() != "10.0.0.3" {
		t.Fatalf("reuse %v", ad)
	}
	// The cursor moves on: after releasing .4 and .5, the next is .4 only
	// once the cursor wraps past the end.
	a.ReleaseAddr("n", netip.MustParseAddr("10.0.0.4"))
	a.ReleaseAddr("n", netip.MustParseAddr("10.0.0.2"))
	if ad, _ := a.AllocateAddr("n", "z", netip.Addr{}); ad.String() != "10.0.0.4" {
		t.Fatalf("cursor order: %v", ad)
	}
	if _, err := a.AllocateAddr("n", "w", netip.MustParseAddr("10.0.0.6")); !errors.Is(err, ErrAddrInUse) {
		t.Fatalf("taken address: %v", err)
	}
	if _, err := a.AllocateAddr("n", "w", netip.MustParseAddr("10.0.0.7")); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("broadcast: %v", err)
	}
	if _, err := a.AllocateAddr("nope", "w", netip.Addr{}); !errors.Is(err, ErrNoNetwork) {
		t.Fatal(err)
	}
}

func TestIPAMStateRoundTripIsDeterministic(t *testing.T) {
	a := &IPAM{}
	for i := range 3 {
		a.AllocateSubnet(fmt.Sprint("n", i), netip.Prefix{})
		for j := range 5 {
			a.AllocateAddr(fmt.Sprint("n", i), fmt.Sprint("t", j), netip.Addr{})
		}
	}
	a.ReleaseAddr("n1", netip.MustParseAddr("10.0.1.3"))
	b, _ := json.Marshal(a.State())
	var st IPAMState
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	c := &IPAM{}
	if err := c.Restore(st); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a.State(), c.State()) {
		t.Fatal("restored state differs")
	}
	x, _ := a.AllocateAddr("n1", "new", netip.Addr{})
	y, _ := c.AllocateAddr("n1", "new", netip.Addr{})
	if x != y {
		t.Fatalf("restored IPAM decides differently: %v vs %v", x, y)
	}
	bad := IPAMState{Networks: []NetworkState{{ID: "x", Subnet: netip.MustParsePrefix("10.0.0.0/24"), Gateway: netip.MustParseAddr("10.0.0.1"), Owners: map[string]string{"10.9.9.9": "t"}}}}
	if err := (&IPAM{}).Restore(bad); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("bad state: %v", err)
	}
}

// A book rebuilt from saved allocations continues after the highest
// address it was told of, instead of handing out a freed one again.
func TestIPAMAllocateAfter(t *testing.T) {
	a := &IPAM{SubnetBits: 29} // hosts .2-.6 (gateway .1)
	a.AllocateSubnet("n", netip.Prefix{})
	a.AllocateAddr("n", "kept", netip.MustParseAddr("10.0.0.2"))
	a.AllocateAfter("n", netip.MustParseAddr("10.0.0.4")) // .3 and .4 were freed
	a.AllocateAfter("n", netip.MustParseAddr("10.0.0.3")) // lower: no effect
	a.AllocateAfter("n", netip.MustParseAddr("10.9.0.3")) // not in the subnet
	var got []string
	for i := range 4 {
		ad, err := a.AllocateAddr("n", fmt.Sprint("t", i), netip.Addr{})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ad.String())
	}
	if fmt.Sprint(got) != "[10.0.0.5 10.0.0.6 10.0.0.3 10.0.0.4]" {
		t.Fatalf("addresses %v: want the free ones above .4 first, then the wrap", got)
	}
}

// With a range, addresses not asked for by value come from it only, in
// order and wrapping inside it; an address asked for may be anywhere in
// the subnet; the range survives State and Restore.
func TestIPAMRange(t *testing.T) {
	a := &IPAM{}
	if _, err := a.AllocateSubnet("n", netip.MustParsePrefix("10.9.0.0/24")); err != nil {
		t.Fatal(err)
	}
	if err := a.SetRange("n", netip.MustParsePrefix("10.9.1.0/28")); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("a range outside the subnet: %v", err)
	}
	if err := a.SetRange("n", netip.MustParsePrefix("10.9.0.128/30")); err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := range 4 {
		ad, err := a.AllocateAddr("n", fmt.Sprint("t", i), netip.Addr{})
		if err != nil {
			if !errors.Is(err, ErrPoolExhausted) {
				t.Fatalf("allocation %d: %v", i, err)
			}
			break
		}
		got = append(got, ad.String())
	}
	if strings.Join(got, " ") != "10.9.0.128 10.9.0.129 10.9.0.130 10.9.0.131" {
		t.Fatalf("addresses from range 10.9.0.128/30: %v", got)
	}
	if _, err := a.AllocateAddr("n", "t5", netip.Addr{}); !errors.Is(err, ErrPoolExhausted) || !strings.Contains(err.Error(), "range 10.9.0.128/30") {
		t.Fatalf("a full range: %v", err)
	}
	// Asked for by value: anywhere in the subnet.
	if ad, err := a.AllocateAddr("n", "static", netip.MustParseAddr("10.9.0.7")); err != nil || ad.String() != "10.9.0.7" {
		t.Fatalf("a static address outside the range: %v %v", ad, err)
	}
	// Freed, an address comes back after the cursor has gone round the
	// range, not from outside it.
	a.ReleaseAddr("n", netip.MustParseAddr("10.9.0.129"))
	if ad, err := a.AllocateAddr("n", "t6", netip.Addr{}); err != nil || ad.String() != "10.9.0.129" {
		t.Fatalf("after a release: %v %v", ad, err)
	}
	b := &IPAM{}
	if err := b.Restore(a.State()); err != nil {
		t.Fatal(err)
	}
	if st := b.State(); st.Networks[0].Range.String() != "10.9.0.128/30" {
		t.Fatalf("range after a restore: %v", st.Networks[0].Range)
	}
	b.ReleaseAddr("n", netip.MustParseAddr("10.9.0.130"))
	if ad, err := b.AllocateAddr("n", "t7", netip.Addr{}); err != nil || ad.String() != "10.9.0.130" {
		t.Fatalf("restored, the range holds: %v %v", ad, err)
	}
}
