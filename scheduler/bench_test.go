package scheduler

import (
	"fmt"
	"testing"
)

// BenchCluster builds n homogeneous nodes (16 CPUs, 64 GiB, as the SwarmKit
// anchor harness) labelled zone=0..zones-1.
func benchCluster(n, zones int) []*Node {
	out := make([]*Node, n)
	for i := range out {
		out[i] = &Node{ID: fmt.Sprintf("node%06d", i), Hostname: fmt.Sprint("h", i), Role: "worker", OS: "linux", Arch: "amd64", Ready: true,
			Total: Resources{NanoCPUs: 16e9, MemoryBytes: 64 << 30}, Labels: map[string]string{"zone": fmt.Sprint(i % max(zones, 1))}}
	}
	return out
}

func benchGroup(id string, n int) *Group {
	g := &Group{ServiceID: id, Tasks: make([]TaskRef, n)}
	for i := range g.Tasks {
		g.Tasks[i].ID = fmt.Sprintf("%s.%d", id, i)
	}
	return g
}

func BenchmarkSpread5kNodes50kTasks(b *testing.B) {
	ns, g := benchCluster(5000, 0), benchGroup("svc", 50000)
	for b.Loop() {
		if res := New(Config{}).Place(ns, g); len(res.Decisions) != 50000 {
			b.Fatal(len(res.Decisions))
		}
	}
	b.ReportMetric(float64(50000*b.N)/b.Elapsed().Seconds(), "tasks/s")
}

func BenchmarkBinpack5kNodes50kTasks(b *testing.B) {
	ns, g := benchCluster(5000, 0), benchGroup("svc", 50000)
	g.Reservations = Resources{NanoCPUs: 1e8, MemoryBytes: 128 << 20}
	for b.Loop() {
		if res := New(Config{Strategy: Binpack}).Place(ns, g); len(res.Decisions) != 50000 {
			b.Fatal(len(res.Decisions))
		}
	}
	b.ReportMetric(float64(50000*b.N)/b.Elapsed().Seconds(), "tasks/s")
}

func BenchmarkSpread10kNodes100kTasksReserve3Zones(b *testing.B) {
	ns, g := benchCluster(10000, 3), benchGroup("svc", 100000)
	g.Reservations = Resources{NanoCPUs: 1e8, MemoryBytes: 128 << 20}
	g.Preferences = []string{"node.labels.zone"}
	for b.Loop() {
		if res := New(Config{}).Place(ns, g); len(res.Decisions) != 100000 {
			b.Fatal(len(res.Decisions))
		}
	}
	b.ReportMetric(float64(100000*b.N)/b.Elapsed().Seconds(), "tasks/s")
}

func Benchmark100Services1kTasks5kNodes(b *testing.B) {
	ns := benchCluster(5000, 0)
	var gs []*Group
	for s := range 100 {
		gs = append(gs, benchGroup(fmt.Sprint("svc", s), 1000))
	}
	for b.Loop() {
		if res := New(Config{}).Place(ns, gs...); len(res.Decisions) != 100000 {
			b.Fatal(len(res.Decisions))
		}
	}
	b.ReportMetric(float64(100000*b.N)/b.Elapsed().Seconds(), "tasks/s")
}
