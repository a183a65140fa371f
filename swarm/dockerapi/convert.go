package dockerapi

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"math"
	"net/netip"

	dswarm "github.com/moby/moby/api/types/swarm"

	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/ca"
)

// TaskToDocker converts a task to Docker's form; job says whether its
// service is a job (Docker gives job tasks their iteration).
func TaskToDocker(t *api.Task, job bool) dswarm.Task {
	out := dswarm.Task{
		ID:          t.ID,
		Meta:        metaToDocker(t.Meta),
		Annotations: dswarm.Annotations{Name: t.Annotations.Name, Labels: cloneMap(t.Annotations.Labels)},
		Spec:        taskSpecToDocker(t.Spec),
		ServiceID:   t.ServiceID,
		Slot:        int(min(t.Slot, math.MaxInt32)),
		NodeID:      t.NodeID,
		Status: dswarm.TaskStatus{
			Timestamp: t.Status.Timestamp,
			State:     dswarm.TaskState(t.Status.State.String()),
			Message:   t.Status.Message,
			Err:       t.Status.Err,
		},
		DesiredState:     dswarm.TaskState(t.DesiredState.String()),
		GenericResources: genericToDocker(t.AssignedGenericResources),
	}
	if s := t.Status; s.ContainerID != "" || s.PID != 0 || s.ExitCode != 0 {
		out.Status.ContainerStatus = &dswarm.ContainerStatus{ContainerID: s.ContainerID, PID: s.PID, ExitCode: s.ExitCode}
	}
	for _, p := range t.Status.Ports {
		out.Status.PortStatus.Ports = append(out.Status.PortStatus.Ports, portToDocker(p))
	}
	for _, n := range t.Networks {
		na := dswarm.NetworkAttachment{Network: dswarm.Network{ID: n.NetworkID}}
		for _, a := range n.Addresses {
			if p := parsePrefix(a); p.IsValid() {
				na.Addresses = append(na.Addresses, p)
			}
		}
		out.NetworksAttachments = append(out.NetworksAttachments, na)
	}
	if job {
		out.JobIteration = &dswarm.Version{Index: t.JobIteration}
	}
	return out
}

// NodeToDocker converts a node to Docker's form; tls is the cluster's
// trust root as the node's TLS info (zero to leave it out).
func NodeToDocker(n *api.Node, tls dswarm.TLSInfo) dswarm.Node {
	out := dswarm.Node{
		ID:   n.ID,
		Meta: metaToDocker(n.Meta),
		Spec: dswarm.NodeSpec{
			Annotations:  annotationsToDocker(n.Spec.Annotations),
			Role:         dswarm.NodeRole(n.Spec.Role),
			Availability: dswarm.NodeAvailability(n.Spec.Availability),
		},
		Description: dswarm.NodeDescription{
			Hostname: n.Description.Hostname,
			Platform: dswarm.Platform{Architecture: n.Description.Platform.Architecture, OS: n.Description.Platform.OS},
			Resources: dswarm.Resources{NanoCPUs: n.Description.Resources.NanoCPUs, MemoryBytes: n.Description.Resources.MemoryBytes,
				GenericResources: genericToDocker(n.Description.Resources.Generic)},
			Engine:  dswarm.EngineDescription{EngineVersion: n.Description.Engine.Version, Labels: cloneMap(n.Description.Engine.Labels)},
			TLSInfo: tls,
		},
		Status: dswarm.NodeStatus{State: dswarm.NodeState(n.Status.State), Message: n.Status.Message, Addr: n.Status.Addr},
	}
	if ms := n.ManagerStatus; ms != nil {
		out.ManagerStatus = &dswarm.ManagerStatus{Leader: ms.Leader, Reachability: dswarm.Reachability(ms.Reachability), Addr: ms.Addr}
	}
	return out
}

// NodeSpecFromDocker converts a Docker node spec to Shoal's (the managers
// validate role and availability).
func NodeSpecFromDocker(d dswarm.NodeSpec) api.NodeSpec {
	return api.NodeSpec{
		Annotations:  api.Annotations{Name: d.Name, Labels: cloneMap(d.Labels)},
		Role:         api.NodeRole(d.Role),
		Availability: api.NodeAvailability(d.Availability),
	}
}

// tlsInfo is the cluster's trust root as Docker shows it.
func tlsInfo(c *api.Cluster) dswarm.TLSInfo {
	out := dswarm.TLSInfo{TrustRoot: string(c.RootCA.CACertPEM)}
	if b, _ := pem.Decode(c.RootCA.CACertPEM); b != nil {
		if cert, err := x509.ParseCertificate(b.Bytes); err == nil {
			out.CertIssuerSubject, out.CertIssuerPublicKey = cert.RawSubject, cert.RawSubjectPublicKeyInfo
		}
	}
	return out
}

// DataPathPort is the VXLAN port Shoal's overlays use, as Docker's.
const DataPathPort = 4789

// clusterInfoToDocker converts the cluster object (without join tokens).
func clusterInfoToDocker(c *api.Cluster) dswarm.ClusterInfo {
	out := dswarm.ClusterInfo{
		ID:           c.ID,
		Meta:         metaToDocker(c.Meta),
		Spec:         clusterSpecToDocker(c.Spec),
		TLSInfo:      tlsInfo(c),
		SubnetSize:   24,
		DataPathPort: DataPathPort,
	}
	pools := c.Spec.DefaultAddrPool
	if len(pools) == 0 {
		pools = []string{"10.0.0.0/8"}
	}
	for _, p := range pools {
		if pp, err := netip.ParsePrefix(p); err == nil {
			out.DefaultAddrPool = append(out.DefaultAddrPool, pp)
		}
	}
	if c.Spec.SubnetSize != 0 {
		out.SubnetSize = uint32(c.Spec.SubnetSize)
	}
	return out
}

// clusterSpecToDocker shows the cluster's configuration as Docker's. The
// Raft ticks are left at 0: Shoal's Raft timing is in durations, set per
// manager.
func clusterSpecToDocker(s api.ClusterSpec) dswarm.Spec {
	return dswarm.Spec{
		Annotations:      annotationsToDocker(s.Annotations),
		Orchestration:    dswarm.OrchestrationConfig{TaskHistoryRetentionLimit: ptr(int64(s.Orchestration.TaskHistoryRetentionLimit))},
		Raft:             dswarm.RaftConfig{SnapshotInterval: s.Raft.SnapshotThreshold},
		Dispatcher:       dswarm.DispatcherConfig{HeartbeatPeriod: s.Dispatcher.HeartbeatPeriod},
		CAConfig:         dswarm.CAConfig{NodeCertExpiry: durationOr(s.CAConfig.NodeCertExpiry, ca.DefaultNodeCertValidity)},
		EncryptionConfig: dswarm.EncryptionConfig{AutoLockManagers: s.Encryption.AutoLockManagers},
	}
}

// clusterSpecFromDocker applies to cur what the Docker spec changes from
// the way cur is shown (clusterSpecToDocker): a field sent back as it was
// shown keeps Shoal's value. Changes Shoal cannot make are refused.
func clusterSpecFromDocker(d dswarm.Spec, cur api.ClusterSpec) (api.ClusterSpec, error) {
	shown := clusterSpecToDocker(cur)
	out := cur
	var u unsupported
	out.Name = d.Name
	out.Labels = cloneMap(d.Labels)
	if l := d.Orchestration.TaskHistoryRetentionLimit; l != nil && *l != *shown.Orchestration.TaskHistoryRetentionLimit {
		out.Orchestration.TaskHistoryRetentionLimit = int(max(min(*l, math.MaxInt32), math.MinInt32))
	}
	if d.Raft.SnapshotInterval != shown.Raft.SnapshotInterval {
		out.Raft.SnapshotThreshold = d.Raft.SnapshotInterval
	}
	if d.Raft.KeepOldSnapshots != nil && *d.Raft.KeepOldSnapshots != 0 {
		u.add("Raft.KeepOldSnapshots", "--max-snapshots")
	}
	if d.Raft.LogEntriesForSlowFollowers != 0 {
		u.add("Raft.LogEntriesForSlowFollowers", "")
	}
	if d.Raft.ElectionTick != shown.Raft.ElectionTick || d.Raft.HeartbeatTick != shown.Raft.HeartbeatTick {
		u.add("Raft.ElectionTick, Raft.HeartbeatTick", "Shoal's Raft timing is set per manager, in durations")
	}
	if d.Dispatcher.HeartbeatPeriod != shown.Dispatcher.HeartbeatPeriod {
		out.Dispatcher.HeartbeatPeriod = d.Dispatcher.HeartbeatPeriod
	}
	if d.CAConfig.NodeCertExpiry != shown.CAConfig.NodeCertExpiry {
		out.CAConfig.NodeCertExpiry = d.CAConfig.NodeCertExpiry
	}
	if len(d.CAConfig.ExternalCAs) > 0 {
		u.add("CAConfig.ExternalCAs", "--external-ca")
	}
	if d.CAConfig.SigningCACert != "" || d.CAConfig.SigningCAKey != "" || d.CAConfig.ForceRotate != 0 {
		u.add("CAConfig.SigningCACert, CAConfig.SigningCAKey, CAConfig.ForceRotate", "docker swarm ca --rotate: rotating the root CA")
	}
	if d.TaskDefaults.LogDriver != nil {
		u.add("TaskDefaults.LogDriver", "")
	}
	if d.EncryptionConfig.AutoLockManagers != shown.EncryptionConfig.AutoLockManagers {
		u.add("EncryptionConfig.AutoLockManagers", "--autolock: Shoal sets autolock per manager when it starts (shoald --autolock), not yet through the Docker API")
	}
	return out, u.err()
}

// sameJSON reports whether a and b encode alike.
func sameJSON(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}
