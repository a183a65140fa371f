package scheduler

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Availability of a node to the scheduler.
type Availability int

// Only active nodes receive tasks; paused and drained ones do not.
const (
	Active Availability = iota
	Pause
	Drain
)

// Resources are amounts of CPU, memory and generic resources.
type Resources struct {
	// NanoCPUs is CPU in 1e-9 CPUs.
	NanoCPUs    int64
	MemoryBytes int64
	// Generic are discrete resources by kind (gpu=2): counts.
	Generic map[string]int64
}

// Node is what the scheduler knows of a node. Fill it from your own model.
type Node struct {
	ID       string
	Hostname string
	// Role is "manager" or "worker".
	Role         string
	Labels       map[string]string
	EngineLabels map[string]string
	OS, Arch     string
	Ready        bool
	Availability Availability
	// Total is the node's capacity; Reserved what its tasks already reserve.
	Total, Reserved Resources
	// Named are the free units of named generic resources by kind
	// (gpu: GPU-7a1, GPU-9c3); a task asking gpu=1 gets one of them.
	Named map[string][]string
	// HostPorts are host-mode published ports in use ("80/tcp").
	HostPorts []string
	// ServiceTasks counts the tasks of each service running on the node;
	// TotalTasks counts all of them.
	ServiceTasks map[string]int
	TotalTasks   int
}

// Platform is an OS and architecture; empty fields match anything.
type Platform struct{ OS, Arch string }

// TaskRef is one task to place. NodeID is set for tasks of global services,
// which may only go to that node.
type TaskRef struct {
	ID     string
	NodeID string
}

// Group is a set of identical tasks: one service at one spec version.
type Group struct {
	ServiceID string
	Tasks     []TaskRef
	// Reservations is what each task reserves on its node.
	Reservations Resources
	// Constraints are expressions as in `docker service create
	// --constraint`: node.labels.zone==east, node.role!=manager, ...
	Constraints []string
	// Platforms the image supports; empty means any.
	Platforms []Platform
	// HostPorts are host-mode published ports each task needs ("80/tcp").
	HostPorts []string
	// MaxReplicas caps the service's tasks per node; 0 is no cap.
	MaxReplicas int
	// Preferences spread tasks evenly over label values, level by level:
	// "node.labels.datacenter", then "node.labels.rack".
	Preferences []string
	// Strategy overrides the scheduler's for this group.
	Strategy Strategy
}

// Decision places one task on one node.
type Decision struct {
	TaskID, NodeID string
	// Named lists the named generic resource units given to the task.
	Named []NamedUnit
}

// NamedUnit is one unit of a named generic resource.
type NamedUnit struct{ Kind, ID string }

// Result is the outcome of a placement round.
type Result struct {
	Decisions []Decision
	// Unplaced has one error per group with tasks that could not be placed.
	Unplaced []*PlacementError
}

// ErrNoSuitableNode is wrapped by every *PlacementError.
var ErrNoSuitableNode = errors.New("scheduler: no suitable node")

// PlacementError says why tasks of a group stay pending: for each filter,
// on how many nodes it failed.
type PlacementError struct {
	ServiceID string
	TaskIDs   []string
	// Failures counts nodes per reason, e.g. "insufficient memory" -> 3.
	Failures map[string]int
	// Nodes is how many nodes were considered.
	Nodes int
}

func (e *PlacementError) Error() string {
	if e.Nodes == 0 {
		return "no suitable node (no nodes in the cluster)"
	}
	reasons := make([]string, 0, len(e.Failures))
	for r := range e.Failures {
		reasons = append(reasons, r)
	}
	// Most common reason first, then alphabetical: stable messages.
	sort.Slice(reasons, func(i, j int) bool {
		if e.Failures[reasons[i]] != e.Failures[reasons[j]] {
			return e.Failures[reasons[i]] > e.Failures[reasons[j]]
		}
		return reasons[i] < reasons[j]
	})
	parts := make([]string, len(reasons))
	for i, r := range reasons {
		parts[i] = fmt.Sprintf("%s on %d node%s", r, e.Failures[r], plural(e.Failures[r]))
	}
	if len(parts) == 0 {
		return "no suitable node"
	}
	return "no suitable node (" + strings.Join(parts, "; ") + ")"
}

func (e *PlacementError) Unwrap() error { return ErrNoSuitableNode }

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
