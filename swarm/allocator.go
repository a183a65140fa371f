package swarm

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/shoalproject/shoal/netmesh"
	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm/api"
)

// allocator is the leader's book of addresses on overlay networks: task
// addresses, service VIPs and nodes' ingress addresses. Allocations are
// recorded in the objects (a task's Networks, a service's Endpoint, a
// node's Attachments) and committed with the pass that makes them, so the
// book is rebuilt from the store at every full pass (on a new leader
// first, after its barrier): a failover never hands out an address twice.
// Addresses of tasks that ended are free again (a task's address stays in
// its history, unused).
type allocator struct {
	spec    api.ClusterSpec
	ipam    *netmesh.IPAM
	nets    map[string]*api.Network
	ingress string // the ingress network's ID, "" when there is none
}

func taskOwner(id string) string          { return "task:" + id }
func vipOwner(svc, network string) string { return "vip:" + svc + ":" + network }
func nodeOwner(id string) string          { return "node:" + id }

// newAllocator rebuilds the book from a state of the store.
func newAllocator(tx *raftstore.ReadTx) (*allocator, error) {
	spec, err := clusterSpec(tx)
	if err != nil {
		return nil, err
	}
	nets, err := list[*api.Network](tx.List(TableNetworks))
	if err != nil {
		return nil, err
	}
	a := &allocator{spec: spec, nets: map[string]*api.Network{}}
	if a.ipam, err = ipamFor(spec, nets); err != nil {
		return nil, err
	}
	for _, n := range nets {
		a.nets[n.ID] = n
		if n.Spec.Ingress {
			a.ingress = n.ID
		}
	}
	svcs, err := list[*api.Service](tx.List(TableServices))
	if err != nil {
		return nil, err
	}
	for _, s := range svcs {
		if s.Endpoint == nil {
			continue
		}
		for _, v := range s.Endpoint.VirtualIPs {
			a.claim(v.NetworkID, v.Addr, vipOwner(s.ID, v.NetworkID))
		}
	}
	tasks, err := list[*api.Task](tx.List(TableTasks))
	if err != nil {
		return nil, err
	}
	for _, t := range tasks {
		for _, na := range t.Networks {
			for _, ad := range na.Addresses {
				if ended(t) {
					// Free, but handed out again only after the
					// addresses above it (serial allocation).
					if p, ok := parseAddr(ad); ok {
						a.ipam.AllocateAfter(na.NetworkID, p)
					}
					continue
				}
				a.claim(na.NetworkID, ad, taskOwner(t.ID))
			}
		}
	}
	nodes, err := list[*api.Node](tx.List(TableNodes))
	if err != nil {
		return nil, err
	}
	for _, n := range nodes {
		for _, na := range n.Attachments {
			for _, ad := range na.Addresses {
				a.claim(na.NetworkID, ad, nodeOwner(n.ID))
			}
		}
	}
	return a, nil
}

// claim records an address held in the store (a prefix "10.0.1.5/24" or a
// bare address).
func (a *allocator) claim(network, addr, owner string) {
	ad, ok := parseAddr(addr)
	if !ok {
		return
	}
	a.ipam.AllocateAddr(network, owner, ad)
	a.ipam.AllocateAfter(network, ad)
}

func parseAddr(s string) (netip.Addr, bool) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Addr(), true
	}
	ad, err := netip.ParseAddr(s)
	return ad, err == nil
}

// syncNetworks learns networks made since the book was built, and forgets
// removed ones: those first, since a new network may have taken the
// subnet of one removed since the last pass (docker stack rm, then
// deploy).
func (a *allocator) syncNetworks(nets []*api.Network) {
	seen := map[string]bool{}
	for _, n := range nets {
		seen[n.ID] = true
	}
	for id := range a.nets {
		if !seen[id] {
			delete(a.nets, id)
			a.ipam.ReleaseSubnet(id)
			if a.ingress == id {
				a.ingress = ""
			}
		}
	}
	for _, n := range nets {
		if _, ok := a.nets[n.ID]; ok {
			continue
		}
		a.nets[n.ID] = n
		if n.Spec.Ingress {
			a.ingress = n.ID
		}
		addToIPAM(a.ipam, n)
	}
}

// wantsIngress reports whether a service's tasks attach to ingress: it
// publishes a port in ingress mode.
func wantsIngress(svc *api.Service) bool {
	return len(ingressPortKeys(svc)) > 0
}

// networksOf lists the networks a service's tasks attach to, ingress first
// when it publishes ingress ports.
func (a *allocator) networksOf(svc *api.Service) []string {
	var out []string
	if wantsIngress(svc) && a.ingress != "" {
		out = append(out, a.ingress)
	}
	for _, n := range svc.Spec.TaskTemplate.Networks {
		if _, ok := a.nets[n.Target]; ok && !slices.Contains(out, n.Target) {
			out = append(out, n.Target)
		}
	}
	return out
}

// serviceVIPs gives a service (in VIP mode) a virtual IP on each of its
// networks and frees those of networks it left. It returns whether the
// endpoint changed.
func (a *allocator) serviceVIPs(svc *api.Service) (bool, error) {
	var want []string
	if svc.Spec.EndpointSpec == nil || svc.Spec.EndpointSpec.Mode != api.EndpointDNSRR {
		want = a.networksOf(svc)
	}
	var have []api.VirtualIP
	if svc.Endpoint != nil {
		have = svc.Endpoint.VirtualIPs
	}
	var keep []api.VirtualIP
	changed := false
	for _, v := range have {
		if slices.Contains(want, v.NetworkID) {
			keep = append(keep, v)
			continue
		}
		a.free(v.NetworkID, v.Addr, vipOwner(svc.ID, v.NetworkID))
		changed = true
	}
	for _, net := range want {
		if slices.ContainsFunc(keep, func(v api.VirtualIP) bool { return v.NetworkID == net }) {
			continue
		}
		ad, err := a.ipam.AllocateAddr(net, vipOwner(svc.ID, net), netip.Addr{})
		if err != nil {
			return changed, fmt.Errorf("a VIP on network %s: %w", a.name(net), err)
		}
		keep = append(keep, api.VirtualIP{NetworkID: net, Addr: a.prefixed(net, ad)})
		changed = true
	}
	if changed {
		ep := api.Endpoint{}
		if svc.Endpoint != nil {
			ep = *svc.Endpoint
		}
		ep.VirtualIPs = keep
		svc.Endpoint = &ep
	}
	return changed, nil
}

// taskAddrs allocates a task an address on each of its service's
// networks and returns its attachments; changed is false when it has them
// already. It does not change t, which may be the store's object.
func (a *allocator) taskAddrs(svc *api.Service, t *api.Task) (nets []api.NetworkAttachment, changed bool, err error) {
	want := a.networksOf(svc)
	if len(t.Networks) == len(want) {
		return t.Networks, false, nil // allocated already
	}
	var out []api.NetworkAttachment
	for _, net := range want {
		ad, err := a.ipam.AllocateAddr(net, taskOwner(t.ID), netip.Addr{})
		if err != nil {
			for _, got := range out {
				a.release(got, taskOwner(t.ID))
			}
			return nil, false, fmt.Errorf("no address on network %s: %w", a.name(net), err)
		}
		na := api.NetworkAttachment{NetworkID: net, Addresses: []string{a.prefixed(net, ad)}}
		for _, tn := range t.Spec.Networks {
			if tn.Target == net {
				na.Aliases = tn.Aliases
			}
		}
		out = append(out, na)
	}
	return out, true, nil
}

// releaseTask frees a task's addresses (it ended, or is gone).
func (a *allocator) releaseTask(t *api.Task) {
	for _, na := range t.Networks {
		a.release(na, taskOwner(t.ID))
	}
}

// releaseServiceByID frees a removed service's VIPs.
func (a *allocator) releaseServiceByID(id string) {
	for net := range a.nets {
		a.ipam.ReleaseOwner(net, vipOwner(id, net))
	}
}

// nodeAttachments drops a node's attachments to networks that are gone (an
// ingress network removed to be replaced, as Docker allows) and, when
// withIngress, gives it its address on the ingress network; it returns
// whether the node changed. The addresses dropped went with their network's
// subnet (syncNetworks).
func (a *allocator) nodeAttachments(n *api.Node, withIngress bool) (bool, error) {
	changed := false
	if slices.ContainsFunc(n.Attachments, func(na api.NetworkAttachment) bool { return a.nets[na.NetworkID] == nil }) {
		n.Attachments = slices.DeleteFunc(slices.Clone(n.Attachments), func(na api.NetworkAttachment) bool { return a.nets[na.NetworkID] == nil })
		changed = true
	}
	if !withIngress || a.ingress == "" || slices.ContainsFunc(n.Attachments, func(na api.NetworkAttachment) bool { return na.NetworkID == a.ingress }) {
		return changed, nil
	}
	ad, err := a.ipam.AllocateAddr(a.ingress, nodeOwner(n.ID), netip.Addr{})
	if err != nil {
		return changed, fmt.Errorf("node %s's address on ingress: %w", n.ID, err)
	}
	n.Attachments = append(slices.Clone(n.Attachments), api.NetworkAttachment{NetworkID: a.ingress, Addresses: []string{a.prefixed(a.ingress, ad)}})
	return true, nil
}

func (a *allocator) release(na api.NetworkAttachment, owner string) {
	for _, ad := range na.Addresses {
		a.free(na.NetworkID, ad, owner)
	}
}

// free releases an address if owner still holds it (it may have been
// given to another since).
func (a *allocator) free(network, addr, owner string) {
	ad, ok := parseAddr(addr)
	if !ok {
		return
	}
	if o, held := a.ipam.Owner(network, ad); held && o == owner {
		a.ipam.ReleaseAddr(network, ad)
	}
}

// prefixed writes an address with its network's prefix length.
func (a *allocator) prefixed(network string, ad netip.Addr) string {
	if n := a.nets[network]; n != nil && n.IPAM != nil {
		if p, err := netip.ParsePrefix(n.IPAM.Subnet); err == nil {
			return netip.PrefixFrom(ad, p.Bits()).String()
		}
	}
	return ad.String()
}

func (a *allocator) name(network string) string {
	if n := a.nets[network]; n != nil {
		return n.Spec.Name
	}
	return network
}
