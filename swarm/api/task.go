package api

import (
	"fmt"
	"strings"
	"time"
)

// TaskState is where a task is in its life. States are ordered and a task
// only ever moves forward (see CanTransition).
type TaskState int

// The task states, in order.
const (
	TaskNew TaskState = iota
	TaskPending
	TaskAssigned
	TaskAccepted
	TaskPreparing
	TaskReady
	TaskStarting
	TaskRunning
	TaskComplete
	TaskShutdown
	TaskFailed
	TaskRejected
	TaskRemove
	TaskOrphaned
)

var taskStateNames = [...]string{"new", "pending", "assigned", "accepted", "preparing", "ready", "starting",
	"running", "complete", "shutdown", "failed", "rejected", "remove", "orphaned"}

// TaskStates lists every state in order.
func TaskStates() []TaskState {
	out := make([]TaskState, len(taskStateNames))
	for i := range out {
		out[i] = TaskState(i)
	}
	return out
}

func (s TaskState) String() string {
	if s < 0 || int(s) >= len(taskStateNames) {
		return fmt.Sprintf("TaskState(%d)", int(s))
	}
	return taskStateNames[s]
}

// MarshalText writes the state's name.
func (s TaskState) MarshalText() ([]byte, error) {
	if s < 0 || int(s) >= len(taskStateNames) {
		return nil, fmt.Errorf("api: unknown task state %d", int(s))
	}
	return []byte(taskStateNames[s]), nil
}

// UnmarshalText reads a state's name, in any case.
func (s *TaskState) UnmarshalText(b []byte) error {
	name := strings.ToLower(string(b))
	for i, n := range taskStateNames {
		if n == name {
			*s = TaskState(i)
			return nil
		}
	}
	return fmt.Errorf("api: unknown task state %q (one of %s)", b, strings.Join(taskStateNames[:], ", "))
}

// Terminal reports whether a task in this state will never run again.
func (s TaskState) Terminal() bool { return s > TaskRunning }

// CanTransition reports whether a task may move from one state to another:
// only forward. A report of an older state (a late or repeated message) is
// refused rather than moving the task back.
func CanTransition(from, to TaskState) bool { return to > from && to <= TaskOrphaned }

// Task is one instance of a service (or a job run) on one node.
type Task struct {
	Meta
	ServiceID string `json:"serviceID"`
	// Slot is the replica number (1..N) of a replicated service; global
	// tasks have slot 0 and are told apart by NodeID.
	Slot   uint64 `json:"slot,omitempty"`
	NodeID string `json:"nodeID,omitempty"`
	// Annotations name the task, usually SERVICE.SLOT.ID.
	Annotations Annotations `json:"annotations"`
	Spec        TaskSpec    `json:"spec"`
	// SpecVersion is the service version whose spec the task runs.
	SpecVersion  uint64     `json:"specVersion,omitempty"`
	DesiredState TaskState  `json:"desiredState"`
	Status       TaskStatus `json:"status"`
	// Endpoint is the service's endpoint when the task was made: its
	// published ports (host-mode ones are taken on the task's node).
	Endpoint *Endpoint `json:"endpoint,omitempty"`
	// Networks are the task's attachments with their assigned addresses.
	Networks []NetworkAttachment `json:"networks,omitempty"`
	// AssignedGenericResources are the units the scheduler reserved.
	AssignedGenericResources []GenericResource `json:"assignedGenericResources,omitempty"`
	// JobIteration counts runs of a job service.
	JobIteration uint64 `json:"jobIteration,omitempty"`
	// Restarts are the times the task's slot was restarted (its task
	// replaced after it ended), the latest few, for the restart policy's
	// MaxAttempts within Window.
	Restarts []time.Time `json:"restarts,omitempty"`
}

// TaskStatus is the last reported state of a task.
type TaskStatus struct {
	Timestamp time.Time `json:"timestamp"`
	State     TaskState `json:"state"`
	Message   string    `json:"message,omitempty"`
	// Err says what went wrong, for failed and rejected tasks, and why a
	// pending task cannot be placed.
	Err         string `json:"err,omitempty"`
	ExitCode    int    `json:"exitCode,omitempty"`
	ContainerID string `json:"containerID,omitempty"`
	PID         int    `json:"pid,omitempty"`
	// Health is "", "starting", "healthy" or "unhealthy".
	Health string       `json:"health,omitempty"`
	Ports  []PortConfig `json:"ports,omitempty"`
}

// NetworkAttachment is a task's place on a network.
type NetworkAttachment struct {
	NetworkID string   `json:"networkID"`
	Addresses []string `json:"addresses,omitempty"`
	Aliases   []string `json:"aliases,omitempty"`
}

// TaskSpec is what a task runs: the container and how it is placed,
// restarted and limited. It is the service's task template.
type TaskSpec struct {
	Image    string            `json:"image"`
	Command  []string          `json:"command,omitempty"`
	Args     []string          `json:"args,omitempty"`
	Env      []string          `json:"env,omitempty"`
	User     string            `json:"user,omitempty"`
	Dir      string            `json:"dir,omitempty"`
	Hostname string            `json:"hostname,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
	Mounts   []Mount           `json:"mounts,omitempty"`
	ReadOnly bool              `json:"readOnly,omitempty"`
	// Init runs an init process as PID 1 that reaps zombies.
	Init            *bool             `json:"init,omitempty"`
	Secrets         []SecretReference `json:"secrets,omitempty"`
	Configs         []ConfigReference `json:"configs,omitempty"`
	Healthcheck     *HealthConfig     `json:"healthcheck,omitempty"`
	StopSignal      string            `json:"stopSignal,omitempty"`
	StopGracePeriod *time.Duration    `json:"stopGracePeriod,omitempty"`

	Resources     *ResourceRequirements `json:"resources,omitempty"`
	RestartPolicy *RestartPolicy        `json:"restartPolicy,omitempty"`
	Placement     *Placement            `json:"placement,omitempty"`
	Networks      []NetworkTarget       `json:"networks,omitempty"`
	LogDriver     *Driver               `json:"logDriver,omitempty"`
	// ForceUpdate, when changed, makes an update replace every task even if
	// nothing else changed.
	ForceUpdate uint64 `json:"forceUpdate,omitempty"`
}

// MountType is the kind of a mount.
type MountType string

// Mount types.
const (
	MountBind   MountType = "bind"
	MountVolume MountType = "volume"
	MountTmpfs  MountType = "tmpfs"
)

// Mount puts a host path, a volume or a tmpfs into the container.
type Mount struct {
	Type     MountType `json:"type"`
	Source   string    `json:"source,omitempty"`
	Target   string    `json:"target"`
	ReadOnly bool      `json:"readOnly,omitempty"`
	// NoCopy keeps a new, empty volume empty; by default it is first filled
	// with what the image has at Target, as Docker does.
	NoCopy bool `json:"noCopy,omitempty"`
	// TmpfsSizeBytes bounds a tmpfs mount; 0 is the kernel default.
	TmpfsSizeBytes int64 `json:"tmpfsSizeBytes,omitempty"`
}

// FileTarget is where a secret or config appears in the container.
type FileTarget struct {
	// Name is the file name under /run/secrets (secrets) or an absolute path
	// (configs); empty means the secret's or config's name.
	Name string `json:"name,omitempty"`
	UID  string `json:"uid,omitempty"`
	GID  string `json:"gid,omitempty"`
	Mode uint32 `json:"mode,omitempty"`
}

// SecretReference gives a task a secret.
type SecretReference struct {
	SecretID   string     `json:"secretID,omitempty"`
	SecretName string     `json:"secretName"`
	File       FileTarget `json:"file"`
}

// ConfigReference gives a task a config.
type ConfigReference struct {
	ConfigID   string     `json:"configID,omitempty"`
	ConfigName string     `json:"configName"`
	File       FileTarget `json:"file"`
}

// HealthConfig is a container health check with Docker's semantics.
type HealthConfig struct {
	// Test is ["NONE"], ["CMD", args...] or ["CMD-SHELL", command].
	Test        []string      `json:"test"`
	Interval    time.Duration `json:"interval,omitempty"`
	Timeout     time.Duration `json:"timeout,omitempty"`
	StartPeriod time.Duration `json:"startPeriod,omitempty"`
	Retries     int           `json:"retries,omitempty"`
}

// RestartCondition says when a task is replaced after it ends.
type RestartCondition string

// Restart conditions.
const (
	RestartNone      RestartCondition = "none"
	RestartOnFailure RestartCondition = "on-failure"
	RestartAny       RestartCondition = "any"
)

// RestartPolicy governs replacing tasks that end.
type RestartPolicy struct {
	Condition RestartCondition `json:"condition,omitempty"`
	Delay     *time.Duration   `json:"delay,omitempty"`
	// MaxAttempts bounds restarts within Window (or ever, if Window is 0);
	// 0 means unlimited.
	MaxAttempts uint64        `json:"maxAttempts,omitempty"`
	Window      time.Duration `json:"window,omitempty"`
}

// Placement constrains which nodes may run a task.
type Placement struct {
	// Constraints are expressions like "node.labels.zone==east" or
	// "node.role!=manager"; all must hold.
	Constraints []string              `json:"constraints,omitempty"`
	Preferences []PlacementPreference `json:"preferences,omitempty"`
	// MaxReplicas caps the tasks of the service per node; 0 is no cap.
	MaxReplicas uint64     `json:"maxReplicas,omitempty"`
	Platforms   []Platform `json:"platforms,omitempty"`
}

// PlacementPreference spreads tasks evenly over the values of a label.
type PlacementPreference struct {
	// Spread is a descriptor such as "node.labels.zone".
	Spread string `json:"spread"`
}

// NetworkTarget attaches a task to a network, with extra DNS aliases.
type NetworkTarget struct {
	Target  string   `json:"target"`
	Aliases []string `json:"aliases,omitempty"`
}

// ReservedLabelPrefix starts the container labels Shoal's executors set
// themselves (shoal.task.id, shoal.service.id ...): a task spec's labels
// may not use it, since what those labels tell must not come from a spec.
const ReservedLabelPrefix = "shoal."
