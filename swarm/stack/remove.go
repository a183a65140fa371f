package stack

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// RemoveRetries bounds the attempts to remove an object that the cluster
// refuses at first: a network, secret or config still in use while the
// stack's services go, a service the cluster wrote meanwhile (a version
// conflict) or a manager that cannot answer now.
const RemoveRetries = 10

// stackFilter selects the objects labelled with the stack's namespace.
func stackFilter(name string) swarm.Filter {
	return swarm.Filter{Labels: []string{LabelNamespace + "=" + name}}
}

// Remove removes the stack, as `docker stack rm` does: its services
// first, then its secrets, configs and networks. It removes exactly the
// objects labelled com.docker.stack.namespace=NAME, nothing else (not the
// external objects the stack used). A network, secret or config that the
// cluster refuses to remove (still in use while the services' tasks shut
// down) is tried again a few times. Errors are collected: it removes what
// it can and returns what it did. A stack of which nothing is found gives
// ErrNotFound.
func Remove(ctx context.Context, b Backend, name string) ([]Action, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	f := stackFilter(name)
	services, err := b.Services(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("stack: listing services of %s: %w", name, err)
	}
	nets, err := b.Networks(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("stack: listing networks of %s: %w", name, err)
	}
	secrets, err := b.Secrets(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("stack: listing secrets of %s: %w", name, err)
	}
	configs, err := b.Configs(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("stack: listing configs of %s: %w", name, err)
	}

	type object struct{ kind, name, id string }
	var objs []object
	collect := func(kind string, n int, at func(int) (string, string, map[string]string)) {
		var batch []object
		for i := range n {
			id, oname, labels := at(i)
			if ours(labels, name) { // the backend's filter, checked again
				batch = append(batch, object{kind, oname, id})
			}
		}
		slices.SortFunc(batch, func(a, b object) int { return cmp.Compare(a.name, b.name) })
		objs = append(objs, batch...)
	}
	collect("service", len(services), func(i int) (string, string, map[string]string) {
		return services[i].ID, services[i].Spec.Name, services[i].Spec.Labels
	})
	collect("secret", len(secrets), func(i int) (string, string, map[string]string) {
		return secrets[i].ID, secrets[i].Spec.Name, secrets[i].Spec.Labels
	})
	collect("config", len(configs), func(i int) (string, string, map[string]string) {
		return configs[i].ID, configs[i].Spec.Name, configs[i].Spec.Labels
	})
	collect("network", len(nets), func(i int) (string, string, map[string]string) {
		return nets[i].ID, nets[i].Spec.Name, nets[i].Spec.Labels
	})
	if len(objs) == 0 {
		return nil, fmt.Errorf("%w: nothing found in stack %s", ErrNotFound, name)
	}

	var actions []Action
	var errs []error
	servicesLeft := false
	for _, o := range objs {
		var rm func(context.Context, string) error
		switch o.kind {
		case "service":
			rm = b.RemoveService
		case "secret":
			rm = b.RemoveSecret
		case "config":
			rm = b.RemoveConfig
		default:
			rm = b.RemoveNetwork
		}
		// A service's removal is retried when the cluster wrote the
		// service meanwhile; the others, while services may still use
		// them (but not when a service of the stack is left).
		retry := func(err error) bool { return errors.Is(err, raftstore.ErrConflict) || swarm.Retryable(err) }
		if o.kind != "service" {
			retry = func(error) bool { return !servicesLeft }
		}
		if err := removeOne(ctx, rm, o.id, retry); err != nil {
			errs = append(errs, fmt.Errorf("stack: removing %s %s: %w", o.kind, o.name, err))
			servicesLeft = servicesLeft || o.kind == "service"
			if ctx.Err() != nil {
				break
			}
			continue
		}
		actions = append(actions, Action{Op: OpRemove, Kind: o.kind, Name: o.name, ID: o.id})
	}
	return actions, errors.Join(errs...)
}

// removeOne removes an object, trying again (RemoveRetries times at most)
// while retry says so; one already gone counts as removed.
func removeOne(ctx context.Context, rm func(context.Context, string) error, id string, retry func(error) bool) error {
	delay := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := rm(ctx, id)
		if err == nil || errors.Is(err, swarm.ErrNotFound) {
			return nil
		}
		if !retry(err) || attempt >= RemoveRetries || ctx.Err() != nil {
			return err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		delay = min(2*delay, time.Second)
	}
}

// Summary is one stack, as `docker stack ls` lists it.
type Summary struct {
	Name     string `json:"name"`
	Services int    `json:"services"`
}

// List returns the stacks that have services, sorted by name.
func List(ctx context.Context, b ServiceBackend) ([]Summary, error) {
	svcs, err := b.Services(ctx, swarm.Filter{Labels: []string{LabelNamespace}})
	if err != nil {
		return nil, fmt.Errorf("stack: listing services: %w", err)
	}
	counts := map[string]int{}
	for _, s := range svcs {
		if ns, ok := s.Spec.Labels[LabelNamespace]; ok && ns != "" {
			counts[ns]++
		}
	}
	out := make([]Summary, 0, len(counts))
	for _, name := range sortedKeys(counts) {
		out = append(out, Summary{Name: name, Services: counts[name]})
	}
	return out, nil
}

// Services returns the stack's services, sorted by name (docker stack
// services); ErrNotFound if it has none.
func Services(ctx context.Context, b ServiceBackend, name string) ([]*api.Service, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	svcs, err := b.Services(ctx, stackFilter(name))
	if err != nil {
		return nil, fmt.Errorf("stack: listing services of %s: %w", name, err)
	}
	out := slices.DeleteFunc(slices.Clone(svcs), func(s *api.Service) bool { return s == nil || !ours(s.Spec.Labels, name) })
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: nothing found in stack %s", ErrNotFound, name)
	}
	slices.SortFunc(out, func(a, b *api.Service) int { return cmp.Compare(a.Spec.Name, b.Spec.Name) })
	return out, nil
}

// Tasks returns the tasks of the stack's services with their history
// (docker stack ps), sorted by service, slot (or node) and newest first;
// ErrNotFound if the stack has no services.
func Tasks(ctx context.Context, b ServiceBackend, name string) ([]*api.Task, error) {
	svcs, err := Services(ctx, b, name)
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(svcs))
	names := make(map[string]string, len(svcs))
	for i, s := range svcs {
		ids[i] = s.ID
		names[s.ID] = s.Spec.Name
	}
	tasks, err := b.Tasks(ctx, swarm.Filter{Services: ids})
	if err != nil {
		return nil, fmt.Errorf("stack: listing tasks of %s: %w", name, err)
	}
	out := slices.DeleteFunc(slices.Clone(tasks), func(t *api.Task) bool {
		if t == nil {
			return true
		}
		_, ok := names[t.ServiceID]
		return !ok
	})
	slices.SortFunc(out, func(a, b *api.Task) int {
		return cmp.Or(cmp.Compare(names[a.ServiceID], names[b.ServiceID]), cmp.Compare(a.Slot, b.Slot),
			cmp.Compare(a.NodeID, b.NodeID), b.CreatedAt.Compare(a.CreatedAt))
	})
	return out, nil
}
