package netmesh

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// removedBackends lists the backends of prev that next no longer has.
func removedBackends(prev, next []Backend) []Backend {
	keep := map[Backend]bool{}
	for _, b := range next {
		keep[b] = true
	}
	var out []Backend
	for _, b := range prev {
		if !keep[b] {
			out = append(out, b)
		}
	}
	return out
}

// flushConntrack deletes the connection-tracking entries of connections
// that a service's rules sent to removed backends, in the namespace at path
// (empty: the caller's). Without this, packets of an established connection
// would keep going to a backend that is gone and the client would hang;
// with it, the next packet is treated as new and the client is reset at
// once. origDst, when valid, narrows the match to one VIP.
func flushConntrack(path string, proto Protocol, origPort uint16, origDst netip.Addr, removed []Backend) error {
	if len(removed) == 0 {
		return nil
	}
	ns, err := openNS(path)
	if err != nil {
		return err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_NETFILTER)
	if err != nil {
		return err
	}
	defer h.Close()
	p := uint8(unix.IPPROTO_TCP)
	if proto == UDP {
		p = unix.IPPROTO_UDP
	}
	var filters []netlink.CustomConntrackFilter
	for _, b := range removed {
		f := &netlink.ConntrackFilter{}
		f.AddProtocol(p)
		f.AddIP(netlink.ConntrackReplySrcIP, b.Addr.AsSlice())
		f.AddPort(netlink.ConntrackOrigDstPort, origPort)
		if origDst.IsValid() {
			f.AddIP(netlink.ConntrackOrigDstIP, origDst.AsSlice())
		}
		filters = append(filters, f)
	}
	if _, err := h.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, filters...); err != nil {
		return fmt.Errorf("netmesh: flush connections to removed backends: %w", err)
	}
	return nil
}
