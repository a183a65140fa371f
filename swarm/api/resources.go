package api

// Resources is an amount of CPU, memory, processes and generic resources.
type Resources struct {
	// NanoCPUs is CPU in units of 1e-9 CPUs (1.5 CPUs = 1_500_000_000).
	NanoCPUs    int64 `json:"nanoCPUs,omitempty"`
	MemoryBytes int64 `json:"memoryBytes,omitempty"`
	// Pids limits the number of processes (limits only).
	Pids    int64             `json:"pids,omitempty"`
	Generic []GenericResource `json:"generic,omitempty"`
}

// GenericResource is a node-specific resource such as GPUs. Discrete
// resources are counted (gpu=2); named ones are sets of identifiers
// (gpu=GPU-7a1, gpu=GPU-9c3), one entry per identifier.
type GenericResource struct {
	Kind string `json:"kind"`
	// Value is the count of a discrete resource.
	Value int64 `json:"value,omitempty"`
	// Named is the identifier of one unit of a named resource.
	Named string `json:"named,omitempty"`
}

// ResourceRequirements are what a task is limited to and what the scheduler
// reserves for it on its node.
type ResourceRequirements struct {
	Limits       *Resources `json:"limits,omitempty"`
	Reservations *Resources `json:"reservations,omitempty"`
}

// MinMemoryLimit is the smallest memory limit a task may have; below it a
// container cannot start its runtime.
const MinMemoryLimit = 4 << 20
