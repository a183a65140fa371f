// Package stacktest has a fake cluster for tests of stack deploys:
// FakeBackend, an in-memory stack.Backend that checks what it is given as
// a manager would.
package stacktest

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/stack"
)

// FakeBackend is an in-memory stack.Backend: the control API of a cluster
// without the cluster. Like a manager, it runs every spec through the
// API's Validate (so a spec Shoal would refuse fails the test), keeps
// names unique per kind (swarm.ErrNameInUse), refuses an update based on
// an old version (raftstore.ErrConflict), refuses a service that uses a
// network, secret or config that does not exist (or the ingress network)
// and stores it with its references resolved (networks by ID), and
// refuses to remove a network, secret or config that a service uses.
// Listed secrets come without their data, as from the API.
//
// Each service has tasks made up on the fly: one running task per
// replica (slot 1..N), one on node "node-1" for a global service.
//
// The zero value is an empty cluster, safe for concurrent use.
type FakeBackend struct {
	// Fail, when set, is called before each call with the call's name
	// ("CreateService", "RemoveNetwork" ...) and the spec's name or the
	// ID or name given; an error it returns fails the call, to inject
	// conflicts and refusals.
	Fail func(call, name string) error

	mu       sync.Mutex
	version  uint64
	ids      int
	services []*api.Service
	networks []*api.Network
	secrets  []*api.Secret
	configs  []*api.Config
	writes   []string
}

var _ stack.Backend = (*FakeBackend)(nil)

// Writes returns the successful writes in order, such as "CreateService
// demo_web" or "RemoveNetwork demo_default".
func (f *FakeBackend) Writes() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.writes)
}

func (f *FakeBackend) fail(call, name string) error {
	if f.Fail != nil {
		return f.Fail(call, name)
	}
	return nil
}

// clone copies an object deeply, so callers and the fake share nothing.
// Objects are checked with encodable (see check) before they are stored.
func clone[T any](v *T) *T {
	out := new(T)
	if b, err := json.Marshal(v); err == nil {
		_ = json.Unmarshal(b, out)
	}
	return out
}

// encodable refuses what the API could not send (a NaN, say).
func encodable(v any) error {
	if _, err := json.Marshal(v); err != nil {
		return fmt.Errorf("%w: cannot be encoded: %v", api.ErrInvalidSpec, err)
	}
	return nil
}

func (f *FakeBackend) meta(prefix string) api.Meta {
	f.ids++
	f.version++
	now := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(f.version) * time.Second)
	return api.Meta{ID: fmt.Sprintf("%s%04d", prefix, f.ids), Version: f.version, CreatedAt: now, UpdatedAt: now}
}

func (f *FakeBackend) wrote(call, name string) { f.writes = append(f.writes, call+" "+name) }

func find[T any](objs []*T, idOrName string, meta func(*T) (string, string)) (int, *T) {
	for i, o := range objs {
		if id, name := meta(o); id == idOrName || name == idOrName {
			return i, o
		}
	}
	return -1, nil
}

func serviceMeta(s *api.Service) (string, string) { return s.ID, s.Spec.Name }
func networkMeta(n *api.Network) (string, string) { return n.ID, n.Spec.Name }
func secretMeta(s *api.Secret) (string, string)   { return s.ID, s.Spec.Name }
func configMeta(c *api.Config) (string, string)   { return c.ID, c.Spec.Name }

func matches(f swarm.Filter, id, name string, labels map[string]string) bool {
	prefix := func(s string, ps []string) bool {
		if len(ps) == 0 {
			return true
		}
		for _, p := range ps {
			if strings.HasPrefix(s, p) {
				return true
			}
		}
		return false
	}
	for _, w := range f.Labels {
		k, v, hasValue := strings.Cut(w, "=")
		got, ok := labels[k]
		if !ok || (hasValue && got != v) {
			return false
		}
	}
	return prefix(id, f.IDs) && prefix(name, f.Names)
}

func nameInUse(kind, name string) error {
	return fmt.Errorf("%w: %s %q exists", swarm.ErrNameInUse, kind, name)
}

func notFound(kind, idOrName string) error {
	return fmt.Errorf("%w: %s %q", swarm.ErrNotFound, kind, idOrName)
}

// resolve checks a service's networks, secrets and configs and resolves
// them as a manager does: the stored spec names networks by ID and has
// the IDs of its secrets and configs. A missing one, or the ingress
// network, is refused.
func (f *FakeBackend) resolve(spec api.ServiceSpec) (api.ServiceSpec, error) {
	var problems []string
	t := &spec.TaskTemplate
	t.Networks = slices.Clone(t.Networks)
	for i, n := range t.Networks {
		_, o := find(f.networks, n.Target, networkMeta)
		switch {
		case o == nil:
			problems = append(problems, fmt.Sprintf("spec.taskTemplate.networks[%d]: network %q does not exist", i, n.Target))
		case o.Spec.Ingress:
			problems = append(problems, fmt.Sprintf("spec.taskTemplate.networks[%d]: the ingress network is for published ports", i))
		default:
			t.Networks[i].Target = o.ID
		}
	}
	t.Secrets = slices.Clone(t.Secrets)
	for i, r := range t.Secrets {
		if _, o := find(f.secrets, firstOf(r.SecretID, r.SecretName), secretMeta); o == nil {
			problems = append(problems, fmt.Sprintf("spec.taskTemplate.secrets[%d]: secret %q does not exist", i, firstOf(r.SecretName, r.SecretID)))
		} else {
			t.Secrets[i].SecretID, t.Secrets[i].SecretName = o.ID, o.Spec.Name
		}
	}
	t.Configs = slices.Clone(t.Configs)
	for i, r := range t.Configs {
		if _, o := find(f.configs, firstOf(r.ConfigID, r.ConfigName), configMeta); o == nil {
			problems = append(problems, fmt.Sprintf("spec.taskTemplate.configs[%d]: config %q does not exist", i, firstOf(r.ConfigName, r.ConfigID)))
		} else {
			t.Configs[i].ConfigID, t.Configs[i].ConfigName = o.ID, o.Spec.Name
		}
	}
	if len(problems) > 0 {
		return spec, fmt.Errorf("%w: %s", api.ErrInvalidSpec, strings.Join(problems, "; "))
	}
	return spec, nil
}

func firstOf(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// CreateService validates the spec and stores a new service.
func (f *FakeBackend) CreateService(_ context.Context, spec api.ServiceSpec) (*api.Service, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail("CreateService", spec.Name); err != nil {
		return nil, err
	}
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if err := encodable(spec); err != nil {
		return nil, err
	}
	if _, o := find(f.services, spec.Name, serviceMeta); o != nil {
		return nil, nameInUse("service", spec.Name)
	}
	spec, err := f.resolve(spec)
	if err != nil {
		return nil, err
	}
	svc := &api.Service{Meta: f.meta("svc"), Spec: spec}
	svc = clone(svc)
	f.services = append(f.services, svc)
	f.wrote("CreateService", spec.Name)
	return clone(svc), nil
}

// Service returns a service by ID or name.
func (f *FakeBackend) Service(_ context.Context, idOrName string) (*api.Service, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail("Service", idOrName); err != nil {
		return nil, err
	}
	if _, o := find(f.services, idOrName, serviceMeta); o != nil {
		return clone(o), nil
	}
	return nil, notFound("service", idOrName)
}

// Services lists the services the filter selects.
func (f *FakeBackend) Services(_ context.Context, flt swarm.Filter) ([]*api.Service, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail("Services", ""); err != nil {
		return nil, err
	}
	var out []*api.Service
	for _, s := range f.services {
		if matches(flt, s.ID, s.Spec.Name, s.Spec.Labels) {
			out = append(out, clone(s))
		}
	}
	return out, nil
}

// UpdateService replaces a service's spec if version is its version.
func (f *FakeBackend) UpdateService(_ context.Context, id string, version uint64, spec api.ServiceSpec) (*api.Service, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail("UpdateService", spec.Name); err != nil {
		return nil, err
	}
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if err := encodable(spec); err != nil {
		return nil, err
	}
	i, cur := find(f.services, id, serviceMeta)
	if cur == nil || cur.ID != id {
		return nil, notFound("service", id)
	}
	if cur.Version != version {
		return nil, fmt.Errorf("%w: service %s is at version %d, not %d", raftstore.ErrConflict, cur.Spec.Name, cur.Version, version)
	}
	if cur.Spec.Name != spec.Name {
		return nil, fmt.Errorf("%w: spec.name: a service cannot be renamed", api.ErrInvalidSpec)
	}
	spec, err := f.resolve(spec)
	if err != nil {
		return nil, err
	}
	svc := clone(cur)
	prev := svc.Spec
	svc.PreviousSpec, svc.Spec = &prev, spec
	f.version++
	svc.Version, svc.UpdatedAt = f.version, svc.UpdatedAt.Add(time.Second)
	f.services[i] = clone(svc)
	f.wrote("UpdateService", spec.Name)
	return clone(svc), nil
}

// RemoveService removes a service by ID or name.
func (f *FakeBackend) RemoveService(_ context.Context, idOrName string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail("RemoveService", idOrName); err != nil {
		return err
	}
	i, o := find(f.services, idOrName, serviceMeta)
	if o == nil {
		return notFound("service", idOrName)
	}
	f.services = slices.Delete(f.services, i, i+1)
	f.wrote("RemoveService", o.Spec.Name)
	return nil
}

// Tasks lists the made-up tasks of the services in f.Services (by ID),
// or of all services.
func (f *FakeBackend) Tasks(_ context.Context, flt swarm.Filter) ([]*api.Task, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail("Tasks", ""); err != nil {
		return nil, err
	}
	var out []*api.Task
	for _, s := range f.services {
		if len(flt.Services) > 0 && !slices.Contains(flt.Services, s.ID) {
			continue
		}
		task := func(slot uint64, node string) *api.Task {
			id := fmt.Sprintf("%s.%d%s", s.ID, slot, node)
			return &api.Task{Meta: api.Meta{ID: id, Version: s.Version, CreatedAt: s.UpdatedAt}, ServiceID: s.ID, Slot: slot, NodeID: node,
				Annotations: api.Annotations{Name: fmt.Sprintf("%s.%d", s.Spec.Name, slot)}, Spec: s.Spec.TaskTemplate, SpecVersion: s.Version,
				DesiredState: api.TaskRunning, Status: api.TaskStatus{Timestamp: s.UpdatedAt, State: api.TaskRunning}}
		}
		switch m := s.Spec.Mode; {
		case m.Replicated != nil:
			for slot := range m.Replicated.Replicas {
				out = append(out, task(slot+1, "node-1"))
			}
		case m.ReplicatedJob != nil:
			for slot := range m.ReplicatedJob.TotalCompletions {
				out = append(out, task(slot+1, "node-1"))
			}
		default:
			out = append(out, task(0, "node-1"))
		}
	}
	return out, nil
}

// usedBy names a service that uses the object, or "".
func (f *FakeBackend) usedBy(uses func(*api.TaskSpec) bool) string {
	for _, s := range f.services {
		if uses(&s.Spec.TaskTemplate) {
			return s.Spec.Name
		}
	}
	return ""
}

// CreateNetwork validates the spec and stores a new network.
func (f *FakeBackend) CreateNetwork(_ context.Context, spec api.NetworkSpec) (*api.Network, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail("CreateNetwork", spec.Name); err != nil {
		return nil, err
	}
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if err := encodable(spec); err != nil {
		return nil, err
	}
	if _, o := find(f.networks, spec.Name, networkMeta); o != nil {
		return nil, nameInUse("network", spec.Name)
	}
	n := clone(&api.Network{Meta: f.meta("net"), Spec: spec, VNI: uint32(4096 + f.ids)})
	f.networks = append(f.networks, n)
	f.wrote("CreateNetwork", spec.Name)
	return clone(n), nil
}

// Networks lists the networks the filter selects.
func (f *FakeBackend) Networks(_ context.Context, flt swarm.Filter) ([]*api.Network, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail("Networks", ""); err != nil {
		return nil, err
	}
	var out []*api.Network
	for _, n := range f.networks {
		if matches(flt, n.ID, n.Spec.Name, n.Spec.Labels) {
			out = append(out, clone(n))
		}
	}
	return out, nil
}

// RemoveNetwork removes a network no service uses.
func (f *FakeBackend) RemoveNetwork(_ context.Context, idOrName string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail("RemoveNetwork", idOrName); err != nil {
		return err
	}
	i, o := find(f.networks, idOrName, networkMeta)
	if o == nil {
		return notFound("network", idOrName)
	}
	if by := f.usedBy(func(t *api.TaskSpec) bool {
		return slices.ContainsFunc(t.Networks, func(n api.NetworkTarget) bool { return n.Target == o.ID })
	}); by != "" {
		return fmt.Errorf("network %s is in use by service %s", o.Spec.Name, by)
	}
	f.networks = slices.Delete(f.networks, i, i+1)
	f.wrote("RemoveNetwork", o.Spec.Name)
	return nil
}

// CreateSecret validates the spec and stores a new secret.
func (f *FakeBackend) CreateSecret(_ context.Context, spec api.SecretSpec) (*api.Secret, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail("CreateSecret", spec.Name); err != nil {
		return nil, err
	}
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if err := encodable(spec); err != nil {
		return nil, err
	}
	if _, o := find(f.secrets, spec.Name, secretMeta); o != nil {
		return nil, nameInUse("secret", spec.Name)
	}
	s := clone(&api.Secret{Meta: f.meta("sec"), Spec: spec})
	f.secrets = append(f.secrets, s)
	f.wrote("CreateSecret", spec.Name)
	return s.Redacted(), nil
}

// UpdateSecret changes a secret's labels; a new name or other data is
// refused, as the managers refuse it. An update that changes nothing is
// not counted as a write.
func (f *FakeBackend) UpdateSecret(_ context.Context, id string, version uint64, spec api.SecretSpec) (*api.Secret, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail("UpdateSecret", spec.Name); err != nil {
		return nil, err
	}
	_, o := find(f.secrets, id, secretMeta)
	if o == nil {
		return nil, notFound("secret", id)
	}
	if spec.Name != o.Spec.Name || (len(spec.Data) > 0 && subtle.ConstantTimeCompare(spec.Data, o.Spec.Data) != 1) {
		return nil, fmt.Errorf("%w: only a secret's labels can change; its name and data cannot (make a new secret)", api.ErrInvalidSpec)
	}
	if !maps.Equal(o.Spec.Labels, spec.Labels) {
		o.Spec.Labels = maps.Clone(spec.Labels)
		f.wrote("UpdateSecret", spec.Name)
	}
	return clone(o).Redacted(), nil
}

// Secrets lists the secrets the filter selects, without their data.
func (f *FakeBackend) Secrets(_ context.Context, flt swarm.Filter) ([]*api.Secret, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail("Secrets", ""); err != nil {
		return nil, err
	}
	var out []*api.Secret
	for _, s := range f.secrets {
		if matches(flt, s.ID, s.Spec.Name, s.Spec.Labels) {
			out = append(out, clone(s).Redacted())
		}
	}
	return out, nil
}

// SecretData returns a secret's data, which the API never returns: for
// tests that check what a deploy stored.
func (f *FakeBackend) SecretData(name string) ([]byte, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, o := find(f.secrets, name, secretMeta); o != nil {
		return slices.Clone(o.Spec.Data), true
	}
	return nil, false
}

// RemoveSecret removes a secret no service uses.
func (f *FakeBackend) RemoveSecret(_ context.Context, idOrName string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail("RemoveSecret", idOrName); err != nil {
		return err
	}
	i, o := find(f.secrets, idOrName, secretMeta)
	if o == nil {
		return notFound("secret", idOrName)
	}
	if by := f.usedBy(func(t *api.TaskSpec) bool {
		return slices.ContainsFunc(t.Secrets, func(r api.SecretReference) bool { return r.SecretName == o.Spec.Name || r.SecretID == o.ID })
	}); by != "" {
		return fmt.Errorf("secret %s is in use by service %s", o.Spec.Name, by)
	}
	f.secrets = slices.Delete(f.secrets, i, i+1)
	f.wrote("RemoveSecret", o.Spec.Name)
	return nil
}

// CreateConfig validates the spec and stores a new config.
func (f *FakeBackend) CreateConfig(_ context.Context, spec api.ConfigSpec) (*api.Config, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail("CreateConfig", spec.Name); err != nil {
		return nil, err
	}
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if err := encodable(spec); err != nil {
		return nil, err
	}
	if _, o := find(f.configs, spec.Name, configMeta); o != nil {
		return nil, nameInUse("config", spec.Name)
	}
	c := clone(&api.Config{Meta: f.meta("cfg"), Spec: spec})
	f.configs = append(f.configs, c)
	f.wrote("CreateConfig", spec.Name)
	return clone(c), nil
}

// Configs lists the configs the filter selects.
func (f *FakeBackend) Configs(_ context.Context, flt swarm.Filter) ([]*api.Config, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail("Configs", ""); err != nil {
		return nil, err
	}
	var out []*api.Config
	for _, c := range f.configs {
		if matches(flt, c.ID, c.Spec.Name, c.Spec.Labels) {
			out = append(out, clone(c))
		}
	}
	return out, nil
}

// RemoveConfig removes a config no service uses.
func (f *FakeBackend) RemoveConfig(_ context.Context, idOrName string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail("RemoveConfig", idOrName); err != nil {
		return err
	}
	i, o := find(f.configs, idOrName, configMeta)
	if o == nil {
		return notFound("config", idOrName)
	}
	if by := f.usedBy(func(t *api.TaskSpec) bool {
		return slices.ContainsFunc(t.Configs, func(r api.ConfigReference) bool { return r.ConfigName == o.Spec.Name || r.ConfigID == o.ID })
	}); by != "" {
		return fmt.Errorf("config %s is in use by service %s", o.Spec.Name, by)
	}
	f.configs = slices.Delete(f.configs, i, i+1)
	f.wrote("RemoveConfig", o.Spec.Name)
	return nil
}
