package api

import "time"

// Cluster is the cluster-wide configuration; there is one.
type Cluster struct {
	Meta
	Spec ClusterSpec `json:"spec"`
	// RootCA is the cluster CA certificate (PEM) and its digest.
	RootCA RootCA `json:"rootCA"`
	// JoinTokens let nodes join as workers or managers.
	JoinTokens JoinTokens `json:"joinTokens"`
	// RemovedNodes are the nodes removed from the cluster: their
	// certificates are refused until they expire.
	RemovedNodes []RemovedNode `json:"removedNodes,omitempty"`
	// Arbiters are the Raft voters that only vote (swarm.Arbiter): they
	// run no tasks and serve no API, and are not nodes.
	Arbiters []Arbiter `json:"arbiters,omitempty"`
	// Fences are the last fencings of two-node mode (swarm.TwoNode),
	// oldest first, at most MaxFences: a manager that lost its peer
	// fenced it and went on as the only voter.
	Fences []Fence `json:"fences,omitempty"`
	// ForcedOut are the managers and arbiters a force-new-cluster
	// recovery (swarm.Node.ForceNewCluster) left out of Raft: their data
	// is stale, so they are refused when they ask to rejoin; they must be
	// wiped and joined again with a join token. Entries go when their
	// certificates expire (Until).
	ForcedOut []RemovedNode `json:"forcedOut,omitempty"`
	// Warnings are what the managers see wrong with the cluster when it
	// is read (two managers and no arbiter: no manager failure is
	// survivable); never stored.
	Warnings []string `json:"warnings,omitempty"`
}

// Arbiter is an arbiter of the cluster: a Raft voter that runs nothing
// else. Its certificate has the arbiter role.
type Arbiter struct {
	ID string `json:"id"`
	// Addr is its Raft address (host:port).
	Addr     string    `json:"addr"`
	JoinedAt time.Time `json:"joinedAt"`
}

// MaxFences bounds Cluster.Fences: older records go.
const MaxFences = 16

// Fence records that a manager of a two-node cluster fenced its peer
// (powered it off or cut it off with the operator's fencing action) and
// made itself the only Raft voter. The peer comes back as a non-voter and
// votes again once it has caught up.
type Fence struct {
	// Peer and PeerAddr are the fenced manager.
	Peer     string `json:"peer"`
	PeerAddr string `json:"peerAddr"`
	// By is the manager that fenced it and went on alone.
	By string    `json:"by"`
	At time.Time `json:"at"`
}

// RemovedNode is a node removed from the cluster.
type RemovedNode struct {
	ID        string    `json:"id"`
	RemovedAt time.Time `json:"removedAt"`
	// Until is when its last certificate expires: the entry can go then.
	Until time.Time `json:"until"`
}

// ClusterSpec is what an operator sets on the cluster.
type ClusterSpec struct {
	Annotations
	Orchestration OrchestrationConfig `json:"orchestration"`
	Raft          RaftConfig          `json:"raft"`
	Dispatcher    DispatcherConfig    `json:"dispatcher"`
	CAConfig      CAConfig            `json:"caConfig"`
	Encryption    EncryptionConfig    `json:"encryption"`
	// DefaultAddrPool is where overlay subnets come from (default 10.0.0.0/8
	// cut into /24s).
	DefaultAddrPool []string `json:"defaultAddrPool,omitempty"`
	SubnetSize      int      `json:"subnetSize,omitempty"`
}

// OrchestrationConfig tunes the orchestrators.
type OrchestrationConfig struct {
	// TaskHistoryRetentionLimit is how many ended tasks per slot are kept
	// (5 in a new cluster, as Docker).
	TaskHistoryRetentionLimit int `json:"taskHistoryRetentionLimit"`
	// MaxReplicas bounds a service's replicas, and a job's completions and
	// concurrency; 0 means DefaultMaxReplicas.
	MaxReplicas uint64 `json:"maxReplicas,omitempty"`
}

// DefaultMaxReplicas is the bound on a service's tasks when the cluster
// sets none. Raise OrchestrationConfig.MaxReplicas for more.
const DefaultMaxReplicas = 100_000

// MaxReplicasLimit is the most OrchestrationConfig.MaxReplicas may allow.
const MaxReplicasLimit = 10_000_000

// ReplicasBound is the bound in force: MaxReplicas, or the default.
func (o OrchestrationConfig) ReplicasBound() uint64 {
	if o.MaxReplicas == 0 {
		return DefaultMaxReplicas
	}
	return o.MaxReplicas
}

// RaftConfig tunes the managers' Raft.
type RaftConfig struct {
	SnapshotThreshold uint64        `json:"snapshotThreshold,omitempty"`
	ElectionTimeout   time.Duration `json:"electionTimeout,omitempty"`
	HeartbeatTimeout  time.Duration `json:"heartbeatTimeout,omitempty"`
}

// DispatcherConfig tunes worker sessions.
type DispatcherConfig struct {
	HeartbeatPeriod time.Duration `json:"heartbeatPeriod,omitempty"`
}

// CAConfig tunes node certificates.
type CAConfig struct {
	NodeCertExpiry time.Duration `json:"nodeCertExpiry,omitempty"`
}

// EncryptionConfig holds autolock.
type EncryptionConfig struct {
	// AutoLockManagers keeps the key that decrypts the managers' Raft data
	// off their disks: a restarted manager needs the unlock key.
	AutoLockManagers bool `json:"autoLockManagers"`
}

// RootCA is the cluster CA.
type RootCA struct {
	CACertPEM []byte `json:"caCert"`
	// CAKeyPEM is the CA's private key. It lives in the managers' store
	// (sealed at rest) so that any manager can issue certificates, and
	// the API never sends it out.
	CAKeyPEM []byte `json:"caKey,omitempty"`
	// Digest is the SHA-256 of the CA certificate, as in join tokens.
	Digest string `json:"digest"`
}

// JoinTokens are the secrets nodes present to join.
type JoinTokens struct {
	Worker  string `json:"worker"`
	Manager string `json:"manager"`
	// Arbiter joins an arbiter (a Raft voter that runs nothing else); it
	// cannot join a manager or a worker, nor they with theirs an arbiter.
	Arbiter string `json:"arbiter,omitempty"`
}

// Validate reports every problem of the spec.
func (s *ClusterSpec) Validate() error {
	v := newValidator("spec")
	v.labels("labels", s.Labels)
	if s.Orchestration.TaskHistoryRetentionLimit < 0 || s.Orchestration.TaskHistoryRetentionLimit > 1000 {
		v.add("orchestration.taskHistoryRetentionLimit", "must be between 0 and 1000")
	}
	if s.Orchestration.MaxReplicas > MaxReplicasLimit {
		v.addf("orchestration.maxReplicas", "must be at most %d", MaxReplicasLimit)
	}
	if s.Dispatcher.HeartbeatPeriod < 0 || (s.Dispatcher.HeartbeatPeriod > 0 && s.Dispatcher.HeartbeatPeriod < 100*time.Millisecond) {
		v.add("dispatcher.heartbeatPeriod", "must be 0 (default) or >= 100ms")
	}
	if s.CAConfig.NodeCertExpiry != 0 && s.CAConfig.NodeCertExpiry < 10*time.Second {
		v.add("caConfig.nodeCertExpiry", "must be 0 (90 days) or at least 10s (hours are sensible: a node cut off from the managers for longer loses its certificate)")
	}
	for i, p := range s.DefaultAddrPool {
		v.cidr(pathIdx("defaultAddrPool", i), p)
	}
	if s.SubnetSize != 0 && (s.SubnetSize < 16 || s.SubnetSize > 29) {
		v.add("subnetSize", "must be between 16 and 29")
	}
	return v.err()
}
