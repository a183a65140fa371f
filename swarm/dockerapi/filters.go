package dockerapi

import (
	"encoding/json"
	"slices"
	"sort"
	"strings"
)

// filters are Docker's list filters: ?filters={"name":{"web":true}} (or
// the older {"name":["web"]}), key to values.
type filters map[string][]string

// maxFilterValues bounds what a filter may hold.
const maxFilterValues = 1024

func parseFilters(raw string) (filters, error) {
	if raw == "" {
		return filters{}, nil
	}
	var m map[string]map[string]bool
	if err := json.Unmarshal([]byte(raw), &m); err == nil {
		out := filters{}
		for k, vs := range m {
			for v, on := range vs {
				if on {
					out[k] = append(out[k], v)
				}
			}
			sort.Strings(out[k])
		}
		return out, out.bounded()
	}
	var old map[string][]string
	if err := json.Unmarshal([]byte(raw), &old); err != nil {
		return nil, badRequest(`invalid filters %.100q: want JSON such as {"name":{"web":true}}`, raw)
	}
	return filters(old), filters(old).bounded()
}

func (f filters) bounded() error {
	n := 0
	for _, vs := range f {
		n += len(vs)
	}
	if n > maxFilterValues {
		return badRequest("too many filter values (%d; at most %d)", n, maxFilterValues)
	}
	return nil
}

// accept refuses keys other than these, as dockerd does.
func (f filters) accept(keys ...string) error {
	for k := range f {
		if !slices.Contains(keys, k) {
			sort.Strings(keys)
			return badRequest("invalid filter '%s' (one of %s)", k, strings.Join(keys, ", "))
		}
	}
	return nil
}

// anyPrefix: no values, or s starts with one of them.
func anyPrefix(s string, values []string) bool {
	if len(values) == 0 {
		return true
	}
	for _, v := range values {
		if strings.HasPrefix(s, v) {
			return true
		}
	}
	return false
}

// labelsMatch: every value (KEY or KEY=VALUE) holds.
func labelsMatch(labels map[string]string, values []string) bool {
	for _, w := range values {
		k, v, hasValue := strings.Cut(w, "=")
		got, ok := labels[k]
		if !ok || (hasValue && got != v) {
			return false
		}
	}
	return true
}
