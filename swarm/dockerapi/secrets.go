package dockerapi

import (
	"context"
	"errors"
	"net/http"

	dswarm "github.com/moby/moby/api/types/swarm"

	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// Secrets and configs through the Docker API. Shoal keeps their data in
// its Raft store (sealed at rest) and gives it only to the nodes that run
// a task using it; a secret's data never comes back through the API. Only
// labels change after creation, as in Docker. External secret drivers
// and templating are refused by name.

// SecretSpecFromDocker converts a Docker secret spec to Shoal's; a driver
// or a template driver fails it with an *UnsupportedFieldsError.
func SecretSpecFromDocker(d dswarm.SecretSpec) (api.SecretSpec, error) {
	var u unsupported
	if d.Driver != nil && (d.Driver.Name != "" || len(d.Driver.Options) > 0) {
		u.add("Driver", "--driver: Shoal stores secrets itself")
	}
	if d.Templating != nil && (d.Templating.Name != "" || len(d.Templating.Options) > 0) {
		u.add("Templating", "--template-driver: Shoal gives the data as it is")
	}
	if err := u.err(); err != nil {
		return api.SecretSpec{}, err
	}
	return api.SecretSpec{Annotations: api.Annotations{Name: d.Name, Labels: cloneMap(d.Labels)}, Data: d.Data}, nil
}

// SecretToDocker shows a secret as dockerd does: never its data.
func SecretToDocker(s *api.Secret) dswarm.Secret {
	return dswarm.Secret{ID: s.ID, Meta: metaToDocker(s.Meta), Spec: dswarm.SecretSpec{Annotations: annotationsToDocker(s.Spec.Annotations)}}
}

// ConfigSpecFromDocker converts a Docker config spec to Shoal's; a
// template driver fails it with an *UnsupportedFieldsError.
func ConfigSpecFromDocker(d dswarm.ConfigSpec) (api.ConfigSpec, error) {
	var u unsupported
	if d.Templating != nil && (d.Templating.Name != "" || len(d.Templating.Options) > 0) {
		u.add("Templating", "--template-driver: Shoal gives the data as it is")
	}
	if err := u.err(); err != nil {
		return api.ConfigSpec{}, err
	}
	return api.ConfigSpec{Annotations: api.Annotations{Name: d.Name, Labels: cloneMap(d.Labels)}, Data: d.Data}, nil
}

// ConfigToDocker shows a config as dockerd does, with its data.
func ConfigToDocker(c *api.Config) dswarm.Config {
	return dswarm.Config{ID: c.ID, Meta: metaToDocker(c.Meta),
		Spec: dswarm.ConfigSpec{Annotations: annotationsToDocker(c.Spec.Annotations), Data: c.Spec.Data}}
}

// dataFilters are the list filters of secrets and configs: id (prefix),
// name and names (prefixes of the name), label.
func dataFilters(r *http.Request) (swarm.Filter, error) {
	f, err := parseFilters(r.URL.Query().Get("filters"))
	if err != nil {
		return swarm.Filter{}, err
	}
	if err := f.accept("id", "name", "names", "label"); err != nil {
		return swarm.Filter{}, err
	}
	return swarm.Filter{IDs: f["id"], Names: append(f["name"], f["names"]...), Labels: f["label"]}, nil
}

// dataRoutes serves one kind of data object (secrets or configs) through
// the Docker API: the two kinds differ only in their types, their
// conversions and the Backend calls, so one set of handlers serves both.
// D is the Docker spec, S Shoal's spec, O Shoal's object.
type dataRoutes[D, S, O any] struct {
	kind     string // "secret" or "config": the path and the not-found message
	fromSpec func(D) (S, error)
	show     func(*O) any
	created  func(*O) any
	list     func(Backend, context.Context, swarm.Filter) ([]*O, error)
	create   func(Backend, context.Context, S) (*O, error)
	get      func(Backend, context.Context, string) (*O, error)
	update   func(Backend, context.Context, string, uint64, S) (*O, error)
	remove   func(Backend, context.Context, string) error
}

var secretRoutes = dataRoutes[dswarm.SecretSpec, api.SecretSpec, api.Secret]{
	kind:     "secret",
	fromSpec: SecretSpecFromDocker,
	show:     func(s *api.Secret) any { return SecretToDocker(s) },
	created:  func(s *api.Secret) any { return dswarm.SecretCreateResponse{ID: s.ID} },
	list:     Backend.Secrets,
	create:   Backend.CreateSecret,
	get:      Backend.Secret,
	update:   Backend.UpdateSecret,
	remove:   Backend.RemoveSecret,
}

var configRoutes = dataRoutes[dswarm.ConfigSpec, api.ConfigSpec, api.Config]{
	kind:     "config",
	fromSpec: ConfigSpecFromDocker,
	show:     func(c *api.Config) any { return ConfigToDocker(c) },
	created:  func(c *api.Config) any { return dswarm.ConfigCreateResponse{ID: c.ID} },
	list:     Backend.Configs,
	create:   Backend.CreateConfig,
	get:      Backend.Config,
	update:   Backend.UpdateConfig,
	remove:   Backend.RemoveConfig,
}

// register adds the kind's five routes (/secrets or /configs).
func (d dataRoutes[D, S, O]) register(h *Handler) {
	base := "/" + d.kind + "s"
	h.handle("GET "+base, h.manager(func(w http.ResponseWriter, r *http.Request) error {
		f, err := dataFilters(r)
		if err != nil {
			return err
		}
		all, err := d.list(h.Backend, r.Context(), f)
		if err != nil {
			return err
		}
		out := make([]any, 0, len(all))
		for _, o := range all {
			out = append(out, d.show(o))
		}
		return writeJSON(w, http.StatusOK, out)
	}))
	h.handle("POST "+base+"/create", h.manager(func(w http.ResponseWriter, r *http.Request) error {
		spec, err := d.readSpec(r)
		if err != nil {
			return err
		}
		o, err := d.create(h.Backend, r.Context(), spec)
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusCreated, d.created(o))
	}))
	h.handle("GET "+base+"/{id}", h.manager(func(w http.ResponseWriter, r *http.Request) error {
		ref := r.PathValue("id")
		o, err := d.get(h.Backend, r.Context(), ref)
		if err != nil {
			return notFoundAs(err, d.kind, ref)
		}
		return writeJSON(w, http.StatusOK, d.show(o))
	}))
	// An update changes labels only; the spec sent back may hold the data
	// the object has (docker stack deploy sends it), not other data.
	h.handle("POST "+base+"/{id}/update", h.manager(func(w http.ResponseWriter, r *http.Request) error {
		version, err := queryVersion(r, d.kind)
		if err != nil {
			return err
		}
		spec, err := d.readSpec(r)
		if err != nil {
			return err
		}
		ref := r.PathValue("id")
		if _, err := d.update(h.Backend, r.Context(), ref, version, spec); err != nil {
			return notFoundAs(err, d.kind, ref)
		}
		w.WriteHeader(http.StatusOK)
		return nil
	}))
	h.handle("DELETE "+base+"/{id}", h.manager(func(w http.ResponseWriter, r *http.Request) error {
		ref := r.PathValue("id")
		if err := d.remove(h.Backend, r.Context(), ref); err != nil {
			return notFoundAs(err, d.kind, ref)
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}))
}

// readSpec reads a Docker spec from the body and converts it.
func (d dataRoutes[D, S, O]) readSpec(r *http.Request) (S, error) {
	var in D
	if err := readJSON(r, &in); err != nil {
		var zero S
		return zero, err
	}
	return d.fromSpec(in)
}

// notFoundAs gives a missing object dockerd's message ("secret x not
// found"); other errors pass.
func notFoundAs(err error, kind, ref string) error {
	if errors.Is(err, swarm.ErrNotFound) {
		return notFound("%s %s not found", kind, ref)
	}
	return err
}
