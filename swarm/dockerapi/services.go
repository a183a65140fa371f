package dockerapi

import (
	"context"
	"errors"
	"net/http"
	"slices"

	dswarm "github.com/moby/moby/api/types/swarm"

	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// findService resolves a service by ID, name or unique ID prefix, as
// dockerd does.
func (h *Handler) findService(ctx context.Context, ref string) (*api.Service, error) {
	if ref == "" {
		return nil, badRequest("a service ID or name is required")
	}
	s, err := h.Backend.Service(ctx, ref)
	if err == nil {
		return s, nil
	}
	if !errors.Is(err, swarm.ErrNotFound) {
		return nil, err
	}
	found, err := h.Backend.Services(ctx, swarm.Filter{IDs: []string{ref}})
	if err != nil {
		return nil, err
	}
	switch len(found) {
	case 0:
		return nil, notFound("service %s not found", ref)
	case 1:
		return found[0], nil
	}
	return nil, badRequest("service %s is ambiguous (%d services have IDs that start so): use more of the ID", ref, len(found))
}

// serviceList answers docker service ls, with the filters id and name
// (prefixes), label and mode; status=true adds ServiceStatus (running and
// desired tasks), which the CLI's REPLICAS column needs.
func (h *Handler) serviceList(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	f, err := parseFilters(r.URL.Query().Get("filters"))
	if err != nil {
		return err
	}
	if err := f.accept("id", "name", "label", "mode"); err != nil {
		return err
	}
	for _, m := range f["mode"] {
		switch m {
		case "replicated", "global", "replicated-job", "global-job":
		default:
			return badRequest("invalid filter 'mode=%s' (replicated, global, replicated-job or global-job)", m)
		}
	}
	status, err := queryBool(r, "status")
	if err != nil {
		return err
	}
	status = status && !versionLess(apiVersion(ctx), "1.41")
	services, err := h.Backend.Services(ctx, swarm.Filter{IDs: f["id"], Names: f["name"], Labels: f["label"]})
	if err != nil {
		return err
	}
	var st map[string]*dswarm.ServiceStatus
	if status {
		if st, err = h.serviceStatus(ctx, services); err != nil {
			return err
		}
	}
	out := []dswarm.Service{}
	for _, s := range services {
		if len(f["mode"]) > 0 && !slices.Contains(f["mode"], modeName(s.Spec.Mode)) {
			continue
		}
		ds := ServiceToDocker(s)
		ds.ServiceStatus = st[s.ID]
		out = append(out, ds)
	}
	return writeJSON(w, http.StatusOK, out)
}

func modeName(m api.ServiceMode) string {
	switch {
	case m.Global != nil:
		return "global"
	case m.ReplicatedJob != nil:
		return "replicated-job"
	case m.GlobalJob != nil:
		return "global-job"
	}
	return "replicated"
}

// serviceStatus counts, per service, the running tasks (on nodes that are
// not down), the tasks desired and the completed ones (jobs).
func (h *Handler) serviceStatus(ctx context.Context, services []*api.Service) (map[string]*dswarm.ServiceStatus, error) {
	out := make(map[string]*dswarm.ServiceStatus, len(services))
	if len(services) == 0 {
		return out, nil
	}
	tasks, err := h.Backend.Tasks(ctx, swarm.Filter{})
	if err != nil {
		return nil, err
	}
	nodes, err := h.Backend.Nodes(ctx, swarm.Filter{})
	if err != nil {
		return nil, err
	}
	down := map[string]bool{}
	for _, n := range nodes {
		down[n.ID] = n.Status.State == api.NodeDown
	}
	byID := make(map[string]*api.Service, len(services))
	for _, s := range services {
		byID[s.ID] = s
		out[s.ID] = &dswarm.ServiceStatus{}
	}
	desiredGlobal := map[string]uint64{}
	for _, t := range tasks {
		s := byID[t.ServiceID]
		if s == nil {
			continue
		}
		st := out[s.ID]
		if s.Spec.Mode.IsJob() && s.JobStatus != nil && t.JobIteration != s.JobStatus.JobIteration {
			continue // an earlier run of the job
		}
		if t.Status.State == api.TaskRunning && t.DesiredState <= api.TaskComplete && !down[t.NodeID] {
			st.RunningTasks++
		}
		if t.Status.State == api.TaskComplete {
			st.CompletedTasks++
		}
		switch {
		case s.Spec.Mode.Global != nil && t.DesiredState <= api.TaskRunning,
			s.Spec.Mode.GlobalJob != nil && t.DesiredState <= api.TaskComplete:
			desiredGlobal[s.ID]++
		}
	}
	for _, s := range services {
		st := out[s.ID]
		m := s.Spec.Mode
		switch {
		case m.Replicated != nil:
			st.DesiredTasks = m.Replicated.Replicas
		case m.ReplicatedJob != nil:
			left := uint64(0)
			if m.ReplicatedJob.TotalCompletions > st.CompletedTasks {
				left = m.ReplicatedJob.TotalCompletions - st.CompletedTasks
			}
			st.DesiredTasks = min(m.ReplicatedJob.MaxConcurrent, left)
		default:
			st.DesiredTasks = desiredGlobal[s.ID]
		}
	}
	return out, nil
}

// serviceInspect answers docker service inspect. insertDefaults is
// accepted and the spec shown as stored: Shoal fills its defaults where it
// uses them (an empty update config means Shoal's defaults).
func (h *Handler) serviceInspect(w http.ResponseWriter, r *http.Request) error {
	if _, err := queryBool(r, "insertDefaults"); err != nil {
		return err
	}
	s, err := h.findService(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, ServiceToDocker(s))
}

// registryAuthWarning: nodes pull with their own credentials.
const registryAuthWarning = "Shoal does not send registry credentials to its nodes yet (--with-registry-auth): each node pulls the image with its own"

// serviceCreate answers docker service create: Docker's spec converted
// (unsupported fields refused, by name), validated by the managers.
func (h *Handler) serviceCreate(w http.ResponseWriter, r *http.Request) error {
	var d dswarm.ServiceSpec
	if err := readJSON(r, &d); err != nil {
		return err
	}
	spec, err := ServiceSpecFromDocker(d)
	if err != nil {
		return err
	}
	s, err := h.Backend.CreateService(r.Context(), spec)
	if err != nil {
		return err
	}
	warnings := []string{}
	if r.Header.Get("X-Registry-Auth") != "" {
		warnings = append(warnings, registryAuthWarning)
	}
	return writeJSON(w, http.StatusCreated, dswarm.ServiceCreateResponse{ID: s.ID, Warnings: warnings})
}

// serviceUpdate answers docker service update, scale and rollback
// (rollback=previous goes back to the previous spec, as dockerd does).
func (h *Handler) serviceUpdate(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	version, err := queryVersion(r, "service")
	if err != nil {
		return err
	}
	var d dswarm.ServiceSpec
	if err := readJSON(r, &d); err != nil {
		return err
	}
	cur, err := h.findService(ctx, r.PathValue("id"))
	if err != nil {
		return err
	}
	warnings := []string{}
	if r.Header.Get("X-Registry-Auth") != "" {
		warnings = append(warnings, registryAuthWarning)
	}
	switch rb := r.URL.Query().Get("rollback"); rb {
	case "":
	case "previous":
		if _, err := h.Backend.RollbackService(ctx, cur.ID); err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, dswarm.ServiceUpdateResponse{Warnings: warnings})
	default:
		return badRequest("invalid value for rollback: %q (previous)", rb)
	}
	next, err := ServiceSpecFromDocker(d)
	if err != nil {
		return err
	}
	next = keepUnchanged(cur.Spec, d, next)
	if _, err := h.Backend.UpdateService(ctx, cur.ID, version, next); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, dswarm.ServiceUpdateResponse{Warnings: warnings})
}

// keepUnchanged keeps the parts of the current spec that the Docker spec
// d sends back as they were shown, exactly as they are (so that a scale
// does not start a rolling update over another spelling of the same
// template), and the Shoal fields Docker cannot show in a part it
// changed. next is d converted.
func keepUnchanged(cur api.ServiceSpec, d dswarm.ServiceSpec, next api.ServiceSpec) api.ServiceSpec {
	c, n := ServiceSpecToDocker(cur), ServiceSpecToDocker(next)
	same := func(sent, conv, shown any) bool { return sameJSON(sent, shown) || sameJSON(conv, shown) }
	if same(d.Annotations, n.Annotations, c.Annotations) {
		next.Annotations = cur.Annotations
	}
	if same(d.Mode, n.Mode, c.Mode) {
		next.Mode = cur.Mode
	}
	if same(d.UpdateConfig, n.UpdateConfig, c.UpdateConfig) {
		next.UpdateConfig = cur.UpdateConfig
	}
	if same(d.RollbackConfig, n.RollbackConfig, c.RollbackConfig) {
		next.RollbackConfig = cur.RollbackConfig
	}
	if same(d.EndpointSpec, n.EndpointSpec, c.EndpointSpec) {
		next.EndpointSpec = cur.EndpointSpec
	}
	if same(d.TaskTemplate, n.TaskTemplate, c.TaskTemplate) {
		next.TaskTemplate = cur.TaskTemplate
		return next
	}
	// Generic resources in limits and a process limit in reservations
	// have no place in Docker's spec: they stay.
	if cr, nr := cur.TaskTemplate.Resources, next.TaskTemplate.Resources; cr != nil && nr != nil {
		if cr.Limits != nil && nr.Limits != nil && len(nr.Limits.Generic) == 0 {
			l := *nr.Limits
			l.Generic = cr.Limits.Generic
			nr.Limits = &l
		}
		if cr.Reservations != nil && nr.Reservations != nil && nr.Reservations.Pids == 0 {
			res := *nr.Reservations
			res.Pids = cr.Reservations.Pids
			nr.Reservations = &res
		}
	}
	return next
}

func (h *Handler) serviceRemove(w http.ResponseWriter, r *http.Request) error {
	s, err := h.findService(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	if err := h.Backend.RemoveService(r.Context(), s.ID); err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}
