package netagent_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/nettest"
	"github.com/shoalproject/shoal/swarm/api"
)

// benchView is a cluster of 100 nodes, 100 services of 10 tasks on 10
// networks (and ingress); every tenth service publishes a port. Task j of
// service i runs on node (7i+13j) mod 100, so node0 has 10 tasks, one on
// each network.
func benchView(h *nettest.Host) *api.NetworkView {
	v := &api.NetworkView{}
	ingress := network("ingress", 4096, "10.255.0.0/16")
	ingress.Spec.Ingress = true
	v.Networks = append(v.Networks, ingress)
	for n := range 10 {
		v.Networks = append(v.Networks, network(fmt.Sprint("net", n), uint32(5000+n), fmt.Sprintf("10.1.%d.0/24", n)))
	}
	for i := range 100 {
		addr := fmt.Sprintf("198.51.100.%d", i)
		if i == 0 {
			addr = h.Addr.String()
		}
		v.Nodes = append(v.Nodes, &api.NodeEndpoint{ID: fmt.Sprint("node", i), DataAddr: addr,
			Attachments: []api.NetworkAttachment{{NetworkID: "ingress", Addresses: []string{fmt.Sprintf("10.255.0.%d/16", 10+i)}}}})
	}
	for i := range 100 {
		n := fmt.Sprint("net", i%10)
		s := &api.ServiceEndpoints{ID: fmt.Sprintf("s%03d", i), Name: fmt.Sprintf("svc%03d", i),
			VirtualIPs: []api.VirtualIP{{NetworkID: n, Addr: fmt.Sprintf("10.1.%d.%d/24", i%10, 200+i/10)}}}
		publishes := i%10 == 0
		if publishes {
			s.Ports = []api.PortConfig{{TargetPort: 80, PublishedPort: uint32(30000 + i)}}
		}
		for j := range 10 {
			te := &api.TaskEndpoint{ID: fmt.Sprintf("s%03d.%d", i, j), Name: fmt.Sprintf("svc%03d.%d", i, j), NodeID: fmt.Sprint("node", (7*i+13*j)%100),
				Ready: true, Addrs: map[string]string{n: fmt.Sprintf("10.1.%d.%d", i%10, 10+(i/10)*10+j)}}
			if publishes {
				te.Addrs["ingress"] = fmt.Sprintf("10.255.%d.%d", 1+i/10, 10+j)
			}
			s.Tasks = append(s.Tasks, te)
		}
		v.Services = append(v.Services, s)
	}
	return v
}

// BenchmarkApply measures Apply on node0 of a 100 nodes x 100 services x
// 10 tasks view, node0 running its 10 tasks (each with its namespace, DNS
// server and load balancer), when nothing or one task changes.
func BenchmarkApply(b *testing.B) {
	ctx := context.Background()
	lab := nettest.New(b, 1)
	a := newAgent(b, lab.Hosts[0], "node0", stateDir(b, "node0"), []string{}, nil)
	v := benchView(lab.Hosts[0])
	t0 := time.Now()
	if err := a.Apply(ctx, v); err != nil {
		b.Fatal(err)
	}
	first := time.Since(t0)
	t0 = time.Now()
	local := 0
	for _, s := range v.Services {
		for _, te := range s.Tasks {
			if te.NodeID != "node0" {
				continue
			}
			task := &api.Task{Meta: api.Meta{ID: te.ID}, NodeID: "node0"}
			for _, n := range v.Networks {
				if ad, ok := te.Addrs[n.ID]; ok {
					task.Networks = append(task.Networks, api.NetworkAttachment{NetworkID: n.ID, Addresses: []string{ad}})
				}
			}
			if _, _, err := a.TaskNetwork(ctx, task); err != nil {
				b.Fatal(err)
			}
			local++
		}
	}
	b.Logf("first Apply %v; %d local tasks wired in %v", first, local, time.Since(t0))
	// s041 is on net1, where node0 has a task (its load balancer changes);
	// s010 publishes a port (the routing mesh changes too).
	flip := func(svc string) func() {
		var te *api.TaskEndpoint
		for _, s := range v.Services {
			if s.ID == svc {
				te = s.Tasks[3]
			}
		}
		return func() { te.Ready = !te.Ready }
	}
	moved := func() func() {
		te := v.Services[41].Tasks[5]
		return func() {
			if te.NodeID == "node50" {
				te.NodeID = "node51"
			} else {
				te.NodeID = "node50"
			}
		}
	}
	for _, c := range []struct {
		name   string
		change func()
	}{
		{"unchanged", func() {}},
		{"task-ready-flip", flip("s041")},
		{"published-task-ready-flip", flip("s010")},
		{"task-moved-node", moved()},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				c.change()
				if err := a.Apply(ctx, v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
