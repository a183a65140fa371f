package netmesh

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// fastPath creates, changes and removes services by talking netlink to
// nf_tables directly, each in one batch (one atomic transaction): a new
// service's chain and verdict-map element, the chain's one rule (with a
// fresh anonymous map of backends). Unlike the nft program, it does not read
// the table first, so the cost does not grow with the number of services.
// Only the base table (at Start) is written as an nft script.
type fastPath struct {
	conn  *nftables.Conn
	table *nftables.Table
	ns    netns.NsHandle
}

func newFastPath(path, table string) (*fastPath, error) {
	ns, err := openNS(path)
	if err != nil {
		return nil, err
	}
	conn, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("netmesh: nf_tables netlink: %w", err)
	}
	return &fastPath{conn: conn, table: &nftables.Table{Name: table, Family: nftables.TableFamilyIPv4}, ns: ns}, nil
}

func (f *fastPath) close() {
	f.conn.CloseLasting()
	f.ns.Close()
}

// markValue is the conntrack mark of routing-mesh connections (masqueraded).
const markValue = 0x5348

// verdictMap is one of the table's maps from a service's key to its chain.
func (f *fastPath) verdictMap(name string) *nftables.Set {
	return &nftables.Set{Table: f.table, Name: name, IsMap: true}
}

// meshKey is a key of the routing mesh's verdict map (inet_proto .
// inet_service); vipKeyBytes one of the VIP balancer's (ipv4_addr .
// inet_proto . inet_service). Each field of a concatenation takes 4 bytes.
func meshKey(proto Protocol, port uint16) []byte {
	k := make([]byte, 8)
	k[0] = protoNumber(proto)
	binary.BigEndian.PutUint16(k[4:], port)
	return k
}

func vipKeyBytes(vip netip.Addr, proto Protocol, port uint16) []byte {
	a := vip.As4()
	return append(a[:], meshKey(proto, port)...)
}

func protoNumber(p Protocol) byte {
	if p == UDP {
		return unix.IPPROTO_UDP
	}
	return unix.IPPROTO_TCP
}

// setService makes a service's chain hold its current backends; a new
// service also gets its chain and its element in the verdict map vmap, in
// the same transaction, so no packet sees half a service.
func (f *fastPath) setService(vmap, chain string, key []byte, isNew bool, proto Protocol, backends []Backend, mark bool) error {
	ch := &nftables.Chain{Name: chain, Table: f.table}
	if isNew {
		f.conn.AddChain(ch)
		if err := f.conn.SetAddElements(f.verdictMap(vmap), []nftables.SetElement{{Key: key,
			VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: chain}}}); err != nil {
			return err
		}
	}
	return f.setBackends(ch, proto, backends, mark)
}

// removeService deletes a service's element of vmap and its chain.
func (f *fastPath) removeService(vmap, chain string, key []byte) error {
	if err := f.conn.SetDeleteElements(f.verdictMap(vmap), []nftables.SetElement{{Key: key}}); err != nil {
		return err
	}
	f.conn.DelChain(&nftables.Chain{Name: chain, Table: f.table})
	if err := f.conn.Flush(); err != nil {
		return fmt.Errorf("netmesh: nf_tables removal of %s: %w", chain, err)
	}
	return nil
}

// setBackends replaces the rule of chain: match the protocol, mark the
// connection (mesh only), and DNAT to one backend picked by numgen. Backends
// of port 0 keep the connection's port (the address alone is translated).
func (f *fastPath) setBackends(ch *nftables.Chain, proto Protocol, backends []Backend, mark bool) error {
	chain := ch.Name
	f.conn.FlushChain(ch)
	p := protoNumber(proto)
	exprs := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
	}
	if mark {
		exprs = append(exprs,
			&expr.Immediate{Register: 1, Data: binaryutil.NativeEndian.PutUint32(markValue)},
			&expr.Ct{Key: expr.CtKeyMARK, Register: 1, SourceRegister: true})
	}
	n := len(backends)
	switch {
	case n == 0:
		exprs = append(exprs, &expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: unix.NFT_REJECT_ICMPX_PORT_UNREACH})
	case n == 1:
		a := backends[0].Addr.As4()
		if backends[0].Port == 0 {
			exprs = append(exprs,
				&expr.Immediate{Register: 1, Data: a[:]},
				&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1})
			break
		}
		exprs = append(exprs,
			&expr.Immediate{Register: 1, Data: a[:]},
			&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(backends[0].Port)},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true})
	case samePort(backends):
		set := &nftables.Set{Table: f.table, Anonymous: true, Constant: true, IsMap: true,
			KeyType: nftables.TypeInteger, DataType: nftables.TypeIPAddr}
		elems := make([]nftables.SetElement, n)
		for i, b := range backends {
			a := b.Addr.As4()
			elems[i] = nftables.SetElement{Key: binaryutil.NativeEndian.PutUint32(uint32(i)), Val: a[:]}
		}
		if err := f.conn.AddSet(set, elems); err != nil {
			return err
		}
		exprs = append(exprs,
			&expr.Numgen{Register: 1, Modulus: uint32(n), Type: unix.NFT_NG_RANDOM},
			&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: set.Name, SetID: set.ID},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1})
	default:
		set := &nftables.Set{Table: f.table, Anonymous: true, Constant: true, IsMap: true,
			KeyType: nftables.TypeInteger, DataType: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)}
		elems := make([]nftables.SetElement, n)
		for i, b := range backends {
			a := b.Addr.As4()
			val := make([]byte, 8) // ipv4_addr, then inet_service padded to 4 bytes
			copy(val, a[:])
			binary.BigEndian.PutUint16(val[4:], b.Port)
			// numgen leaves its result in host byte order.
			elems[i] = nftables.SetElement{Key: binaryutil.NativeEndian.PutUint32(uint32(i)), Val: val}
		}
		if err := f.conn.AddSet(set, elems); err != nil {
			return err
		}
		exprs = append(exprs,
			&expr.Numgen{Register: 1, Modulus: uint32(n), Type: unix.NFT_NG_RANDOM},
			&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: set.Name, SetID: set.ID},
			// The map's value fills register 1: the address in its first 32
			// bits, the port in the next (32-bit register 9).
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 9, Specified: true})
	}
	f.conn.AddRule(&nftables.Rule{Table: f.table, Chain: ch, Exprs: exprs})
	if err := f.conn.Flush(); err != nil {
		return fmt.Errorf("netmesh: nf_tables update of %s: %w", chain, err)
	}
	return nil
}

// samePort reports whether the backends keep the connection's port (port
// 0, a VIP of every port); callers never mix them with others.
func samePort(backends []Backend) bool { return len(backends) > 0 && backends[0].Port == 0 }
