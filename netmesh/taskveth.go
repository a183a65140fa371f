package netmesh

import (
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// taskVeth is a veth pair between a bridge of this node and a task's
// network namespace, as Overlay.Attach and Gateway.Attach make it.
type taskVeth struct {
	host     string // the node's end, on the bridge
	master   int    // the bridge's index
	ifName   string // the task's end, in its namespace
	mtu      int    // 0: the kernel's default
	mac      net.HardwareAddr
	addr     *net.IPNet
	isolated bool // the bridge port talks only to the bridge, not to other ports
}

// attachTaskVeth makes the pair with the task's end already in the task's
// namespace under its final name (one request, where moving the end there
// and renaming it took two more, the move the costliest of all: with 50
// tasks starting at once it waited on the kernel's RTNL lock and an RCU
// grace period each time), then gives the task's end its address and
// brings both ends up; then, when set, runs in the task's namespace. A
// namespace that already has ifName with addr is left as it is; with
// another address it is an error. On failure the pair goes.
func attachTaskVeth(h *netlink.Handle, taskNS string, v taskVeth, then func(th *netlink.Handle, l netlink.Link) error) error {
	tns, err := netns.GetFromPath(taskNS)
	if err != nil {
		return fmt.Errorf("netmesh: task namespace %s: %w", taskNS, err)
	}
	defer tns.Close()
	th, err := netlink.NewHandleAt(tns)
	if err != nil {
		return err
	}
	defer th.Close()
	if l, err := th.LinkByName(v.ifName); err == nil {
		if addrs, _ := th.AddrList(l, unix.AF_INET); len(addrs) == 1 && addrs[0].IP.Equal(v.addr.IP) {
			return nil // already attached
		}
		return fmt.Errorf("netmesh: %s already has an %s with another address", taskNS, v.ifName)
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: v.host, MTU: v.mtu, MasterIndex: v.master},
		PeerName: v.ifName, PeerNamespace: netlink.NsFd(tns), PeerHardwareAddr: v.mac}
	if err := h.LinkAdd(veth); err != nil {
		return fmt.Errorf("netmesh: veth for %s: %w", taskNS, err)
	}
	fail := func(err error) error {
		if l, e := h.LinkByName(v.host); e == nil {
			h.LinkDel(l)
		}
		return fmt.Errorf("netmesh: %s in %s: %w", v.ifName, taskNS, err)
	}
	// Isolated before up: the port never forwards between tasks.
	if v.isolated {
		if err := h.LinkSetIsolated(veth, true); err != nil {
			return fail(err)
		}
	}
	if err := h.LinkSetUp(veth); err != nil {
		return fail(err)
	}
	pl, err := th.LinkByName(v.ifName)
	if err != nil {
		return fail(err)
	}
	if err := th.AddrAdd(pl, &netlink.Addr{IPNet: v.addr}); err != nil {
		return fail(err)
	}
	if err := th.LinkSetUp(pl); err != nil {
		return fail(err)
	}
	if then != nil {
		if err := then(th, pl); err != nil {
			return fail(err)
		}
	}
	return nil
}
