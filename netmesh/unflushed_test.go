package netmesh

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
)

// A flush that failed is tried again at the service's next change, for
// the backends still gone; one that worked is forgotten.
func TestUnflushedRetriedAtTheNextChange(t *testing.T) {
	b := func(last byte) Backend { return Backend{Addr: netip.AddrFrom4([4]byte{10, 0, 0, last}), Port: 80} }
	u := unflushed{}
	if got := u.take("web", []Backend{b(1)}, nil); !slices.Equal(got, []Backend{b(1)}) {
		t.Fatalf("nothing left yet: %v", got)
	}
	u.done("web", []Backend{b(1), b(2)}, errors.New("netlink: interrupted"))
	// The next change removes nothing itself; b(2) is back meanwhile.
	got := u.take("web", nil, []Backend{b(2), {Addr: b(3).Addr, Port: 80, Draining: true}})
	if !slices.Equal(got, []Backend{b(1)}) {
		t.Fatalf("after a failed flush: %v, want b(1) again and not b(2), which is back", got)
	}
	if got := u.take("other", nil, nil); len(got) != 0 {
		t.Fatalf("another service: %v", got)
	}
	u.done("web", got, nil)
	if got := u.take("web", nil, nil); len(got) != 0 {
		t.Fatalf("after a flush that worked: %v", got)
	}
}
