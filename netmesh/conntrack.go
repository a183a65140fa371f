package netmesh

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// removedBackends lists the backends of prev that next no longer has (by
// address and port: a backend that stays, draining or not, is not
// removed).
func removedBackends(prev, next []Backend) []Backend {
	keep := map[Backend]bool{}
	for _, b := range next {
		keep[b.key()] = true
	}
	var out []Backend
	for _, b := range prev {
		if !keep[b.key()] {
			out = append(out, b.key())
		}
	}
	return out
}

// unflushed remembers, per service, the removed backends whose
// connections a failed flush may have left: the next change of that
// service flushes them again (a change that found nothing removed would
// otherwise never retry, and those clients would hang instead of being
// reset). The owner's mutex guards it.
type unflushed map[string][]Backend

// take returns removed plus what an earlier flush of key left, without
// the backends that are back in next.
func (u unflushed) take(key string, removed, next []Backend) []Backend {
	left := u[key]
	if len(left) == 0 {
		return removed
	}
	back := map[Backend]bool{}
	for _, b := range next {
		back[b.key()] = true
	}
	out := make([]Backend, 0, len(removed)+len(left))
	for _, b := range removed {
		out = append(out, b.key())
	}
	for _, b := range left {
		if !back[b.key()] && !slices.Contains(out, b.key()) {
			out = append(out, b.key())
		}
	}
	return out
}

// maxUnflushed bounds what one service keeps for a retry while its flushes
// keep failing (a kernel without conntrack netlink, say): past it, the
// oldest are given up, and their clients wait for their own timeouts.
const maxUnflushed = 1024

// done records how the flush of removed went.
func (u unflushed) done(key string, removed []Backend, err error) {
	if err != nil {
		u[key] = removed[max(0, len(removed)-maxUnflushed):]
	} else {
		delete(u, key)
	}
}

// flush flushes the connections of one service's removed backends, with
// what an earlier failed flush of key left (less what is back in next),
// keeps what this one leaves for the next change, and logs what it cut.
func (u unflushed) flush(log *slog.Logger, what, key, path string, proto Protocol, port uint16, dst netip.Addr, removed, next []Backend, afterDump func()) error {
	removed = u.take(key, removed, next)
	cut, err := flushConntrack(path, proto, port, dst, removed, afterDump)
	u.done(key, removed, err)
	logCut(log, what, cut)
	return err
}

// ctnetlink attributes and flags netlink's nl package lacks
// (linux/netfilter/nfnetlink_conntrack.h).
const (
	ctaTupleIP           = 1
	ctaTupleProto        = 2
	ctaIPv4Src           = 1
	ctaIPv4Dst           = 2
	ctaProtoNum          = 1
	ctaProtoSrcPort      = 2
	ctaProtoDstPort      = 3
	ctaFilter            = 25
	ctaFilterOrigFlags   = 1
	ctaFilterReplyFlags  = 2
	ctaFilterFlagIPSrc   = 1 << 0
	ctaFilterFlagIPDst   = 1 << 1
	ctaFilterFlagProto   = 1 << 3
	ctaFilterFlagSrcPort = 1 << 4
	ctaFilterFlagDstPort = 1 << 5
	ipsDstNAT            = 1 << 5 // IPS_DST_NAT in CTA_STATUS
	ctaProtoinfo         = 4
	ctaProtoinfoTCP      = 1
	ctaProtoinfoTCPState = 1
)

// flushConntrack deletes the connection-tracking entries of connections
// that a service's rules sent to removed backends, in the namespace at path
// (empty: the caller's). Without this, packets of an established connection
// would keep going to a backend that is gone and the client would hang;
// with it, the next packet is treated as new and the client is reset at
// once. origDst, when valid, narrows the match to one VIP. origPort 0 means
// every port (a VIP of every port, whose removed backends have port 0: any
// port of theirs matches).
//
// The kernel is asked for the entries of the service's port only (a dump
// filtered by protocol, original destination port and, for a VIP, address,
// and for a single removed backend by the replies' source: CTA_FILTER,
// Linux 5.8), so the cost does not grow with the node's other connections;
// what comes back is matched again here (older kernels send everything),
// and each entry DNATed to a removed backend is deleted by its reply tuple and
// ID. What remains is the kernel's walk of its conntrack hash table, which
// all namespaces share (2.4 ms for 262,144 buckets here).
//
// It returns the connections it cut (their clients and backends), which
// the callers log: a connection cut that should not have been is
// otherwise invisible (the client just waits for an answer that never
// comes).
//
// afterDump, when set (by tests), runs between the listing and the
// deletions: where a client may open a new connection that reuses an old
// entry's original tuple.
func flushConntrack(path string, proto Protocol, origPort uint16, origDst netip.Addr, removed []Backend, afterDump func()) ([]cutConn, error) {
	if len(removed) == 0 {
		return nil, nil
	}
	ns, err := openNS(path)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	sock, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("netmesh: conntrack netlink: %w", err)
	}
	defer sock.Close()
	if err := sock.SetReceiveTimeout(&nl.SocketTimeoutTv); err != nil {
		return nil, err
	}
	sockets := map[int]*nl.SocketHandle{unix.NETLINK_NETFILTER: {Socket: sock}}
	pnum := protoNumber(proto)
	// One backend (a task drained or gone, the common case): the kernel
	// sends only its connections; several: those of the port, in one walk
	// of the table.
	var one netip.AddrPort
	if len(removed) == 1 {
		one = netip.AddrPortFrom(removed[0].Addr, removed[0].Port)
	}
	filtered := true
	msgs, err := wholeDump(func() ([][]byte, error) {
		msgs, err := dumpConntrack(sockets, pnum, origPort, origDst, one, filtered)
		if filtered && (errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP)) {
			filtered = false // a kernel without dump filters
			msgs, err = dumpConntrack(sockets, pnum, origPort, origDst, one, false)
		}
		return msgs, err
	})
	var errs []error
	switch {
	case errors.Is(err, nl.ErrDumpInterrupted):
		// Cut what the partial list names, and say the flush is not
		// whole, so that it is tried again at the service's next change.
		errs = append(errs, fmt.Errorf("list connections of %d/%s: %w", origPort, proto, err))
	case err != nil:
		return nil, fmt.Errorf("netmesh: list connections of %d/%s: %w", origPort, proto, err)
	}
	if afterDump != nil {
		afterDump()
	}
	gone := map[netip.AddrPort]bool{}
	for _, b := range removed {
		gone[netip.AddrPortFrom(b.Addr, b.Port)] = true
	}
	var cut []cutConn
	for _, m := range msgs {
		e, ok := parseConntrack(m)
		replySrc := e.replySrc
		if origPort == 0 {
			replySrc = netip.AddrPortFrom(replySrc.Addr(), 0)
		}
		if !ok || e.proto != pnum || (origPort != 0 && e.origDstPort != origPort) || !gone[replySrc] || e.status&ipsDstNAT == 0 ||
			(origDst.IsValid() && e.origDst != origDst) {
			continue
		}
		req := nl.NewNetlinkRequest(unix.NFNL_SUBSYS_CTNETLINK<<8|nl.IPCTNL_MSG_CT_DELETE, unix.NLM_F_ACK)
		req.Sockets = sockets
		req.AddData(&nl.Nfgenmsg{NfgenFamily: unix.AF_INET, Version: unix.NFNETLINK_V0})
		// By the reply tuple, which names the removed backend: the
		// original one (client to published port) may belong to a new
		// connection by now. A client that reuses its port while the old
		// entry is in TIME_WAIT makes the kernel drop that entry and
		// create one with the same original tuple, DNATed to a live
		// backend, often in the same memory and so with the same CTA_ID;
		// deleting by the original tuple cut that live connection (a
		// request through the mesh then waited for an answer that its
		// node dropped).
		req.AddData(nl.NewRtAttr(nl.CTA_TUPLE_REPLY|int(nl.NLA_F_NESTED), e.replyTuple))
		if e.id != nil {
			req.AddData(nl.NewRtAttr(nl.CTA_ID, e.id))
		}
		if e.zone != nil {
			req.AddData(nl.NewRtAttr(nl.CTA_ZONE, e.zone))
		}
		if _, err := req.Execute(unix.NETLINK_NETFILTER, 0); err != nil {
			if !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, err)
			}
			continue
		}
		cut = append(cut, cutConn{Client: e.origSrc, Backend: e.replySrc, Live: e.live()})
	}
	if err := errors.Join(errs...); err != nil {
		return cut, fmt.Errorf("netmesh: flush connections to removed backends: %w", err)
	}
	return cut, nil
}

// dumpAttempts bounds the listings wholeDump makes.
const dumpAttempts = 3

// wholeDump lists with dump until a listing comes whole: the kernel marks
// a dump interrupted (nl.ErrDumpInterrupted) when the table changed while
// it walked it, and such a list may miss entries. After dumpAttempts
// interrupted listings it returns the last one with that error.
func wholeDump(dump func() ([][]byte, error)) ([][]byte, error) {
	var msgs [][]byte
	var err error
	for range dumpAttempts {
		if msgs, err = dump(); !errors.Is(err, nl.ErrDumpInterrupted) {
			return msgs, err
		}
	}
	return msgs, fmt.Errorf("%w (%d listings in a row)", err, dumpAttempts)
}

// cutConn is a connection flushConntrack cut: its client (the original
// source), the backend it was sent to, and whether it was still live (not
// closed: TIME_WAIT and CLOSE entries are the past).
type cutConn struct {
	Client, Backend netip.AddrPort
	Live            bool
}

// logCut logs the connections a change cut: at Info when live ones were
// among them (clients that will see a reset), named first, else at Debug
// (only closed connections' leftovers went).
func logCut(log *slog.Logger, what string, cut []cutConn) {
	if len(cut) == 0 {
		return
	}
	cut = slices.Clone(cut)
	slices.SortStableFunc(cut, func(x, y cutConn) int {
		switch {
		case x.Live == y.Live:
			return 0
		case x.Live:
			return -1
		}
		return 1
	})
	live := 0
	for _, c := range cut {
		if c.Live {
			live++
		}
	}
	const shown = 16
	names := make([]string, 0, min(len(cut), shown))
	for _, c := range cut[:min(len(cut), shown)] {
		names = append(names, c.Client.String()+"->"+c.Backend.String())
	}
	level := slog.LevelDebug
	if live > 0 {
		level = slog.LevelInfo
	}
	log.Log(context.Background(), level, "netmesh: connections to removed backends reset", "service", what, "live", live, "count", len(cut), "connections", strings.Join(names, " "))
}

// dumpConntrack lists IPv4 conntrack entries, with filter only those of
// the protocol, original destination port (unless 0) and (when valid)
// address, and (when valid) those whose replies come from backend (its
// address alone when its port is 0).
func dumpConntrack(sockets map[int]*nl.SocketHandle, proto byte, port uint16, dst netip.Addr, backend netip.AddrPort, filter bool) ([][]byte, error) {
	req := nl.NewNetlinkRequest(unix.NFNL_SUBSYS_CTNETLINK<<8|nl.IPCTNL_MSG_CT_GET, unix.NLM_F_DUMP)
	req.Sockets = sockets
	req.AddData(&nl.Nfgenmsg{NfgenFamily: unix.AF_INET, Version: unix.NFNETLINK_V0})
	if filter {
		flags := uint32(ctaFilterFlagProto)
		if port != 0 {
			flags |= ctaFilterFlagDstPort
		}
		tuple := nl.NewRtAttr(nl.CTA_TUPLE_ORIG|int(nl.NLA_F_NESTED), nil)
		if dst.IsValid() {
			flags |= ctaFilterFlagIPDst
			ip := tuple.AddRtAttr(ctaTupleIP|int(nl.NLA_F_NESTED), nil)
			ip.AddRtAttr(ctaIPv4Dst, dst.AsSlice())
		}
		p := tuple.AddRtAttr(ctaTupleProto|int(nl.NLA_F_NESTED), nil)
		p.AddRtAttr(ctaProtoNum, []byte{proto})
		if port != 0 {
			p.AddRtAttr(ctaProtoDstPort, binary.BigEndian.AppendUint16(nil, port))
		}
		req.AddData(tuple)
		replyFlags := uint32(0)
		if backend.IsValid() {
			replyFlags = ctaFilterFlagIPSrc | ctaFilterFlagProto
			reply := nl.NewRtAttr(nl.CTA_TUPLE_REPLY|int(nl.NLA_F_NESTED), nil)
			ip := reply.AddRtAttr(ctaTupleIP|int(nl.NLA_F_NESTED), nil)
			ip.AddRtAttr(ctaIPv4Src, backend.Addr().AsSlice())
			p := reply.AddRtAttr(ctaTupleProto|int(nl.NLA_F_NESTED), nil)
			p.AddRtAttr(ctaProtoNum, []byte{proto})
			if backend.Port() != 0 {
				replyFlags |= ctaFilterFlagSrcPort
				p.AddRtAttr(ctaProtoSrcPort, binary.BigEndian.AppendUint16(nil, backend.Port()))
			}
			req.AddData(reply)
		}
		f := nl.NewRtAttr(ctaFilter|int(nl.NLA_F_NESTED), nil)
		f.AddRtAttr(ctaFilterOrigFlags, binary.NativeEndian.AppendUint32(nil, flags))
		f.AddRtAttr(ctaFilterReplyFlags, binary.NativeEndian.AppendUint32(nil, replyFlags))
		req.AddData(f)
	}
	return req.Execute(unix.NETLINK_NETFILTER, 0)
}

// ctEntry is what flushConntrack needs of a conntrack entry.
type ctEntry struct {
	proto       byte
	origSrc     netip.AddrPort
	origDst     netip.Addr
	origDstPort uint16
	replySrc    netip.AddrPort
	status      uint32
	replyTuple  []byte // CTA_TUPLE_REPLY's content, to delete the entry by
	id          []byte // CTA_ID's content
	tcpState    byte   // CTA_PROTOINFO_TCP_STATE, for TCP
	zone        []byte // CTA_ZONE's content, when not the default zone
}

// TCP conntrack states that are a closed connection's leftovers
// (enum tcp_conntrack in linux/netfilter/nf_conntrack_tcp.h).
const (
	ctTCPTimeWait = 7
	ctTCPClose    = 8
)

// live reports whether the entry is a connection still open (any UDP or
// other entry counts as live: it has no state to say otherwise).
func (e ctEntry) live() bool {
	return e.proto != unix.IPPROTO_TCP || (e.tcpState != ctTCPTimeWait && e.tcpState != ctTCPClose)
}

func parseConntrack(msg []byte) (ctEntry, bool) {
	var e ctEntry
	if len(msg) < nl.SizeofNfgenmsg {
		return e, false
	}
	top := attrMap(msg[nl.SizeofNfgenmsg:])
	orig, reply := top[nl.CTA_TUPLE_ORIG], top[nl.CTA_TUPLE_REPLY]
	if orig == nil || reply == nil {
		return e, false
	}
	e.replyTuple, e.id, e.zone = reply, top[nl.CTA_ID], top[nl.CTA_ZONE]
	// CTA_PROTOINFO > CTA_PROTOINFO_TCP > CTA_PROTOINFO_TCP_STATE.
	if st := attrMap(attrMap(top[ctaProtoinfo])[ctaProtoinfoTCP])[ctaProtoinfoTCPState]; len(st) == 1 {
		e.tcpState = st[0]
	}
	if s := top[nl.CTA_STATUS]; len(s) == 4 {
		e.status = binary.BigEndian.Uint32(s)
	}
	ot, rt := attrMap(orig), attrMap(reply)
	oip, oproto := attrMap(ot[ctaTupleIP]), attrMap(ot[ctaTupleProto])
	rip, rproto := attrMap(rt[ctaTupleIP]), attrMap(rt[ctaTupleProto])
	if p := oproto[ctaProtoNum]; len(p) == 1 {
		e.proto = p[0]
	}
	if p := oproto[ctaProtoDstPort]; len(p) == 2 {
		e.origDstPort = binary.BigEndian.Uint16(p)
	}
	if a, ok := netip.AddrFromSlice(oip[ctaIPv4Src]); ok {
		if p := oproto[ctaProtoSrcPort]; len(p) == 2 {
			e.origSrc = netip.AddrPortFrom(a, binary.BigEndian.Uint16(p))
		}
	}
	if a, ok := netip.AddrFromSlice(oip[ctaIPv4Dst]); ok {
		e.origDst = a
	}
	a, ok1 := netip.AddrFromSlice(rip[ctaIPv4Src])
	p := rproto[ctaProtoSrcPort]
	if !ok1 || len(p) != 2 {
		return e, false
	}
	e.replySrc = netip.AddrPortFrom(a, binary.BigEndian.Uint16(p))
	return e, true
}

// attrMap parses netlink attributes by type (nested flags masked).
func attrMap(b []byte) map[uint16][]byte {
	out := map[uint16][]byte{}
	attrs, err := nl.ParseRouteAttr(b)
	if err != nil {
		return out
	}
	for _, a := range attrs {
		out[a.Attr.Type&nl.NLA_TYPE_MASK] = a.Value
	}
	return out
}
