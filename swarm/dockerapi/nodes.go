package dockerapi

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"

	dswarm "github.com/moby/moby/api/types/swarm"

	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// nodeList answers docker node ls, with the filters id and name
// (prefixes of the ID, the name or the hostname), role, membership, label
// (engine labels) and node.label (the node's labels).
func (h *Handler) nodeList(w http.ResponseWriter, r *http.Request) error {
	f, err := parseFilters(r.URL.Query().Get("filters"))
	if err != nil {
		return err
	}
	if err := f.accept("id", "name", "role", "membership", "label", "node.label"); err != nil {
		return err
	}
	for _, role := range f["role"] {
		if role != "manager" && role != "worker" {
			return badRequest("invalid role filter %q (manager or worker)", role)
		}
	}
	for _, m := range f["membership"] {
		if m != "accepted" && m != "pending" {
			return badRequest("invalid membership filter %q (accepted or pending)", m)
		}
	}
	nodes, err := h.Backend.Nodes(r.Context(), swarm.Filter{IDs: f["id"], Roles: f["role"]})
	if err != nil {
		return err
	}
	out := []dswarm.Node{}
	for _, n := range nodes {
		if len(f["name"]) > 0 && !anyPrefix(n.Spec.Name, f["name"]) && !anyPrefix(n.Description.Hostname, f["name"]) {
			continue
		}
		if len(f["membership"]) > 0 && !slices.Contains(f["membership"], "accepted") {
			continue // every Shoal node is accepted when it joins
		}
		if !labelsMatch(n.Description.Engine.Labels, f["label"]) || !labelsMatch(n.Spec.Labels, f["node.label"]) {
			continue
		}
		out = append(out, NodeToDocker(n, dswarm.TLSInfo{}))
	}
	return writeJSON(w, http.StatusOK, out)
}

// findNode resolves a node by ID, name, hostname or unique ID prefix, as
// dockerd does.
func (h *Handler) findNode(ctx context.Context, ref string) (*api.Node, error) {
	if ref == "" {
		return nil, badRequest("a node ID or name is required")
	}
	n, err := h.Backend.Node(ctx, ref)
	if err == nil {
		return n, nil
	}
	if !errors.Is(err, swarm.ErrNotFound) {
		return nil, err
	}
	all, err := h.Backend.Nodes(ctx, swarm.Filter{})
	if err != nil {
		return nil, err
	}
	var byName, byPrefix []*api.Node
	for _, n := range all {
		if n.Spec.Name == ref || n.Description.Hostname == ref {
			byName = append(byName, n)
		}
		if strings.HasPrefix(n.ID, ref) {
			byPrefix = append(byPrefix, n)
		}
	}
	for _, found := range [][]*api.Node{byName, byPrefix} {
		switch {
		case len(found) == 1:
			return found[0], nil
		case len(found) > 1:
			return nil, badRequest("node %s is ambiguous (%d matches found): use its ID", ref, len(found))
		}
	}
	return nil, notFound("node %s not found", ref)
}

func (h *Handler) nodeInspect(w http.ResponseWriter, r *http.Request) error {
	n, err := h.findNode(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	var tls dswarm.TLSInfo
	if c, err := h.Backend.Cluster(r.Context()); err == nil {
		tls = tlsInfo(c)
	}
	return writeJSON(w, http.StatusOK, NodeToDocker(n, tls))
}

// nodeUpdate answers docker node update, promote and demote.
func (h *Handler) nodeUpdate(w http.ResponseWriter, r *http.Request) error {
	version, err := queryVersion(r, "node")
	if err != nil {
		return err
	}
	var spec dswarm.NodeSpec
	if err := readJSON(r, &spec); err != nil {
		return err
	}
	n, err := h.findNode(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	if _, err := h.Backend.UpdateNode(r.Context(), n.ID, version, NodeSpecFromDocker(spec)); err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

// nodeRemove answers docker node rm (force removes a node that is up).
func (h *Handler) nodeRemove(w http.ResponseWriter, r *http.Request) error {
	force, err := queryBool(r, "force")
	if err != nil {
		return err
	}
	n, err := h.findNode(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	if err := h.Backend.RemoveNode(r.Context(), n.ID, force); err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}
