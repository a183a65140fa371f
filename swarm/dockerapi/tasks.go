package dockerapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"

	dswarm "github.com/moby/moby/api/types/swarm"

	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// taskList answers docker service ps and node ps, and the polls of the
// progress display of service create, update, scale and rollback
// (_up-to-date=true: only tasks that run the service's current spec).
// Filters: id, name, label (of the service), service (ID or name), node (ID or name),
// desired-state, _up-to-date, runtime.
func (h *Handler) taskList(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	f, err := parseFilters(r.URL.Query().Get("filters"))
	if err != nil {
		return err
	}
	if err := f.accept("id", "name", "label", "service", "node", "desired-state", "_up-to-date", "runtime"); err != nil {
		return err
	}
	sf := swarm.Filter{IDs: f["id"]}
	for _, ref := range f["service"] {
		s, err := h.findService(ctx, ref)
		if err != nil {
			return err
		}
		sf.Services = append(sf.Services, s.ID)
	}
	if len(f["label"]) > 0 {
		// dockerd matches a task's labels filter on its service's labels
		// (docker stack ps asks for com.docker.stack.namespace=NAME).
		labelled, err := h.Backend.Services(ctx, swarm.Filter{Labels: f["label"]})
		if err != nil {
			return err
		}
		var ids []string
		for _, s := range labelled {
			if len(sf.Services) == 0 || slices.Contains(sf.Services, s.ID) {
				ids = append(ids, s.ID)
			}
		}
		if len(ids) == 0 {
			return writeJSON(w, http.StatusOK, []dswarm.Task{})
		}
		sf.Services = ids
	}
	for _, ref := range f["node"] {
		n, err := h.findNode(ctx, ref)
		if err != nil {
			return err
		}
		sf.Nodes = append(sf.Nodes, n.ID)
	}
	for _, ds := range f["desired-state"] {
		var st api.TaskState
		if err := st.UnmarshalText([]byte(ds)); err != nil {
			return badRequest("invalid task desired state: %s (running, shutdown, accepted, ...)", ds)
		}
		sf.DesiredStates = append(sf.DesiredStates, st.String())
	}
	upToDate := false
	for _, v := range f["_up-to-date"] {
		upToDate = upToDate || v == "true" || v == "1"
	}
	for _, rt := range f["runtime"] {
		if rt != string(dswarm.RuntimeContainer) {
			return writeJSON(w, http.StatusOK, []dswarm.Task{}) // only containers run here
		}
	}
	tasks, err := h.Backend.Tasks(ctx, sf)
	if err != nil {
		return err
	}
	services, err := h.servicesByID(ctx, sf.Services)
	if err != nil {
		return err
	}
	out := []dswarm.Task{}
	for _, t := range tasks {
		s := services[t.ServiceID]
		if len(f["name"]) > 0 && !anyPrefix(t.Annotations.Name, f["name"]) && (s == nil || !anyPrefix(displayName(t, s), f["name"])) {
			continue
		}
		if upToDate && (s == nil || !sameSpec(t, s)) {
			continue
		}
		out = append(out, TaskToDocker(t, s != nil && s.Spec.Mode.IsJob()))
	}
	return writeJSON(w, http.StatusOK, out)
}

// servicesByID reads the services named (all when none).
func (h *Handler) servicesByID(ctx context.Context, ids []string) (map[string]*api.Service, error) {
	out := map[string]*api.Service{}
	if len(ids) > 0 && len(ids) <= 8 {
		for _, id := range ids {
			s, err := h.Backend.Service(ctx, id)
			if err != nil && !errors.Is(err, swarm.ErrNotFound) {
				return nil, err
			}
			if err == nil {
				out[s.ID] = s
			}
		}
		return out, nil
	}
	all, err := h.Backend.Services(ctx, swarm.Filter{})
	if err != nil {
		return nil, err
	}
	for _, s := range all {
		out[s.ID] = s
	}
	return out, nil
}

// displayName is the name docker service ps shows: SERVICE.SLOT, or
// SERVICE.NODE for a global service's task.
func displayName(t *api.Task, s *api.Service) string {
	if t.Slot != 0 {
		return fmt.Sprintf("%s.%d", s.Spec.Name, t.Slot)
	}
	return s.Spec.Name + "." + t.NodeID
}

// sameSpec reports whether a task runs the spec its service asks for now
// (as Shoal's updater decides).
func sameSpec(t *api.Task, s *api.Service) bool {
	if t.SpecVersion == s.Version {
		return true
	}
	a, err1 := json.Marshal(t.Spec)
	b, err2 := json.Marshal(s.Spec.TaskTemplate)
	return err1 == nil && err2 == nil && bytes.Equal(a, b)
}

// findTask resolves a task by ID or unique ID prefix.
func (h *Handler) findTask(ctx context.Context, ref string) (*api.Task, error) {
	if ref == "" {
		return nil, badRequest("a task ID is required")
	}
	t, err := h.Backend.Task(ctx, ref)
	if err == nil {
		return t, nil
	}
	if !errors.Is(err, swarm.ErrNotFound) {
		return nil, err
	}
	found, err := h.Backend.Tasks(ctx, swarm.Filter{IDs: []string{ref}})
	if err != nil {
		return nil, err
	}
	switch len(found) {
	case 0:
		return nil, notFound("task %s not found", ref)
	case 1:
		return found[0], nil
	}
	return nil, badRequest("task %s is ambiguous (%d tasks have IDs that start so): use more of the ID", ref, len(found))
}

func (h *Handler) taskInspect(w http.ResponseWriter, r *http.Request) error {
	t, err := h.findTask(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	job := false
	if s, err := h.Backend.Service(r.Context(), t.ServiceID); err == nil {
		job = s.Spec.Mode.IsJob()
	}
	return writeJSON(w, http.StatusOK, TaskToDocker(t, job))
}
