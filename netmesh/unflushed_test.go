package netmesh

import (
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/vishvananda/netlink/nl"
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

// A listing the kernel marks interrupted (the table changed during it) is
// made again; one still interrupted after dumpAttempts is returned with
// the error, so the flush cuts what it names and counts as not whole
// (tried again at the next change). Other errors end it at once.
func TestWholeDumpListsAgainWhenInterrupted(t *testing.T) {
	lists := func(errs ...error) (func() ([][]byte, error), *int) {
		n := 0
		return func() ([][]byte, error) {
			err := errs[min(n, len(errs)-1)]
			n++
			return [][]byte{{byte(n)}}, err
		}, &n
	}
	dump, n := lists(nl.ErrDumpInterrupted, nil)
	if msgs, err := wholeDump(dump); err != nil || *n != 2 || msgs[0][0] != 2 {
		t.Fatalf("interrupted once: %d listings, %v, %v; want the second, whole", *n, msgs, err)
	}
	dump, n = lists(nl.ErrDumpInterrupted)
	if msgs, err := wholeDump(dump); !errors.Is(err, nl.ErrDumpInterrupted) || *n != dumpAttempts || len(msgs) != 1 {
		t.Fatalf("always interrupted: %d listings, %v, %v; want %d and the error with the last list", *n, msgs, err, dumpAttempts)
	}
	other := errors.New("netlink: no buffer space")
	dump, n = lists(other)
	if _, err := wholeDump(dump); !errors.Is(err, other) || *n != 1 {
		t.Fatalf("another error: %d listings, %v; want 1 and that error", *n, err)
	}
}
