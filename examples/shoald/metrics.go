package main

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// metricsHandler serves the Go runtime's, the process's and c's metrics
// in the Prometheus text format.
func metricsHandler(c prometheus.Collector) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), c)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return mux
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("shoal_"+name, help, labels, nil)
}

var (
	descNode          = desc("node_info", "This node: its ID and role.", "node", "role")
	descTasks         = desc("tasks", "Tasks in the cluster by state (as this manager's store has them).", "state")
	descNodes         = desc("nodes", "Nodes in the cluster by state, availability and role.", "state", "availability", "role")
	descRaftTerm      = desc("raft_term", "This manager's Raft term.")
	descRaftCommit    = desc("raft_commit_index", "This manager's Raft commit index.")
	descRaftApplied   = desc("raft_applied_index", "This manager's Raft applied index.")
	descRaftLast      = desc("raft_last_index", "This manager's last Raft log index.")
	descRaftLeader    = desc("raft_leader", "1 while this manager leads.")
	descRaftChanges   = desc("raft_leader_changes_total", "Leader changes this manager observed since it started.")
	descLocked        = desc("manager_locked", "1 while this manager waits for its unlock key.")
	descSessions      = desc("dispatcher_sessions", "Workers' open assignment streams on this manager.")
	descReconcile     = desc("reconcile_duration_seconds", "Time of the leader's reconcile passes.")
	descScheduling    = desc("scheduling_duration_seconds", "Time the leader spent placing tasks.")
	descMeshChanges   = desc("routing_mesh_rule_changes_total", "Published ports set or removed in this node's routing mesh.")
	descMeshPorts     = desc("routing_mesh_published_ports", "Ports this node's routing mesh publishes.")
	descViewApplies   = desc("network_view_applies_total", "Network views this node applied.")
	descViewErrors    = desc("network_view_apply_errors_total", "Network views this node applied with errors.")
	descLocalNetworks = desc("node_networks", "Overlay networks with tasks on this node.")
	descLocalTasks    = desc("node_task_networks", "Tasks with a network namespace on this node.")
)

// collector reads the node's figures at each scrape.
type collector struct{ d *daemon }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descNode, descTasks, descNodes, descRaftTerm, descRaftCommit, descRaftApplied, descRaftLast,
		descRaftLeader, descRaftChanges, descLocked, descSessions, descReconcile, descScheduling, descMeshChanges, descMeshPorts,
		descViewApplies, descViewErrors, descLocalNetworks, descLocalTasks} {
		ch <- d
	}
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
}

func histogram(ch chan<- prometheus.Metric, d *prometheus.Desc, l swarm.Latency) {
	buckets := make(map[float64]uint64, len(swarm.LatencyBuckets))
	for i, b := range swarm.LatencyBuckets {
		if i < len(l.Buckets) {
			buckets[b.Seconds()] = l.Buckets[i]
		}
	}
	ch <- prometheus.MustNewConstHistogram(d, l.Count, l.Sum.Seconds(), buckets)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	n := c.d.node
	gauge(ch, descNode, 1, n.ID(), n.Role())
	if m := n.Manager(); m != nil {
		st := m.Stats()
		gauge(ch, descLocked, b2f(m.Locked()))
		gauge(ch, descRaftTerm, float64(st.Raft.Term))
		gauge(ch, descRaftCommit, float64(st.Raft.CommitIndex))
		gauge(ch, descRaftApplied, float64(st.Raft.AppliedIndex))
		gauge(ch, descRaftLast, float64(st.Raft.LastIndex))
		gauge(ch, descRaftLeader, b2f(st.Leader))
		counter(ch, descRaftChanges, float64(st.Raft.LeaderChanges))
		gauge(ch, descSessions, float64(st.Sessions))
		histogram(ch, descReconcile, st.Reconcile)
		histogram(ch, descScheduling, st.Scheduling)
		if tasks, err := m.Tasks(""); err == nil {
			by := map[api.TaskState]int{}
			for _, t := range tasks {
				by[t.Status.State]++
			}
			for s := api.TaskNew; s <= api.TaskRemove; s++ {
				gauge(ch, descTasks, float64(by[s]), s.String())
			}
		}
		if nodes, err := m.Nodes(); err == nil {
			type key struct{ state, avail, role string }
			by := map[key]int{}
			for _, x := range nodes {
				by[key{string(x.Status.State), string(x.Spec.Availability), string(x.Spec.Role)}]++
			}
			for k, v := range by {
				gauge(ch, descNodes, float64(v), k.state, k.avail, k.role)
			}
		}
	}
	if na := c.d.network; na != nil {
		st := na.Stats()
		counter(ch, descMeshChanges, float64(st.MeshRuleChanges))
		gauge(ch, descMeshPorts, float64(st.PublishedPorts))
		counter(ch, descViewApplies, float64(st.Applies))
		counter(ch, descViewErrors, float64(st.ApplyErrors))
		gauge(ch, descLocalNetworks, float64(st.Networks))
		gauge(ch, descLocalTasks, float64(st.Tasks))
	}
}
