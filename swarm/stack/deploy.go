package stack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// DeployOptions tune Deploy. The zero value deploys without pruning.
type DeployOptions struct {
	// Prune removes the stack's services that the stack no longer has
	// (docker stack deploy --prune). Networks, secrets and configs are
	// left, as Docker leaves them.
	Prune bool
}

// MaxConflictRetries bounds how often Deploy reads a service again and
// retries its update when another change came in between.
const MaxConflictRetries = 10

// Op is what Deploy or Remove did with an object.
type Op string

// The operations.
const (
	OpCreate    Op = "create"
	OpUpdate    Op = "update"
	OpUnchanged Op = "unchanged"
	OpRemove    Op = "remove"
)

// Action is one thing Deploy or Remove did.
type Action struct {
	Op Op `json:"op"`
	// Kind is "network", "secret", "config" or "service".
	Kind string `json:"kind"`
	Name string `json:"name"`
	ID   string `json:"id,omitempty"`
}

// String writes the action as Docker prints it ("Creating network
// web_default", "Updating service web_web (id: 4f2...)").
func (a Action) String() string {
	switch a.Op {
	case OpCreate:
		return "Creating " + a.Kind + " " + a.Name
	case OpUpdate:
		return "Updating " + a.Kind + " " + a.Name + " (id: " + a.ID + ")"
	case OpRemove:
		return "Removing " + a.Kind + " " + a.Name
	}
	return "Unchanged " + a.Kind + " " + a.Name
}

// Deploy makes the cluster run the stack, as `docker stack deploy` does:
// it creates the stack's networks, secrets and configs that do not exist,
// then creates or updates each service by name (with the version it read,
// reading again and retrying when another change came in between). A
// service whose spec is unchanged is left alone, so a second deploy of
// the same stack changes nothing.
//
// Before changing anything, Deploy checks the whole stack (every spec
// through the API's Validate) and the cluster: external objects must
// exist, and objects of the stack's names must be the stack's own, with
// the same spec for networks and the same data for configs (they cannot
// change in place). What stops it is returned at once as a *ConflictError
// (wrapping also ErrNotFound when an external object is missing), so a
// stack is not deployed half-way for a reason known in advance.
//
// A secret that exists is kept as it is: the API never shows a secret's
// data, so a changed secret file goes unseen. Give a changed secret a new
// name (name: db_password_v2), as Docker, which refuses to change one,
// requires.
//
// It returns what it did, also when it fails part-way.
func Deploy(ctx context.Context, b Backend, s *Stack, opts DeployOptions) ([]Action, error) {
	if s == nil {
		return nil, fmt.Errorf("%w: no stack to deploy", ErrInvalidName)
	}
	st := labelled(s)
	if err := st.Validate(); err != nil {
		return nil, err
	}
	d := &deployer{b: b, st: st}
	if err := d.plan(ctx); err != nil {
		return nil, err
	}
	return d.apply(ctx, opts)
}

// labelled returns a copy of s whose objects all carry its namespace
// label, so that Remove finds whatever Deploy made (also of a Stack built
// by hand).
func labelled(s *Stack) *Stack {
	st := *s
	st.Networks = slices.Clone(s.Networks)
	for i := range st.Networks {
		st.Networks[i].Labels = withNamespace(st.Networks[i].Labels, s.Name)
	}
	st.Secrets = slices.Clone(s.Secrets)
	for i := range st.Secrets {
		st.Secrets[i].Labels = withNamespace(st.Secrets[i].Labels, s.Name)
	}
	st.Configs = slices.Clone(s.Configs)
	for i := range st.Configs {
		st.Configs[i].Labels = withNamespace(st.Configs[i].Labels, s.Name)
	}
	st.Services = slices.Clone(s.Services)
	for i := range st.Services {
		st.Services[i].Labels = withNamespace(st.Services[i].Labels, s.Name)
	}
	return &st
}

type deployer struct {
	b  Backend
	st *Stack

	networks map[string]*api.Network
	secrets  map[string]*api.Secret
	configs  map[string]*api.Config
	services map[string]*api.Service
	actions  []Action
}

func byName[T any](objs []*T, name func(*T) string) map[string]*T {
	m := make(map[string]*T, len(objs))
	for _, o := range objs {
		if o != nil {
			m[name(o)] = o
		}
	}
	return m
}

func ours(labels map[string]string, stack string) bool { return labels[LabelNamespace] == stack }

// plan reads the cluster and refuses, before any change, what cannot be
// deployed.
func (d *deployer) plan(ctx context.Context) error {
	nets, err := d.b.Networks(ctx, swarm.Filter{})
	if err != nil {
		return fmt.Errorf("stack: listing networks: %w", err)
	}
	secrets, err := d.b.Secrets(ctx, swarm.Filter{})
	if err != nil {
		return fmt.Errorf("stack: listing secrets: %w", err)
	}
	configs, err := d.b.Configs(ctx, swarm.Filter{})
	if err != nil {
		return fmt.Errorf("stack: listing configs: %w", err)
	}
	services, err := d.b.Services(ctx, swarm.Filter{})
	if err != nil {
		return fmt.Errorf("stack: listing services: %w", err)
	}
	d.networks = byName(nets, func(n *api.Network) string { return n.Spec.Name })
	d.secrets = byName(secrets, func(s *api.Secret) string { return s.Spec.Name })
	d.configs = byName(configs, func(c *api.Config) string { return c.Spec.Name })
	d.services = byName(services, func(s *api.Service) string { return s.Spec.Name })

	name := d.st.Name
	ce := &ConflictError{Stack: name}
	add := func(obj, format string, args ...any) {
		ce.Problems = append(ce.Problems, Problem{Path: obj, Message: fmt.Sprintf(format, args...)})
	}
	missing := false
	for _, n := range d.st.ExternalNetworks {
		if d.networks[n] == nil {
			missing = true
			add("network "+n, "is declared as external, but could not be found; create it first (an overlay network)")
		}
	}
	for _, n := range d.st.ExternalSecrets {
		if d.secrets[n] == nil {
			missing = true
			add("secret "+n, "is declared as external, but could not be found; create it first")
		}
	}
	for _, n := range d.st.ExternalConfigs {
		if d.configs[n] == nil {
			missing = true
			add("config "+n, "is declared as external, but could not be found; create it first")
		}
	}
	for _, want := range d.st.Networks {
		cur := d.networks[want.Name]
		switch {
		case cur == nil:
		case !ours(cur.Spec.Labels, name):
			add("network "+want.Name, "exists and is not part of stack %s; give the stack's network another name", name)
		default:
			if diff := networkDiff(cur.Spec, want); diff != "" {
				add("network "+want.Name, "exists with another spec (%s); a network cannot change in place: remove the stack and deploy it again", diff)
			}
		}
	}
	for _, want := range d.st.Secrets {
		cur := d.secrets[want.Name]
		switch {
		case cur == nil:
		case !ours(cur.Spec.Labels, name):
			add("secret "+want.Name, "exists and is not part of stack %s; give the stack's secret another name", name)
		case len(cur.Spec.Data) > 0 && !bytes.Equal(cur.Spec.Data, want.Data):
			add("secret "+want.Name, "exists with other data; a secret cannot change: give the new one another name (name: in the file)")
		}
	}
	for _, want := range d.st.Configs {
		cur := d.configs[want.Name]
		switch {
		case cur == nil:
		case !ours(cur.Spec.Labels, name):
			add("config "+want.Name, "exists and is not part of stack %s; give the stack's config another name", name)
		case !bytes.Equal(cur.Spec.Data, want.Data) || !maps.Equal(cur.Spec.Labels, want.Labels):
			add("config "+want.Name, "exists with other data or labels; a config cannot change: give the new one another name (name: in the file)")
		}
	}
	for _, want := range d.st.Services {
		if cur := d.services[want.Name]; cur != nil && !ours(cur.Spec.Labels, name) {
			add("service "+want.Name, "exists and is not part of stack %s; remove it, or rename the stack", name)
		}
	}
	if len(ce.Problems) > 0 {
		ce.Missing = missing
		return ce
	}
	return nil
}

// networkDiff says how a network differs from the one wanted; "" if in
// nothing that matters.
func networkDiff(cur, want api.NetworkSpec) string {
	var d []string
	driver := func(s string) string {
		if s == "" {
			return "overlay"
		}
		return s
	}
	if driver(cur.Driver) != driver(want.Driver) {
		d = append(d, fmt.Sprintf("driver %s, the file says %s", driver(cur.Driver), driver(want.Driver)))
	}
	flag := func(what string, c, w bool) {
		if c != w {
			d = append(d, fmt.Sprintf("%s %t, the file says %t", what, c, w))
		}
	}
	flag("attachable", cur.Attachable, want.Attachable)
	flag("internal", cur.Internal, want.Internal)
	flag("encrypted", cur.Encrypted, want.Encrypted)
	if w := want.IPAM; w != nil {
		c := cur.IPAM
		if c == nil {
			c = &api.IPAMConfig{}
		}
		if (w.Subnet != "" && w.Subnet != c.Subnet) || (w.Gateway != "" && w.Gateway != c.Gateway) {
			d = append(d, fmt.Sprintf("subnet %q gateway %q, the file says %q %q", c.Subnet, c.Gateway, w.Subnet, w.Gateway))
		}
		if w.IPRange != "" && w.IPRange != c.IPRange {
			d = append(d, fmt.Sprintf("ip_range %q, the file says %q", c.IPRange, w.IPRange))
		}
		if len(w.AuxAddresses) > 0 && !maps.Equal(w.AuxAddresses, c.AuxAddresses) {
			d = append(d, "other aux_addresses")
		}
	}
	if !maps.Equal(cur.Labels, want.Labels) {
		d = append(d, "other labels")
	}
	return strings.Join(d, ", ")
}

func (d *deployer) do(a Action) { d.actions = append(d.actions, a) }

func (d *deployer) apply(ctx context.Context, opts DeployOptions) ([]Action, error) {
	fail := func(what string, err error) ([]Action, error) {
		return d.actions, fmt.Errorf("stack: deploying %s: %s: %w", d.st.Name, what, err)
	}
	for _, spec := range d.st.Networks {
		if cur := d.networks[spec.Name]; cur != nil {
			d.do(Action{Op: OpUnchanged, Kind: "network", Name: spec.Name, ID: cur.ID})
			continue
		}
		n, err := d.b.CreateNetwork(ctx, spec)
		if err != nil {
			return fail("creating network "+spec.Name, err)
		}
		if n != nil {
			d.networks[spec.Name] = n
		}
		d.do(Action{Op: OpCreate, Kind: "network", Name: spec.Name, ID: idOf(n)})
	}
	for _, spec := range d.st.Secrets {
		if cur := d.secrets[spec.Name]; cur != nil {
			// The cluster never shows a secret's data: the update,
			// with the file's data, is what tells (as docker stack
			// deploy does it).
			if _, err := d.b.UpdateSecret(ctx, cur.ID, cur.Version, spec); err != nil {
				return fail("secret "+spec.Name, fmt.Errorf("%w: the cluster refused the file's data (%w); a secret cannot change: give the new one another name (name: in the file)", ErrConflict, err))
			}
			op := OpUnchanged
			if !maps.Equal(cur.Spec.Labels, spec.Labels) {
				op = OpUpdate
			}
			d.do(Action{Op: op, Kind: "secret", Name: spec.Name, ID: cur.ID})
			continue
		}
		s, err := d.b.CreateSecret(ctx, spec)
		if err != nil {
			return fail("creating secret "+spec.Name, err)
		}
		id := ""
		if s != nil {
			id = s.ID
			d.secrets[spec.Name] = s
		}
		d.do(Action{Op: OpCreate, Kind: "secret", Name: spec.Name, ID: id})
	}
	for _, spec := range d.st.Configs {
		if cur := d.configs[spec.Name]; cur != nil {
			d.do(Action{Op: OpUnchanged, Kind: "config", Name: spec.Name, ID: cur.ID})
			continue
		}
		c, err := d.b.CreateConfig(ctx, spec)
		if err != nil {
			return fail("creating config "+spec.Name, err)
		}
		id := ""
		if c != nil {
			id = c.ID
			d.configs[spec.Name] = c
		}
		d.do(Action{Op: OpCreate, Kind: "config", Name: spec.Name, ID: id})
	}
	for _, spec := range d.st.Services {
		a, err := d.service(ctx, spec)
		if err != nil {
			return fail("service "+spec.Name, err)
		}
		d.do(a)
	}
	if opts.Prune {
		for _, name := range sortedKeys(d.services) {
			cur := d.services[name]
			if !ours(cur.Spec.Labels, d.st.Name) || d.st.Service(name) != nil {
				continue
			}
			retry := func(err error) bool { return errors.Is(err, raftstore.ErrConflict) || swarm.Retryable(err) }
			if err := removeOne(ctx, d.b.RemoveService, cur.ID, retry); err != nil {
				return fail("pruning service "+name, err)
			}
			d.do(Action{Op: OpRemove, Kind: "service", Name: name, ID: cur.ID})
		}
	}
	return d.actions, nil
}

func idOf(n *api.Network) string {
	if n == nil {
		return ""
	}
	return n.ID
}

// service creates or updates one service by name, with the version it
// read; on a conflict (another change in between) or a lost race to
// create it, it reads the service again and retries.
func (d *deployer) service(ctx context.Context, spec api.ServiceSpec) (Action, error) {
	var err error
	for range MaxConflictRetries {
		var cur *api.Service
		cur, err = d.b.Service(ctx, spec.Name)
		if errors.Is(err, swarm.ErrNotFound) {
			var svc *api.Service
			svc, err = d.b.CreateService(ctx, spec)
			if errors.Is(err, swarm.ErrNameInUse) {
				continue // created meanwhile: read it and update it
			}
			if err != nil {
				return Action{}, err
			}
			return Action{Op: OpCreate, Kind: "service", Name: spec.Name, ID: svc.ID}, nil
		}
		if err != nil {
			return Action{}, err
		}
		if !ours(cur.Spec.Labels, d.st.Name) {
			return Action{}, &ConflictError{Stack: d.st.Name, Problems: []Problem{{Path: "service " + spec.Name,
				Message: "exists and is not part of stack " + d.st.Name + "; remove it, or rename the stack"}}}
		}
		want := spec
		// A forced update counter set by `service update --force` stays.
		want.TaskTemplate.ForceUpdate = cur.Spec.TaskTemplate.ForceUpdate
		if sameJSON(d.resolved(cur.Spec), d.resolved(want)) {
			return Action{Op: OpUnchanged, Kind: "service", Name: spec.Name, ID: cur.ID}, nil
		}
		_, err = d.b.UpdateService(ctx, cur.ID, cur.Version, want)
		if errors.Is(err, raftstore.ErrConflict) || errors.Is(err, swarm.ErrNotFound) {
			continue // changed or removed meanwhile: read it again
		}
		if err != nil {
			return Action{}, err
		}
		return Action{Op: OpUpdate, Kind: "service", Name: spec.Name, ID: cur.ID}, nil
	}
	return Action{}, fmt.Errorf("gave up after %d attempts, the service kept changing: %w", MaxConflictRetries, err)
}

// resolved returns a copy of spec with its references as the cluster
// stores them: networks by ID, secrets and configs with their IDs, so a
// spec read back compares equal to the one sent.
func (d *deployer) resolved(spec api.ServiceSpec) api.ServiceSpec {
	t := &spec.TaskTemplate
	t.Networks = slices.Clone(t.Networks)
	for i, n := range t.Networks {
		if net := d.networks[n.Target]; net != nil {
			t.Networks[i].Target = net.ID
		}
	}
	t.Secrets = slices.Clone(t.Secrets)
	for i, r := range t.Secrets {
		if s := d.secrets[r.SecretName]; s != nil && r.SecretID == "" {
			t.Secrets[i].SecretID = s.ID
		}
	}
	t.Configs = slices.Clone(t.Configs)
	for i, r := range t.Configs {
		if c := d.configs[r.ConfigName]; c != nil && r.ConfigID == "" {
			t.Configs[i].ConfigID = c.ID
		}
	}
	return spec
}

// sameJSON reports whether two specs are the same as the API stores them
// (nil and empty are alike).
func sameJSON(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}
