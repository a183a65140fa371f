package netmesh

import (
	"encoding/binary"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// fastPath changes the backends of a service that already exists by talking
// netlink to nf_tables directly: flush the service's chain and add its one
// rule (with a fresh anonymous map) in one batch. Unlike the nft program,
// it does not read the table first, so the cost does not grow with the
// number of services. Creating and removing services (rare) still goes
// through nft scripts.
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

// setBackends replaces the rule of chain: match the protocol, mark the
// connection (mesh only), and DNAT to one backend picked by numgen.
func (f *fastPath) setBackends(chain string, proto Protocol, backends []Backend, mark bool) error {
	ch := &nftables.Chain{Name: chain, Table: f.table}
	f.conn.FlushChain(ch)
	p := byte(unix.IPPROTO_TCP)
	if proto == UDP {
		p = unix.IPPROTO_UDP
	}
	exprs := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
	}
	if mark {
		exprs = append(exprs,
			&expr.Immediate{Register: 1, Data: binaryutil.NativeEndian.PutUint32(markValue)},
			&expr.Ct{Key: expr.CtKeyMARK, Register: 1, SourceRegister: true})
	}
	switch n := len(backends); n {
	case 0:
		exprs = append(exprs, &expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: unix.NFT_REJECT_ICMPX_PORT_UNREACH})
	case 1:
		a := backends[0].Addr.As4()
		exprs = append(exprs,
			&expr.Immediate{Register: 1, Data: a[:]},
			&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(backends[0].Port)},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true})
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
