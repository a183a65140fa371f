package swarm

import (
	"net/url"
	"strings"

	"github.com/shoalproject/shoal/swarm/api"
)

// Filter selects objects in a list, as `docker ... ls --filter` does. All
// set fields must match; within one field, any value may, except Labels.
type Filter struct {
	// IDs and Names match by prefix.
	IDs, Names []string
	// Labels must all match, each a key ("zone") or a key and value
	// ("zone=east"), as Docker's label filters do.
	Labels []string
	// Services, Nodes and DesiredStates apply to tasks (services by ID or
	// name, nodes by ID).
	Services, Nodes, DesiredStates []string
	// Roles apply to nodes (manager, worker).
	Roles []string
}

// Query encodes the filter for the API's list calls.
func (f Filter) Query() url.Values {
	q := url.Values{}
	for k, vs := range map[string][]string{"id": f.IDs, "name": f.Names, "label": f.Labels,
		"service": f.Services, "node": f.Nodes, "desired-state": f.DesiredStates, "role": f.Roles} {
		for _, v := range vs {
			q.Add(k, v)
		}
	}
	return q
}

func filterFromQuery(q url.Values) Filter {
	return Filter{IDs: q["id"], Names: q["name"], Labels: q["label"], Services: q["service"], Nodes: q["node"], DesiredStates: q["desired-state"], Roles: q["role"]}
}

func anyPrefix(s string, prefixes []string) bool {
	if len(prefixes) == 0 {
		return true
	}
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

func anyEqual(s string, values []string) bool {
	if len(values) == 0 {
		return true
	}
	for _, v := range values {
		if s == v {
			return true
		}
	}
	return false
}

func labelsMatch(labels map[string]string, want []string) bool {
	for _, w := range want {
		k, v, hasValue := strings.Cut(w, "=")
		got, ok := labels[k]
		if !ok || (hasValue && got != v) {
			return false
		}
	}
	return true
}

func (f Filter) matchMeta(id, name string, labels map[string]string) bool {
	return anyPrefix(id, f.IDs) && anyPrefix(name, f.Names) && labelsMatch(labels, f.Labels)
}

// matchTask: services are matched by ID (callers resolve names first).
func (f Filter) matchTask(t *api.Task) bool {
	return f.matchMeta(t.ID, t.Annotations.Name, t.Spec.Labels) && anyEqual(t.ServiceID, f.Services) &&
		anyEqual(t.NodeID, f.Nodes) && anyEqual(t.DesiredState.String(), f.DesiredStates)
}
