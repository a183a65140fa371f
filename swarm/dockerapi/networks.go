package dockerapi

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/moby/moby/api/types/network"

	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// Networks through the Docker API: Shoal's networks are swarm-scoped
// overlay networks, so docker network create asks for --driver overlay
// (the CLI's default is bridge, a network of one host that Shoal does not
// make), and what Shoal's networks cannot be (IPv6, another IPAM driver,
// an IP range inside the subnet, driver options other than encrypted) is
// refused by name.

// Driver options of Docker's overlay networks.
const (
	// optEncrypted (--opt encrypted) asks for encryption between nodes.
	optEncrypted = "encrypted"
	// optVXLANIDs is where dockerd shows an overlay network's VNI.
	optVXLANIDs = "com.docker.network.driver.overlay.vxlanid_list"
)

// NetworkCreateRequest is the body of POST /networks/create: Docker's,
// with the CheckDuplicate field that API versions before 1.44 send
// (Shoal refuses duplicate names whatever it says).
type NetworkCreateRequest struct {
	network.CreateRequest
	CheckDuplicate *bool `json:",omitempty"`
}

// NetworkSpecFromDocker converts docker network create's request to
// Shoal's network spec. What Shoal's networks cannot be makes it fail
// with an *UnsupportedFieldsError naming every such field; the result is
// not validated (the managers do that, with field paths).
func NetworkSpecFromDocker(d network.CreateRequest) (api.NetworkSpec, error) {
	var u unsupported
	s := api.NetworkSpec{
		Annotations: api.Annotations{Name: d.Name, Labels: cloneMap(d.Labels)},
		Driver:      "overlay",
		Attachable:  d.Attachable,
		Ingress:     d.Ingress,
		Internal:    d.Internal,
	}
	switch d.Driver {
	case "", "overlay":
	default:
		u.add("Driver", "--driver "+d.Driver+": Shoal's networks span the swarm and are overlay networks; use --driver overlay")
	}
	switch d.Scope {
	case "", "swarm":
	default:
		u.add("Scope", "--scope "+d.Scope+": Shoal's networks are swarm-scoped")
	}
	if d.EnableIPv4 != nil && !*d.EnableIPv4 {
		u.add("EnableIPv4", "--ipv4=false: Shoal's networks are IPv4")
	}
	if d.EnableIPv6 != nil && *d.EnableIPv6 {
		u.add("EnableIPv6", "--ipv6: Shoal's networks are IPv4 only")
	}
	if d.ConfigOnly {
		u.add("ConfigOnly", "--config-only")
	}
	if d.ConfigFrom != nil && d.ConfigFrom.Network != "" {
		u.add("ConfigFrom", "--config-from")
	}
	for _, k := range slices.Sorted(maps.Keys(d.Options)) {
		v := d.Options[k]
		if k != optEncrypted {
			u.add("Options["+k+"]", "--opt "+k+": the only driver option is encrypted")
			continue
		}
		// dockerd encrypts when the option is there, whatever its value;
		// a value that says no is taken at its word rather than ignored.
		on, err := strconv.ParseBool(v)
		switch {
		case v == "":
			s.Encrypted = true
		case err != nil:
			u.add("Options[encrypted]", "--opt encrypted="+v+": give no value, true or false")
		default:
			s.Encrypted = on
		}
	}
	if ipam := d.IPAM; ipam != nil {
		switch ipam.Driver {
		case "", "default":
		default:
			u.add("IPAM.Driver", "--ipam-driver "+ipam.Driver+": Shoal allocates addresses itself")
		}
		if len(ipam.Options) > 0 {
			u.add("IPAM.Options", "--ipam-opt")
		}
		for i, c := range ipam.Config {
			path := "IPAM.Config[" + itoa(i) + "]"
			if i > 0 {
				u.add(path, "a second --subnet: a Shoal network has one IPv4 subnet")
				continue
			}
			if c.Subnet.IsValid() && !c.Subnet.Addr().Is4() {
				u.add(path+".Subnet", "--subnet "+c.Subnet.String()+": Shoal's networks are IPv4 only")
			}
			if !c.Subnet.IsValid() && c.Gateway.IsValid() {
				u.add(path+".Gateway", "--gateway without --subnet: give the subnet the gateway is in")
			}
			// What is wrong with the range or auxiliary addresses
			// (outside the subnet, say) the spec's validation says.
			var ic api.IPAMConfig
			if c.Subnet.IsValid() {
				ic.Subnet = c.Subnet.String()
			}
			if c.Gateway.IsValid() {
				ic.Gateway = c.Gateway.String()
			}
			if c.IPRange.IsValid() && c.IPRange != c.Subnet {
				ic.IPRange = c.IPRange.String()
			}
			for name, ad := range c.AuxAddress {
				if ic.AuxAddresses == nil {
					ic.AuxAddresses = map[string]string{}
				}
				ic.AuxAddresses[name] = ad.String()
			}
			if ic.Subnet != "" || ic.Gateway != "" || ic.IPRange != "" || len(ic.AuxAddresses) > 0 {
				s.IPAM = &ic
			}
		}
	}
	if err := u.err(); err != nil {
		return api.NetworkSpec{}, err
	}
	return s, nil
}

// NetworkToDocker shows a network as docker network inspect does: a
// swarm-scoped overlay network, its subnet and gateway (as allocated),
// its VNI among the options as dockerd shows it, and encrypted there when
// it is.
func NetworkToDocker(n *api.Network) network.Inspect {
	opts := map[string]string{}
	if n.VNI != 0 {
		opts[optVXLANIDs] = strconv.FormatUint(uint64(n.VNI), 10)
	}
	if n.Spec.Encrypted {
		opts[optEncrypted] = ""
	}
	ipam := n.IPAM
	if ipam == nil {
		ipam = n.Spec.IPAM
	}
	cfg := []network.IPAMConfig{}
	if ipam != nil {
		var c network.IPAMConfig
		c.Subnet, _ = netip.ParsePrefix(ipam.Subnet)
		c.Gateway, _ = netip.ParseAddr(ipam.Gateway)
		c.IPRange, _ = netip.ParsePrefix(ipam.IPRange)
		for name, s := range ipam.AuxAddresses {
			if ad, err := netip.ParseAddr(s); err == nil {
				if c.AuxAddress == nil {
					c.AuxAddress = map[string]netip.Addr{}
				}
				c.AuxAddress[name] = ad
			}
		}
		cfg = append(cfg, c)
	}
	labels := maps.Clone(n.Spec.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	return network.Inspect{
		Network: network.Network{
			Name: n.Spec.Name, ID: n.ID, Created: n.CreatedAt, Scope: "swarm", Driver: "overlay",
			EnableIPv4: true,
			IPAM:       network.IPAM{Driver: "default", Config: cfg},
			Internal:   n.Spec.Internal, Attachable: n.Spec.Attachable, Ingress: n.Spec.Ingress,
			Options: opts, Labels: labels,
		},
		Containers: map[string]network.EndpointResource{},
	}
}

// networkList answers docker network ls: Shoal's networks (all
// swarm-scoped overlay networks), with dockerd's filters: name (a part of
// the name), id (a prefix of the ID), label, driver, scope, type (custom,
// or builtin for the ingress network) and dangling (used by no service).
func (h *Handler) networkList(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	f, err := parseFilters(r.URL.Query().Get("filters"))
	if err != nil {
		return err
	}
	if err := f.accept("name", "id", "label", "driver", "scope", "type", "dangling"); err != nil {
		return err
	}
	for _, t := range f["type"] {
		if t != "custom" && t != "builtin" {
			return badRequest("invalid filter 'type=%s' (custom or builtin)", t)
		}
	}
	var dangling []bool
	for _, v := range f["dangling"] {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return badRequest("invalid filter 'dangling=%s' (true or false)", v)
		}
		dangling = append(dangling, b)
	}
	nets, err := h.Backend.Networks(ctx, swarm.Filter{Labels: f["label"]})
	if err != nil {
		return err
	}
	var used map[string]bool
	if len(dangling) > 0 {
		if used, err = h.networksInUse(ctx); err != nil {
			return err
		}
	}
	out := []network.Summary{}
	for _, n := range nets {
		typ := "custom"
		if n.Spec.Ingress {
			typ = "builtin"
		}
		inUse := used[n.ID] || n.Spec.Ingress
		switch {
		case !anyPrefix(n.ID, f["id"]),
			len(f["name"]) > 0 && !slices.ContainsFunc(f["name"], func(v string) bool { return strings.Contains(n.Spec.Name, v) }),
			len(f["driver"]) > 0 && !slices.Contains(f["driver"], "overlay"),
			len(f["scope"]) > 0 && !slices.Contains(f["scope"], "swarm"),
			len(f["type"]) > 0 && !slices.Contains(f["type"], typ),
			len(dangling) > 0 && !slices.Contains(dangling, !inUse):
			continue
		}
		out = append(out, network.Summary{Network: NetworkToDocker(n).Network})
	}
	return writeJSON(w, http.StatusOK, out)
}

// networksInUse is the set of networks some service's tasks attach to or
// some service has a VIP on.
func (h *Handler) networksInUse(ctx context.Context) (map[string]bool, error) {
	services, err := h.Backend.Services(ctx, swarm.Filter{})
	if err != nil {
		return nil, err
	}
	used := map[string]bool{}
	for _, s := range services {
		for _, n := range s.Spec.TaskTemplate.Networks {
			used[n.Target] = true
		}
		if e := s.Endpoint; e != nil {
			for _, v := range e.VirtualIPs {
				used[v.NetworkID] = true
			}
		}
	}
	return used, nil
}

// networkInspect answers docker network inspect (and the CLI's look-ups
// of --network and of a stack's external networks). ?scope=local finds
// nothing: Shoal's networks are swarm-scoped.
func (h *Handler) networkInspect(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	if _, err := queryBool(r, "verbose"); err != nil {
		return err
	}
	ref := r.PathValue("id")
	switch sc := q.Get("scope"); sc {
	case "", "swarm", "global":
	case "local":
		return notFound("network %s not found (Shoal's networks are swarm-scoped)", ref)
	default:
		return badRequest("invalid scope %q (swarm, global or local)", sc)
	}
	n, err := h.Backend.Network(r.Context(), ref)
	if err != nil {
		if errors.Is(err, swarm.ErrNotFound) {
			return notFound("network %s not found", ref)
		}
		return err
	}
	return writeJSON(w, http.StatusOK, NetworkToDocker(n))
}

// networkCreate answers docker network create.
func (h *Handler) networkCreate(w http.ResponseWriter, r *http.Request) error {
	var d NetworkCreateRequest
	if err := readJSON(r, &d); err != nil {
		return err
	}
	spec, err := NetworkSpecFromDocker(d.CreateRequest)
	if err != nil {
		return err
	}
	n, err := h.Backend.CreateNetwork(r.Context(), spec)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, network.CreateResponse{ID: n.ID})
}

// networkRemove answers docker network rm. A network a service uses is
// refused with the services named, with dockerd's status (400: swarmkit's
// FailedPrecondition, which dockerd answers as a bad request).
func (h *Handler) networkRemove(w http.ResponseWriter, r *http.Request) error {
	ref := r.PathValue("id")
	if err := h.Backend.RemoveNetwork(r.Context(), ref); err != nil {
		if errors.Is(err, swarm.ErrNotFound) {
			return notFound("network %s not found", ref)
		}
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
