package swarm

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/shoalproject/shoal/netmesh"
	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm/api"
)

// Networks, secrets and configs in the control API. A network's subnet
// (from the cluster's default address pools unless given) and VNI are
// allocated when it is created, unique across networks (the store checks
// it when the change applies); task addresses and service VIPs are the
// leader's allocator's. Secrets and configs are immutable but for their
// labels; the API never returns a secret's data.

// IngressNetworkName is the routing mesh's network, made with the cluster.
const IngressNetworkName = "ingress"

// DefaultIngressSubnet is the ingress network's subnet, as Docker's.
var DefaultIngressSubnet = netip.MustParsePrefix("10.0.0.0/24")

// firstVNI is where VNIs start (Docker's swarm uses 4096 and up).
const firstVNI = 4096

// firstWireGuardPort is where encrypted networks' UDP ports start.
const firstWireGuardPort = 51820

// ipamFor is an IPAM with the cluster's pools and the networks that exist.
func ipamFor(spec api.ClusterSpec, nets []*api.Network) (*netmesh.IPAM, error) {
	a := &netmesh.IPAM{SubnetBits: spec.SubnetSize}
	for _, p := range spec.DefaultAddrPool {
		pp, err := netip.ParsePrefix(p)
		if err != nil {
			return nil, fmt.Errorf("swarm: the cluster's address pool %q: %w", p, err)
		}
		a.Pools = append(a.Pools, pp)
	}
	for _, n := range nets {
		if err := addToIPAM(a, n); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// addToIPAM gives a network its subnet in the IPAM, with its range and the
// addresses that are never handed out: its gateway and auxiliary
// addresses. A network without a subnet is skipped.
func addToIPAM(a *netmesh.IPAM, n *api.Network) error {
	if n.IPAM == nil {
		return nil
	}
	p, err := netip.ParsePrefix(n.IPAM.Subnet)
	if err != nil {
		return nil
	}
	sub, err := a.AllocateSubnet(n.ID, p)
	if err != nil {
		return err
	}
	if r, err := netip.ParsePrefix(n.IPAM.IPRange); err == nil {
		if err := a.SetRange(n.ID, r); err != nil {
			return fmt.Errorf("swarm: network %s: %w", n.Spec.Name, err)
		}
	}
	reserve := func(owner, s string) {
		// Validated at creation; the IPAM's own gateway is reserved
		// already.
		if ad, err := netip.ParseAddr(s); err == nil && ad != sub.Gateway {
			a.AllocateAddr(n.ID, owner, ad)
		}
	}
	reserve("gateway", n.IPAM.Gateway)
	for name, ad := range n.IPAM.AuxAddresses {
		reserve("aux:"+name, ad)
	}
	return nil
}

func subnetOf(n *api.Network) string {
	if n.IPAM == nil {
		return ""
	}
	return n.IPAM.Subnet
}

// nodeAddr is an address a node advertises (its data-plane, status or
// management address).
type nodeAddr struct {
	addr     netip.Addr
	id, name string
}

// nodeAddrs lists the addresses the nodes advertise, IPv4 only (the
// overlays are), each once.
func nodeAddrs(tx *raftstore.ReadTx) ([]nodeAddr, error) {
	nodes, err := list[*api.Node](tx.List(TableNodes))
	if err != nil {
		return nil, err
	}
	var out []nodeAddr
	seen := map[netip.Addr]bool{}
	for _, n := range nodes {
		ss := []string{n.Description.DataAddr, n.Status.Addr}
		if n.ManagerStatus != nil {
			if h, _, err := net.SplitHostPort(n.ManagerStatus.Addr); err == nil {
				ss = append(ss, h)
			}
		}
		for _, s := range ss {
			ad, err := netip.ParseAddr(s)
			if err != nil || !ad.Is4() || ad.IsLoopback() || ad.IsUnspecified() || seen[ad] {
				continue
			}
			seen[ad] = true
			out = append(out, nodeAddr{addr: ad, id: n.ID, name: n.Description.Hostname})
		}
	}
	return out, nil
}

// newNetwork makes a network object: its subnet (asked for, or from the
// pools, outside the nodes' addresses) and gateway, its VNI and, if
// encrypted, its WireGuard port. With checkLAN, a subnet asked for that
// holds an address a node advertises is refused (a user's network; the
// ingress network a new cluster makes is Docker's default subnet).
func newNetwork(tx *raftstore.ReadTx, spec api.NetworkSpec, now time.Time, checkLAN bool) (*api.Network, error) {
	cspec, err := clusterSpec(tx)
	if err != nil {
		return nil, err
	}
	nets, err := list[*api.Network](tx.List(TableNetworks))
	if err != nil {
		return nil, err
	}
	a, err := ipamFor(cspec, nets)
	if err != nil {
		return nil, err
	}
	n := &api.Network{Meta: api.Meta{ID: newID(), CreatedAt: now, UpdatedAt: now}, Spec: spec}
	var want netip.Prefix
	if spec.IPAM != nil && spec.IPAM.Subnet != "" {
		want = netip.MustParsePrefix(spec.IPAM.Subnet) // validated
	}
	if want.IsValid() && want.Overlaps(netmesh.DefaultGatewaySubnet) {
		// Tasks would have two routes to the same addresses.
		return nil, fmt.Errorf("%w: spec.ipam.subnet: %s overlaps the nodes' gateway network %s: choose a subnet outside it", api.ErrInvalidSpec, want, netmesh.DefaultGatewaySubnet)
	}
	lan, err := nodeAddrs(tx)
	if err != nil {
		return nil, err
	}
	if want.IsValid() && checkLAN {
		// A task would reach the overlay, not the node, at that
		// address: the VXLAN and management traffic would break.
		for _, na := range lan {
			if want.Contains(na.addr) {
				who := na.id
				if na.name != "" {
					who = na.name + " (" + na.id + ")"
				}
				return nil, fmt.Errorf("%w: spec.ipam.subnet: %s holds %s, the address node %s advertises: choose a subnet outside the nodes' own network", api.ErrInvalidSpec, want, na.addr, who)
			}
		}
	}
	if !want.IsValid() {
		// From the pools: not a subnet that holds a node's address
		// (a /30 around each one keeps its subnet from being chosen).
		for _, na := range lan {
			a.AllocateSubnet("node-addr:"+na.addr.String(), netip.PrefixFrom(na.addr, 30).Masked())
		}
	}
	sub, err := a.AllocateSubnet(n.ID, want)
	if err != nil {
		for _, o := range nets {
			// Named for the operator (the IPAM knows networks by ID).
			if p, perr := netip.ParsePrefix(subnetOf(o)); perr == nil && want.IsValid() && p.Overlaps(want) {
				return nil, fmt.Errorf("%w: spec.ipam.subnet: %s overlaps network %s (%s): choose a subnet outside it", api.ErrInvalidSpec, want, o.Spec.Name, p)
			}
		}
		return nil, fmt.Errorf("%w: spec.ipam.subnet: %v", api.ErrInvalidSpec, err)
	}
	gw := sub.Gateway
	if spec.IPAM != nil && spec.IPAM.Gateway != "" {
		gw = netip.MustParseAddr(spec.IPAM.Gateway)
	}
	n.IPAM = &api.IPAMConfig{Subnet: sub.Prefix.String(), Gateway: gw.String()}
	if spec.IPAM != nil {
		n.IPAM.IPRange, n.IPAM.AuxAddresses = spec.IPAM.IPRange, maps.Clone(spec.IPAM.AuxAddresses)
	}
	used := map[uint32]bool{}
	ports := map[int]bool{}
	for _, o := range nets {
		used[o.VNI] = true
		ports[o.WireGuardPort] = true
	}
	for v := uint32(firstVNI); ; v++ {
		if !used[v] {
			n.VNI = v
			break
		}
	}
	if spec.Encrypted {
		for p := firstWireGuardPort; ; p++ {
			if !ports[p] {
				n.WireGuardPort = p
				break
			}
		}
	}
	return n, nil
}

// CreateNetwork creates an overlay network.
func (m *Manager) CreateNetwork(ctx context.Context, spec api.NetworkSpec) (*api.Network, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	return m.createNetwork(ctx, spec)
}

func (m *Manager) createNetwork(ctx context.Context, spec api.NetworkSpec) (*api.Network, error) {
	st, err := m.st()
	if err != nil {
		return nil, err
	}
	var out *api.Network
	err = retryConflicts(func() error {
		return st.Update(ctx, func(tx *raftstore.Tx) error {
			if same, err := tx.Find(TableNetworks, IndexName, spec.Name); err != nil {
				return err
			} else if len(same) > 0 {
				return nameInUse("network", spec.Name, same[0].ObjectID())
			}
			if spec.Ingress {
				all, err := list[*api.Network](tx.List(TableNetworks))
				if err != nil {
					return err
				}
				for _, n := range all {
					if n.Spec.Ingress {
						return fmt.Errorf("%w: spec.ingress: network %s is the ingress network: remove it first to replace it", api.ErrInvalidSpec, n.Spec.Name)
					}
				}
			}
			n, err := newNetwork(&tx.ReadTx, spec, time.Now().UTC(), true)
			if err != nil {
				return err
			}
			out = n
			return tx.Create(TableNetworks, n)
		})
	})
	if err != nil {
		return nil, asNameInUse(err, "network", spec.Name)
	}
	return out, nil
}

// retryConflicts runs fn again when another write took a unique key it
// computed (a subnet, a VNI, a port), a few times.
func retryConflicts(fn func() error) error {
	var err error
	for range 5 {
		err = fn()
		ce, ok := asConflict(err)
		if !ok || ce.Index == IndexName {
			return err
		}
	}
	return err
}

// retryRemoval runs a removal again when the object (or one it reads)
// changed under it: a removal asks for no version, so a write the managers
// made meanwhile (an address, a status) must not fail it.
func retryRemoval(fn func() error) error {
	var err error
	for range 20 {
		if err = fn(); !errors.Is(err, raftstore.ErrConflict) {
			return err
		}
	}
	return err
}

func asConflict(err error) (*raftstore.ConflictError, bool) {
	var ce *raftstore.ConflictError
	if errors.As(err, &ce) {
		return ce, true
	}
	return nil, false
}

// asNameInUse turns a unique-name conflict into ErrNameInUse.
func asNameInUse(err error, kind, name string) error {
	if ce, ok := asConflict(err); ok && ce.Index == IndexName {
		return nameInUse(kind, name, ce.HeldBy)
	}
	return err
}

// lookup finds an object by ID, else by name, else by a unique ID prefix.
func lookup[T raftstore.Object](tx *raftstore.ReadTx, table, kind, idOrName string) (T, error) {
	var zero T
	if o, err := tx.Get(table, idOrName); err == nil {
		return o.(T), nil
	}
	if found, err := list[T](tx.Find(table, IndexName, idOrName)); err == nil && len(found) > 0 {
		return found[0], nil
	}
	if len(idOrName) >= 3 {
		if found, err := list[T](tx.FindPrefix(table, raftstore.IndexID, idOrName)); err == nil && len(found) == 1 {
			return found[0], nil
		}
	}
	return zero, notFound(kind, idOrName)
}

// Network returns a network by ID or name.
func (m *Manager) Network(idOrName string) (*api.Network, error) {
	return lookupOne[*api.Network](m, TableNetworks, "network", idOrName)
}

// Networks lists the networks.
func (m *Manager) Networks() ([]*api.Network, error) { return listAll[*api.Network](m, TableNetworks) }

// RemoveNetwork removes a network no service uses.
func (m *Manager) RemoveNetwork(ctx context.Context, idOrName string) error {
	st, err := m.st()
	if err != nil {
		return err
	}
	return retryRemoval(func() error {
		return st.Update(ctx, func(tx *raftstore.Tx) error {
			n, err := lookup[*api.Network](&tx.ReadTx, TableNetworks, "network", idOrName)
			if err != nil {
				return err
			}
			users, err := usedBy(&tx.ReadTx, IndexNetwork, n.ID)
			if err != nil {
				return err
			}
			if n.Spec.Ingress {
				// Services that publish ingress ports use it.
				svcs, err := list[*api.Service](tx.List(TableServices))
				if err != nil {
					return err
				}
				for _, s := range svcs {
					if wantsIngress(s) {
						users = append(users, s.Spec.Name)
					}
				}
			}
			if len(users) > 0 {
				return fmt.Errorf("%w: network %s is in use by service(s) %s: remove them or their use of it first", api.ErrInvalidSpec, n.Spec.Name, strings.Join(users, ", "))
			}
			return tx.Delete(TableNetworks, n.ID)
		})
	})
}

// usedBy names the services whose index holds key.
func usedBy(tx *raftstore.ReadTx, index, key string) ([]string, error) {
	svcs, err := list[*api.Service](tx.Find(TableServices, index, key))
	if err != nil {
		return nil, err
	}
	var names []string
	for _, s := range svcs {
		names = append(names, s.Spec.Name)
	}
	slices.Sort(names)
	return names, nil
}

// createNamed stores obj, a new object of this kind called name, in
// table, unless the name is taken (ErrNameInUse naming the holder, also
// when a concurrent create took it first).
func createNamed(ctx context.Context, st *raftstore.Store, table, kind, name string, obj raftstore.Object) error {
	err := st.Update(ctx, func(tx *raftstore.Tx) error {
		if same, err := tx.Find(table, IndexName, name); err != nil {
			return err
		} else if len(same) > 0 {
			return nameInUse(kind, name, same[0].ObjectID())
		}
		return tx.Create(table, obj)
	})
	return asNameInUse(err, kind, name)
}

// removeUnused removes an object of this kind (by ID or name) from table
// unless a service's index entry says the service uses it; the refusal
// names those services.
func removeUnused[T raftstore.Object](ctx context.Context, st *raftstore.Store, table, index, kind, idOrName string, nameOf func(T) string) error {
	return retryRemoval(func() error {
		return st.Update(ctx, func(tx *raftstore.Tx) error {
			o, err := lookup[T](&tx.ReadTx, table, kind, idOrName)
			if err != nil {
				return err
			}
			if users, err := usedBy(&tx.ReadTx, index, o.ObjectID()); err != nil {
				return err
			} else if len(users) > 0 {
				return fmt.Errorf("%w: %s %s is in use by service(s) %s", api.ErrInvalidSpec, kind, nameOf(o), strings.Join(users, ", "))
			}
			return tx.Delete(table, o.ObjectID())
		})
	})
}

// CreateSecret stores a secret (sealed at rest with the rest of the
// store); the answer leaves its data out.
func (m *Manager) CreateSecret(ctx context.Context, spec api.SecretSpec) (*api.Secret, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	st, err := m.st()
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	sec := &api.Secret{Meta: api.Meta{ID: newID(), CreatedAt: now, UpdatedAt: now}, Spec: spec}
	if err := createNamed(ctx, st, TableSecrets, "secret", spec.Name, sec); err != nil {
		return nil, err
	}
	return sec.Redacted(), nil
}

// Secret returns a secret by ID or name, without its data.
func (m *Manager) Secret(idOrName string) (*api.Secret, error) {
	out, err := lookupOne[*api.Secret](m, TableSecrets, "secret", idOrName)
	if err != nil {
		return nil, err
	}
	return out.Redacted(), nil
}

// Secrets lists the secrets, without their data.
func (m *Manager) Secrets() ([]*api.Secret, error) {
	all, err := listAll[*api.Secret](m, TableSecrets)
	for i, s := range all {
		all[i] = s.Redacted()
	}
	return all, err
}

// UpdateSecret changes a secret's labels (its name and data cannot
// change: make a new secret to change them).
func (m *Manager) UpdateSecret(ctx context.Context, id string, version uint64, spec api.SecretSpec) (*api.Secret, error) {
	st, err := m.st()
	if err != nil {
		return nil, err
	}
	var out *api.Secret
	err = st.Update(ctx, func(tx *raftstore.Tx) error {
		cur, err := lookup[*api.Secret](&tx.ReadTx, TableSecrets, "secret", id)
		if err != nil {
			return err
		}
		// The same data back is accepted, as Docker does (docker stack
		// deploy sends it with every redeploy); compared in constant
		// time, so that the answer's timing tells nothing of the data.
		if spec.Name != cur.Spec.Name || (len(spec.Data) > 0 && subtle.ConstantTimeCompare(spec.Data, cur.Spec.Data) != 1) {
			return fmt.Errorf("%w: only a secret's labels can change; its name and data cannot (make a new secret)", api.ErrInvalidSpec)
		}
		c := *cur
		c.Spec.Labels, c.Version, c.UpdatedAt = spec.Labels, version, time.Now().UTC()
		out = &c
		return tx.Update(TableSecrets, &c)
	})
	if err != nil {
		return nil, err
	}
	return out.Redacted(), nil
}

// RemoveSecret removes a secret no service uses.
func (m *Manager) RemoveSecret(ctx context.Context, idOrName string) error {
	st, err := m.st()
	if err != nil {
		return err
	}
	return removeUnused(ctx, st, TableSecrets, IndexSecret, "secret", idOrName, func(s *api.Secret) string { return s.Spec.Name })
}

// CreateConfig stores a config.
func (m *Manager) CreateConfig(ctx context.Context, spec api.ConfigSpec) (*api.Config, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	st, err := m.st()
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	cfg := &api.Config{Meta: api.Meta{ID: newID(), CreatedAt: now, UpdatedAt: now}, Spec: spec}
	if err := createNamed(ctx, st, TableConfigs, "config", spec.Name, cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Config returns a config by ID or name.
func (m *Manager) Config(idOrName string) (*api.Config, error) {
	return lookupOne[*api.Config](m, TableConfigs, "config", idOrName)
}

// Configs lists the configs.
func (m *Manager) Configs() ([]*api.Config, error) { return listAll[*api.Config](m, TableConfigs) }

// UpdateConfig changes a config's labels.
func (m *Manager) UpdateConfig(ctx context.Context, id string, version uint64, spec api.ConfigSpec) (*api.Config, error) {
	st, err := m.st()
	if err != nil {
		return nil, err
	}
	var out *api.Config
	err = st.Update(ctx, func(tx *raftstore.Tx) error {
		cur, err := lookup[*api.Config](&tx.ReadTx, TableConfigs, "config", id)
		if err != nil {
			return err
		}
		if spec.Name != cur.Spec.Name || (len(spec.Data) > 0 && string(spec.Data) != string(cur.Spec.Data)) {
			return fmt.Errorf("%w: only a config's labels can change; its name and data cannot (make a new config)", api.ErrInvalidSpec)
		}
		c := *cur
		c.Spec.Labels, c.Version, c.UpdatedAt = spec.Labels, version, time.Now().UTC()
		out = &c
		return tx.Update(TableConfigs, &c)
	})
	return out, err
}

// RemoveConfig removes a config no service uses.
func (m *Manager) RemoveConfig(ctx context.Context, idOrName string) error {
	st, err := m.st()
	if err != nil {
		return err
	}
	return removeUnused(ctx, st, TableConfigs, IndexConfig, "config", idOrName, func(c *api.Config) string { return c.Spec.Name })
}
