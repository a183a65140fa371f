package swarm

import (
	"maps"
	"slices"
	"strings"

	"github.com/shoalproject/shoal/swarm/api"
)

// The assignment stream on the wire: the whole assignment first (Full),
// then only what changed, so that a node with many tasks, or on a network
// with many services, does not get all of it again when one thing moves.

// assignmentMsg is one message of the assignment stream. A message with
// nothing in it is a keepalive.
type assignmentMsg struct {
	Full           bool           `json:"full,omitempty"`
	Tasks          []*api.Task    `json:"tasks,omitempty"`
	Removed        []string       `json:"removed,omitempty"`
	Secrets        []*api.Secret  `json:"secrets,omitempty"`
	RemovedSecrets []string       `json:"removedSecrets,omitempty"`
	Configs        []*api.Config  `json:"configs,omitempty"`
	RemovedConfigs []string       `json:"removedConfigs,omitempty"`
	Kept           []string       `json:"kept,omitempty"`
	Unkept         []string       `json:"unkept,omitempty"`
	Drained        []string       `json:"drained,omitempty"`
	Undrained      []string       `json:"undrained,omitempty"`
	Network        *networkChange `json:"network,omitempty"`
}

func (m *assignmentMsg) empty() bool {
	return !m.Full && len(m.Tasks) == 0 && len(m.Removed) == 0 && len(m.Secrets) == 0 && len(m.RemovedSecrets) == 0 &&
		len(m.Configs) == 0 && len(m.RemovedConfigs) == 0 && len(m.Kept) == 0 && len(m.Unkept) == 0 && len(m.Drained) == 0 && len(m.Undrained) == 0 && m.Network == nil
}

// networkChange is what changed in a node's network view.
type networkChange struct {
	// Off says the node has no network view (any more).
	Off bool `json:"off,omitempty"`
	// Version is the view's (api.NetworkView.Version), sent whenever it
	// changes, even alone: the node confirms it.
	Version         uint64                  `json:"version,omitempty"`
	Networks        []*api.Network          `json:"networks,omitempty"`
	RemovedNetworks []string                `json:"removedNetworks,omitempty"`
	Services        []*api.ServiceEndpoints `json:"services,omitempty"`
	RemovedServices []string                `json:"removedServices,omitempty"`
	Nodes           []*api.NodeEndpoint     `json:"nodes,omitempty"`
	RemovedNodes    []string                `json:"removedNodes,omitempty"`
}

// sent is what a stream sent of one kind: a fingerprint per ID (a version,
// or the pointer of an immutable entry of the leader's book).
type sent map[string]any

// diffSet lists the items whose fingerprint changed since last (all of
// them when last is nil) and the IDs no longer there, and returns what is
// sent now.
func diffSet[T any](last sent, items []T, key func(T) (string, any)) (changed []T, removed []string, now sent) {
	now = make(sent, len(items))
	for _, it := range items {
		id, fp := key(it)
		now[id] = fp
		if old, ok := last[id]; last == nil || !ok || old != fp {
			changed = append(changed, it)
		}
	}
	for id := range last {
		if _, ok := now[id]; !ok {
			removed = append(removed, id)
		}
	}
	slices.Sort(removed)
	return changed, removed, now
}

func taskKey(t *api.Task) (string, any)                  { return t.ID, t.Version }
func secretKey(s *api.Secret) (string, any)              { return s.ID, s.Version }
func configKey(c *api.Config) (string, any)              { return c.ID, c.Version }
func networkKey(n *api.Network) (string, any)            { return n.ID, n.Version }
func serviceEPKey(s *api.ServiceEndpoints) (string, any) { return s.ID, s }
func nodeEPKey(n *api.NodeEndpoint) (string, any)        { return n.ID, n }
func keptKey(id string) (string, any)                    { return id, true }
func taskID(t *api.Task) string                          { return t.ID }
func secretID(s *api.Secret) string                      { return s.ID }
func configID(c *api.Config) string                      { return c.ID }
func networkID(n *api.Network) string                    { return n.ID }
func serviceEPID(s *api.ServiceEndpoints) string         { return s.ID }
func nodeEPID(n *api.NodeEndpoint) string                { return n.ID }
func byID[T any](id func(T) string) func(a, b T) int {
	return func(a, b T) int { return strings.Compare(id(a), id(b)) }
}

// assignmentSender turns a stream's whole assignments into messages.
type assignmentSender struct {
	first                     bool
	tasks, secrets, configs   sent
	kept, drained             sent
	networkOn                 bool
	version                   uint64
	networks, services, nodes sent
}

func newAssignmentSender() *assignmentSender { return &assignmentSender{first: true} }

// next is the message that brings the receiver from the last assignment
// to a; ok is false when nothing changed.
func (s *assignmentSender) next(a *api.Assignment) (msg assignmentMsg, ok bool) {
	msg.Full = s.first
	var last sent
	if !s.first {
		last = s.tasks
	}
	msg.Tasks, msg.Removed, s.tasks = diffSet(last, a.Tasks, taskKey)
	if last = s.secrets; s.first {
		last = nil
	}
	msg.Secrets, msg.RemovedSecrets, s.secrets = diffSet(last, a.Secrets, secretKey)
	if last = s.configs; s.first {
		last = nil
	}
	msg.Configs, msg.RemovedConfigs, s.configs = diffSet(last, a.Configs, configKey)
	if last = s.kept; s.first {
		last = nil
	}
	msg.Kept, msg.Unkept, s.kept = diffSet(last, a.Kept, keptKey)
	if last = s.drained; s.first {
		last = nil
	}
	msg.Drained, msg.Undrained, s.drained = diffSet(last, a.Drained, keptKey)
	switch v := a.Network; {
	case v == nil && s.networkOn:
		msg.Network = &networkChange{Off: true}
		s.networkOn, s.networks, s.services, s.nodes, s.version = false, nil, nil, nil, 0
	case v != nil:
		nc := &networkChange{Version: v.Version}
		nc.Networks, nc.RemovedNetworks, s.networks = diffSet(s.networks, v.Networks, networkKey)
		nc.Services, nc.RemovedServices, s.services = diffSet(s.services, v.Services, serviceEPKey)
		nc.Nodes, nc.RemovedNodes, s.nodes = diffSet(s.nodes, v.Nodes, nodeEPKey)
		if !s.networkOn || v.Version != s.version || len(nc.Networks)+len(nc.RemovedNetworks)+len(nc.Services)+len(nc.RemovedServices)+len(nc.Nodes)+len(nc.RemovedNodes) > 0 {
			msg.Network = nc
		}
		s.networkOn, s.version = true, v.Version
	}
	s.first = false
	return msg, !msg.empty()
}

// assignmentReceiver rebuilds whole assignments from messages.
type assignmentReceiver struct {
	tasks     map[string]*api.Task
	secrets   map[string]*api.Secret
	configs   map[string]*api.Config
	kept      map[string]bool
	drained   map[string]bool
	networkOn bool
	version   uint64
	networks  map[string]*api.Network
	services  map[string]*api.ServiceEndpoints
	nodes     map[string]*api.NodeEndpoint
}

func newAssignmentReceiver() *assignmentReceiver {
	return &assignmentReceiver{tasks: map[string]*api.Task{}, secrets: map[string]*api.Secret{}, configs: map[string]*api.Config{}, kept: map[string]bool{}, drained: map[string]bool{},
		networks: map[string]*api.Network{}, services: map[string]*api.ServiceEndpoints{}, nodes: map[string]*api.NodeEndpoint{}}
}

// take applies a message and returns the whole assignment; ok is false for
// a keepalive.
func (r *assignmentReceiver) take(msg *assignmentMsg) (a *api.Assignment, ok bool) {
	if msg.empty() {
		return nil, false
	}
	if msg.Full {
		clear(r.tasks)
		clear(r.secrets)
		clear(r.configs)
		clear(r.kept)
		clear(r.drained)
		r.networkOn, r.version = false, 0
		clear(r.networks)
		clear(r.services)
		clear(r.nodes)
	}
	merge(r.tasks, msg.Tasks, msg.Removed, taskID)
	merge(r.secrets, msg.Secrets, msg.RemovedSecrets, secretID)
	merge(r.configs, msg.Configs, msg.RemovedConfigs, configID)
	for _, id := range msg.Kept {
		r.kept[id] = true
	}
	for _, id := range msg.Unkept {
		delete(r.kept, id)
	}
	for _, id := range msg.Drained {
		r.drained[id] = true
	}
	for _, id := range msg.Undrained {
		delete(r.drained, id)
	}
	if nc := msg.Network; nc != nil {
		if nc.Off {
			r.networkOn, r.version = false, 0
			clear(r.networks)
			clear(r.services)
			clear(r.nodes)
		} else {
			r.networkOn, r.version = true, nc.Version
			merge(r.networks, nc.Networks, nc.RemovedNetworks, networkID)
			merge(r.services, nc.Services, nc.RemovedServices, serviceEPID)
			merge(r.nodes, nc.Nodes, nc.RemovedNodes, nodeEPID)
		}
	}
	a = &api.Assignment{Tasks: sortedValues(r.tasks, taskID), Secrets: sortedValues(r.secrets, secretID), Configs: sortedValues(r.configs, configID),
		Kept: slices.Sorted(maps.Keys(r.kept)), Drained: slices.Sorted(maps.Keys(r.drained))}
	if r.networkOn {
		a.Network = &api.NetworkView{Version: r.version, Networks: sortedValues(r.networks, networkID), Services: sortedValues(r.services, serviceEPID), Nodes: sortedValues(r.nodes, nodeEPID)}
	}
	return a, true
}

func merge[T any](m map[string]T, add []T, removed []string, id func(T) string) {
	for _, it := range add {
		m[id(it)] = it
	}
	for _, k := range removed {
		delete(m, k)
	}
}

func sortedValues[T any](m map[string]T, id func(T) string) []T {
	out := make([]T, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	slices.SortFunc(out, byID(id))
	return out
}
