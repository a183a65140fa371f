package netmesh

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"sync"
)

// IPAM errors.
var (
	ErrPoolExhausted = errors.New("netmesh: address pool exhausted")
	ErrOverlap       = errors.New("netmesh: subnet overlaps one in use")
	ErrAddrInUse     = errors.New("netmesh: address in use")
	ErrNoNetwork     = errors.New("netmesh: no such network")
	ErrOutOfRange    = errors.New("netmesh: address outside the subnet")
	ErrBadPrefix     = errors.New("netmesh: invalid subnet")
)

// Defaults, as Docker's swarm: 10.0.0.0/8 cut into /24s.
var DefaultPool = netip.MustParsePrefix("10.0.0.0/8")

// DefaultSubnetBits is the prefix length of a network's subnet.
const DefaultSubnetBits = 24

// IPAM hands out subnets to networks and addresses inside them. It is
// deterministic (the same calls give the same answers) and its State can be
// saved and restored, so managers can keep it in their replicated store.
// Addresses are given from a cursor that moves forward, so an address just
// released is not given again at once. IPv4 only for now.
type IPAM struct {
	// Pools are where subnets come from; empty means DefaultPool.
	Pools []netip.Prefix
	// SubnetBits is the prefix length of allocated subnets; 0 means 24.
	SubnetBits int

	mu   sync.Mutex
	nets map[string]*subnet
}

// Subnet is a network's addressing.
type Subnet struct {
	Prefix  netip.Prefix
	Gateway netip.Addr
}

type subnet struct {
	Subnet
	owners map[netip.Addr]string
	cursor uint32       // offset of the next address to try
	rng    netip.Prefix // where addresses are handed out from; zero means all of Prefix
}

func (a *IPAM) init() {
	if a.nets == nil {
		a.nets = map[string]*subnet{}
	}
}

// AllocateSubnet gives a network its subnet: want if valid and free, else
// the first free subnet of the pools. The gateway is the first address.
func (a *IPAM) AllocateSubnet(networkID string, want netip.Prefix) (Subnet, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.init()
	if s, ok := a.nets[networkID]; ok {
		return s.Subnet, nil
	}
	if want.IsValid() {
		if !want.Addr().Is4() || want.Masked() != want || want.Bits() > 30 {
			return Subnet{}, fmt.Errorf("%w: %s (an IPv4 subnet with host bits clear, /30 or larger)", ErrBadPrefix, want)
		}
		if id := a.overlapping(want); id != "" {
			return Subnet{}, fmt.Errorf("%w: %s overlaps network %s", ErrOverlap, want, id)
		}
		return a.add(networkID, want), nil
	}
	bits := a.SubnetBits
	if bits == 0 {
		bits = DefaultSubnetBits
	}
	pools := a.Pools
	if len(pools) == 0 {
		pools = []netip.Prefix{DefaultPool}
	}
	if bits < 1 || bits > 30 {
		return Subnet{}, fmt.Errorf("%w: SubnetBits %d: want 1 to 30", ErrBadPrefix, bits)
	}
	for _, pool := range pools {
		if !pool.IsValid() || !pool.Addr().Is4() {
			return Subnet{}, fmt.Errorf("%w: pool %s: pools are IPv4 prefixes", ErrBadPrefix, pool)
		}
		if bits < pool.Bits() {
			continue
		}
		size := uint32(1) << (32 - bits)
		base := u32(pool.Masked().Addr())
		count := uint64(1) << (bits - pool.Bits())
		for i := range count {
			p := netip.PrefixFrom(addr(base+uint32(i)*size), bits)
			if a.overlapping(p) == "" {
				return a.add(networkID, p), nil
			}
		}
	}
	return Subnet{}, fmt.Errorf("%w: no free /%d in %v", ErrPoolExhausted, bits, pools)
}

func (a *IPAM) add(networkID string, p netip.Prefix) Subnet {
	s := &subnet{Subnet: Subnet{Prefix: p, Gateway: p.Addr().Next()}, owners: map[netip.Addr]string{}, cursor: 2}
	s.owners[s.Gateway] = "gateway"
	a.nets[networkID] = s
	return s.Subnet
}

func (a *IPAM) overlapping(p netip.Prefix) string {
	for id, s := range a.nets {
		if s.Prefix.Overlaps(p) {
			return id
		}
	}
	return ""
}

// ReleaseSubnet frees a network's subnet and every address in it.
func (a *IPAM) ReleaseSubnet(networkID string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.nets[networkID]; !ok {
		return fmt.Errorf("%w: %s", ErrNoNetwork, networkID)
	}
	delete(a.nets, networkID)
	return nil
}

// AllocateAddr gives owner (a task, or a service's VIP) an address on the
// network: want if given and free, else the next free one.
func (a *IPAM) AllocateAddr(networkID, owner string, want netip.Addr) (netip.Addr, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.nets[networkID]
	if !ok {
		return netip.Addr{}, fmt.Errorf("%w: %s", ErrNoNetwork, networkID)
	}
	first, size := u32(s.Prefix.Addr()), uint32(1)<<(32-s.Prefix.Bits())
	if want.IsValid() {
		if !s.Prefix.Contains(want) || u32(want) == first || u32(want) == first+size-1 {
			return netip.Addr{}, fmt.Errorf("%w: %s is not a host address of %s", ErrOutOfRange, want, s.Prefix)
		}
		if o, used := s.owners[want]; used {
			return netip.Addr{}, fmt.Errorf("%w: %s (held by %s)", ErrAddrInUse, want, o)
		}
		s.owners[want] = owner
		return want, nil
	}
	// Addresses are handed out from lo to hi (the range, less the
	// subnet's network and broadcast addresses), from the cursor on.
	lo, hi := first+1, first+size-2
	if s.rng.IsValid() {
		rlo := u32(s.rng.Addr())
		lo, hi = max(lo, rlo), min(hi, rlo+uint32(1)<<(32-s.rng.Bits())-1)
	}
	if hi < lo {
		return netip.Addr{}, fmt.Errorf("%w: no host address in range %s of %s", ErrPoolExhausted, s.rng, s.Prefix)
	}
	n := hi - lo + 1
	start := first + s.cursor
	if start < lo || start > hi {
		start = lo
	}
	for i := range n {
		ad := addr(lo + (start-lo+i)%n)
		if _, used := s.owners[ad]; !used {
			s.owners[ad] = owner
			s.cursor = 1 + (u32(ad)-first)%(size-2)
			return ad, nil
		}
	}
	if s.rng.IsValid() {
		return netip.Addr{}, fmt.Errorf("%w: all %d addresses of range %s of %s are in use", ErrPoolExhausted, n, s.rng, s.Prefix)
	}
	return netip.Addr{}, fmt.Errorf("%w: all %d addresses of %s are in use", ErrPoolExhausted, n, s.Prefix)
}

// SetRange makes the network's addresses (those not asked for by value)
// come from r only, a prefix inside its subnet, as Docker's --ip-range.
// A zero r means the whole subnet again.
func (a *IPAM) SetRange(networkID string, r netip.Prefix) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.nets[networkID]
	if !ok {
		return fmt.Errorf("%w: %s", ErrNoNetwork, networkID)
	}
	if r.IsValid() && (r.Masked() != r || !s.Prefix.Contains(r.Addr()) || r.Bits() < s.Prefix.Bits()) {
		return fmt.Errorf("%w: range %s is not a prefix inside %s", ErrOutOfRange, r, s.Prefix)
	}
	s.rng = r
	return nil
}

// AllocateAfter makes the next allocations of the network (without a
// wanted address) start after ad, if they would start at or below it: a
// book rebuilt from saved allocations continues serially instead of
// handing out again an address freed a moment ago, which other nodes'
// caches (neighbour entries, conntrack, DNS answers) may still hold.
func (a *IPAM) AllocateAfter(networkID string, ad netip.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.nets[networkID]
	if !ok || !s.Prefix.Contains(ad) {
		return
	}
	first, size := u32(s.Prefix.Addr()), uint32(1)<<(32-s.Prefix.Bits())
	hosts := size - 2
	off := u32(ad) - first
	if off == 0 || off > hosts {
		return
	}
	if next := 1 + off%hosts; off >= s.cursor || s.cursor == 0 {
		s.cursor = next
	}
}

// Owner tells who holds an address.
func (a *IPAM) Owner(networkID string, ad netip.Addr) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.nets[networkID]
	if !ok {
		return "", false
	}
	o, ok := s.owners[ad]
	return o, ok
}

// ReleaseOwner frees every address owner holds on a network.
func (a *IPAM) ReleaseOwner(networkID, owner string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.nets[networkID]
	if !ok {
		return
	}
	for ad, o := range s.owners {
		if o == owner && ad != s.Gateway {
			delete(s.owners, ad)
		}
	}
}

// ReleaseAddr frees an address.
func (a *IPAM) ReleaseAddr(networkID string, ad netip.Addr) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.nets[networkID]
	if !ok {
		return fmt.Errorf("%w: %s", ErrNoNetwork, networkID)
	}
	if ad == s.Gateway {
		return fmt.Errorf("netmesh: %s is the gateway of %s and stays", ad, s.Prefix)
	}
	delete(s.owners, ad)
	return nil
}

// IPAMState is the serializable state of an IPAM.
type IPAMState struct {
	Networks []NetworkState `json:"networks"`
}

// NetworkState is one network's allocations.
type NetworkState struct {
	ID      string            `json:"id"`
	Subnet  netip.Prefix      `json:"subnet"`
	Gateway netip.Addr        `json:"gateway"`
	Cursor  uint32            `json:"cursor"`
	Owners  map[string]string `json:"owners"` // address -> owner
	// Range is where addresses are handed out from (SetRange); zero
	// means the whole subnet.
	Range netip.Prefix `json:"range,omitzero"`
}

// State returns the allocations, sorted, for saving.
func (a *IPAM) State() IPAMState {
	a.mu.Lock()
	defer a.mu.Unlock()
	var st IPAMState
	for id, s := range a.nets {
		ns := NetworkState{ID: id, Subnet: s.Prefix, Gateway: s.Gateway, Cursor: s.cursor, Owners: map[string]string{}, Range: s.rng}
		for ad, o := range s.owners {
			ns.Owners[ad.String()] = o
		}
		st.Networks = append(st.Networks, ns)
	}
	sort.Slice(st.Networks, func(i, j int) bool { return st.Networks[i].ID < st.Networks[j].ID })
	return st
}

// Restore replaces the allocations with saved ones.
func (a *IPAM) Restore(st IPAMState) error {
	nets := map[string]*subnet{}
	for _, ns := range st.Networks {
		if !ns.Subnet.IsValid() || !ns.Subnet.Addr().Is4() || ns.Subnet.Bits() > 30 || !ns.Subnet.Contains(ns.Gateway) {
			return fmt.Errorf("%w: network %s: subnet %s gateway %s", ErrBadPrefix, ns.ID, ns.Subnet, ns.Gateway)
		}
		if ns.Range.IsValid() && (!ns.Subnet.Contains(ns.Range.Addr()) || ns.Range.Bits() < ns.Subnet.Bits()) {
			return fmt.Errorf("%w: network %s: range %s outside subnet %s", ErrOutOfRange, ns.ID, ns.Range, ns.Subnet)
		}
		s := &subnet{Subnet: Subnet{Prefix: ns.Subnet, Gateway: ns.Gateway}, owners: map[netip.Addr]string{}, cursor: max(ns.Cursor, 1), rng: ns.Range}
		for as, o := range ns.Owners {
			ad, err := netip.ParseAddr(as)
			if err != nil || !ns.Subnet.Contains(ad) {
				return fmt.Errorf("%w: network %s: address %q", ErrOutOfRange, ns.ID, as)
			}
			s.owners[ad] = o
		}
		nets[ns.ID] = s
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.nets = nets
	return nil
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func addr(v uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}
