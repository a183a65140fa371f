package api

import "time"

// Service is a desired state: run this task spec this many times (or on
// every node), reachable this way.
type Service struct {
	Meta
	Spec ServiceSpec `json:"spec"`
	// PreviousSpec is the spec before the last update, for rollback.
	PreviousSpec *ServiceSpec `json:"previousSpec,omitempty"`
	// Endpoint is what was allocated: VIPs and published ports.
	Endpoint     *Endpoint     `json:"endpoint,omitempty"`
	UpdateStatus *UpdateStatus `json:"updateStatus,omitempty"`
	// JobStatus tracks runs of a job service.
	JobStatus *JobStatus `json:"jobStatus,omitempty"`
	// SpecChangedAfter is the version the service had just before its spec
	// last changed. An update based on a version after it is based on the
	// spec in force, however many times the managers changed the service
	// since (its endpoint, update status): it is not a conflict.
	SpecChangedAfter uint64 `json:"specChangedAfter,omitempty"`
}

// ServiceSpec is what a user asks for.
type ServiceSpec struct {
	Annotations
	Mode           ServiceMode   `json:"mode"`
	TaskTemplate   TaskSpec      `json:"taskTemplate"`
	UpdateConfig   *UpdateConfig `json:"updateConfig,omitempty"`
	RollbackConfig *UpdateConfig `json:"rollbackConfig,omitempty"`
	EndpointSpec   *EndpointSpec `json:"endpointSpec,omitempty"`
}

// ServiceMode is exactly one of its fields.
type ServiceMode struct {
	Replicated    *ReplicatedService `json:"replicated,omitempty"`
	Global        *GlobalService     `json:"global,omitempty"`
	ReplicatedJob *ReplicatedJob     `json:"replicatedJob,omitempty"`
	GlobalJob     *GlobalJob         `json:"globalJob,omitempty"`
}

// ReplicatedService runs Replicas tasks.
type ReplicatedService struct {
	Replicas uint64 `json:"replicas"`
}

// GlobalService runs one task on every eligible node.
type GlobalService struct{}

// ReplicatedJob runs tasks to completion until TotalCompletions succeeded,
// at most MaxConcurrent at a time.
type ReplicatedJob struct {
	MaxConcurrent    uint64 `json:"maxConcurrent"`
	TotalCompletions uint64 `json:"totalCompletions"`
}

// GlobalJob runs a task to completion once on every eligible node.
type GlobalJob struct{}

// Replicated returns a replicated mode with n replicas.
func Replicated(n uint64) ServiceMode {
	return ServiceMode{Replicated: &ReplicatedService{Replicas: n}}
}

// Global returns the global mode.
func Global() ServiceMode { return ServiceMode{Global: &GlobalService{}} }

// IsJob reports whether the mode runs tasks to completion.
func (m ServiceMode) IsJob() bool { return m.ReplicatedJob != nil || m.GlobalJob != nil }

// IsGlobal reports whether the mode runs a task per node.
func (m ServiceMode) IsGlobal() bool { return m.Global != nil || m.GlobalJob != nil }

// FailureAction is what an update does when too many new tasks fail.
type FailureAction string

// Failure actions.
const (
	ActionPause    FailureAction = "pause"
	ActionContinue FailureAction = "continue"
	ActionRollback FailureAction = "rollback"
)

// UpdateOrder says whether an old task stops before its replacement starts.
type UpdateOrder string

// Update orders.
const (
	StopFirst  UpdateOrder = "stop-first"
	StartFirst UpdateOrder = "start-first"
)

// UpdateConfig governs rolling updates and rollbacks.
type UpdateConfig struct {
	// Parallelism is how many tasks change at once; 0 means all at once.
	Parallelism uint64        `json:"parallelism"`
	Delay       time.Duration `json:"delay,omitempty"`
	// Monitor is how long each new task is watched for failure.
	Monitor         time.Duration `json:"monitor,omitempty"`
	FailureAction   FailureAction `json:"failureAction,omitempty"`
	MaxFailureRatio float64       `json:"maxFailureRatio,omitempty"`
	Order           UpdateOrder   `json:"order,omitempty"`
}

// UpdateState is the state of a rolling update.
type UpdateState string

// Update states.
const (
	UpdateUpdating          UpdateState = "updating"
	UpdatePaused            UpdateState = "paused"
	UpdateCompleted         UpdateState = "completed"
	UpdateRollbackStarted   UpdateState = "rollback_started"
	UpdateRollbackPaused    UpdateState = "rollback_paused"
	UpdateRollbackCompleted UpdateState = "rollback_completed"
)

// UpdateStatus reports the progress of the last update.
type UpdateStatus struct {
	State       UpdateState `json:"state"`
	StartedAt   time.Time   `json:"startedAt"`
	CompletedAt time.Time   `json:"completedAt,omitzero"`
	Message     string      `json:"message,omitempty"`
}

// JobStatus tracks a job service.
type JobStatus struct {
	JobIteration   uint64    `json:"jobIteration"`
	LastExecution  time.Time `json:"lastExecution,omitzero"`
	Completions    uint64    `json:"completions"`
	RunningReplica uint64    `json:"running,omitempty"`
}

// EndpointMode is how a service is reached by name.
type EndpointMode string

// Endpoint modes: a virtual IP balanced over the tasks, or DNS round-robin
// over the task addresses.
const (
	EndpointVIP   EndpointMode = "vip"
	EndpointDNSRR EndpointMode = "dnsrr"
)

// Protocol of a port.
type Protocol string

// Protocols.
const (
	TCP  Protocol = "tcp"
	UDP  Protocol = "udp"
	SCTP Protocol = "sctp"
)

// PublishMode is where a published port answers.
type PublishMode string

// Publish modes: ingress answers on every node through the routing mesh;
// host answers only on nodes that run a task.
const (
	PublishIngress PublishMode = "ingress"
	PublishHost    PublishMode = "host"
)

// EndpointSpec is how a service is reached.
type EndpointSpec struct {
	Mode  EndpointMode `json:"mode,omitempty"`
	Ports []PortConfig `json:"ports,omitempty"`
}

// PortConfig publishes a container port.
type PortConfig struct {
	Name       string   `json:"name,omitempty"`
	Protocol   Protocol `json:"protocol,omitempty"`
	TargetPort uint32   `json:"targetPort"`
	// PublishedPort 0 picks one from the dynamic range (30000-32767).
	PublishedPort uint32      `json:"publishedPort,omitempty"`
	PublishMode   PublishMode `json:"publishMode,omitempty"`
}

// Dynamic published ports are taken from this range, as in Docker.
const (
	DynamicPortStart = 30000
	DynamicPortEnd   = 32767
)

// Endpoint is what the managers allocated for a service.
type Endpoint struct {
	Spec       EndpointSpec `json:"spec"`
	Ports      []PortConfig `json:"ports,omitempty"`
	VirtualIPs []VirtualIP  `json:"virtualIPs,omitempty"`
}

// VirtualIP is a service's address on one network.
type VirtualIP struct {
	NetworkID string `json:"networkID"`
	Addr      string `json:"addr"`
}
