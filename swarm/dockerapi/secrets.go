package dockerapi

import (
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

func (h *Handler) secretList(w http.ResponseWriter, r *http.Request) error {
	sf, err := dataFilters(r)
	if err != nil {
		return err
	}
	all, err := h.Backend.Secrets(r.Context(), sf)
	if err != nil {
		return err
	}
	out := []dswarm.Secret{}
	for _, s := range all {
		out = append(out, SecretToDocker(s))
	}
	return writeJSON(w, http.StatusOK, out)
}

func (h *Handler) secretCreate(w http.ResponseWriter, r *http.Request) error {
	var d dswarm.SecretSpec
	if err := readJSON(r, &d); err != nil {
		return err
	}
	spec, err := SecretSpecFromDocker(d)
	if err != nil {
		return err
	}
	s, err := h.Backend.CreateSecret(r.Context(), spec)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, dswarm.SecretCreateResponse{ID: s.ID})
}

func (h *Handler) secretInspect(w http.ResponseWriter, r *http.Request) error {
	ref := r.PathValue("id")
	s, err := h.Backend.Secret(r.Context(), ref)
	if err != nil {
		return notFoundAs(err, "secret", ref)
	}
	return writeJSON(w, http.StatusOK, SecretToDocker(s))
}

// secretUpdate changes a secret's labels; the spec sent back may hold the
// data it has (docker stack deploy sends it), not other data.
func (h *Handler) secretUpdate(w http.ResponseWriter, r *http.Request) error {
	version, err := queryVersion(r, "secret")
	if err != nil {
		return err
	}
	var d dswarm.SecretSpec
	if err := readJSON(r, &d); err != nil {
		return err
	}
	spec, err := SecretSpecFromDocker(d)
	if err != nil {
		return err
	}
	ref := r.PathValue("id")
	if _, err := h.Backend.UpdateSecret(r.Context(), ref, version, spec); err != nil {
		return notFoundAs(err, "secret", ref)
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

func (h *Handler) secretRemove(w http.ResponseWriter, r *http.Request) error {
	ref := r.PathValue("id")
	if err := h.Backend.RemoveSecret(r.Context(), ref); err != nil {
		return notFoundAs(err, "secret", ref)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (h *Handler) configList(w http.ResponseWriter, r *http.Request) error {
	sf, err := dataFilters(r)
	if err != nil {
		return err
	}
	all, err := h.Backend.Configs(r.Context(), sf)
	if err != nil {
		return err
	}
	out := []dswarm.Config{}
	for _, c := range all {
		out = append(out, ConfigToDocker(c))
	}
	return writeJSON(w, http.StatusOK, out)
}

func (h *Handler) configCreate(w http.ResponseWriter, r *http.Request) error {
	var d dswarm.ConfigSpec
	if err := readJSON(r, &d); err != nil {
		return err
	}
	spec, err := ConfigSpecFromDocker(d)
	if err != nil {
		return err
	}
	c, err := h.Backend.CreateConfig(r.Context(), spec)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, dswarm.ConfigCreateResponse{ID: c.ID})
}

func (h *Handler) configInspect(w http.ResponseWriter, r *http.Request) error {
	ref := r.PathValue("id")
	c, err := h.Backend.Config(r.Context(), ref)
	if err != nil {
		return notFoundAs(err, "config", ref)
	}
	return writeJSON(w, http.StatusOK, ConfigToDocker(c))
}

func (h *Handler) configUpdate(w http.ResponseWriter, r *http.Request) error {
	version, err := queryVersion(r, "config")
	if err != nil {
		return err
	}
	var d dswarm.ConfigSpec
	if err := readJSON(r, &d); err != nil {
		return err
	}
	spec, err := ConfigSpecFromDocker(d)
	if err != nil {
		return err
	}
	ref := r.PathValue("id")
	if _, err := h.Backend.UpdateConfig(r.Context(), ref, version, spec); err != nil {
		return notFoundAs(err, "config", ref)
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

func (h *Handler) configRemove(w http.ResponseWriter, r *http.Request) error {
	ref := r.PathValue("id")
	if err := h.Backend.RemoveConfig(r.Context(), ref); err != nil {
		return notFoundAs(err, "config", ref)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// notFoundAs gives a missing object dockerd's message ("secret x not
// found"); other errors pass.
func notFoundAs(err error, kind, ref string) error {
	if errors.Is(err, swarm.ErrNotFound) {
		return notFound("%s %s not found", kind, ref)
	}
	return err
}
