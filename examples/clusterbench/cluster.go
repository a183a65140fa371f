package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// cluster is three managers, each a child process running a swarm.Node
// on loopback with its own data dir, with Shoal's default timings.
type cluster struct {
	b      *bench
	name   string
	exec   bool // the managers run tasks too
	mgrs   []*proc
	tokens api.JoinTokens
}

func (c *cluster) dir(i int) string { return filepath.Join(c.b.tmp, c.name, fmt.Sprintf("m%d", i)) }

func (c *cluster) args(a ...string) []string {
	if c.exec {
		a = append(a, "-exec")
	}
	if d := c.b.o.raftTimeout; d > 0 {
		a = append(a, "-raft-timeout", d.String())
	}
	return a
}

// startCluster inits a cluster on one manager and joins two more with the
// manager token; it returns once the three vote.
func (b *bench) startCluster(ctx context.Context, name string, exec bool) (*cluster, error) {
	c := &cluster{b: b, name: name, exec: exec}
	m0, err := b.spawn(ctx, name+"-m0", c.dir(0), c.args("-init")...)
	if err != nil {
		return nil, err
	}
	c.mgrs = append(c.mgrs, m0)
	cl, err := m0.client()
	if err != nil {
		return nil, err
	}
	info, err := cl.Cluster(ctx)
	if err != nil {
		return nil, err
	}
	c.tokens = info.JoinTokens
	for i := 1; i < 3; i++ {
		m, err := b.spawn(ctx, fmt.Sprintf("%s-m%d", name, i), c.dir(i), c.args("-join", c.tokens.Manager, "-addr", m0.hello.Addr)...)
		if err != nil {
			return nil, err
		}
		c.mgrs = append(c.mgrs, m)
	}
	_, err = c.healthy(ctx)
	return c, err
}

// stop ends the managers.
func (c *cluster) stop() {
	for _, m := range c.mgrs {
		if m.alive() {
			m.stop()
		}
	}
}

// addrs are the live managers' addresses.
func (c *cluster) addrs() []string {
	var out []string
	for _, m := range c.mgrs {
		if m.alive() {
			out = append(out, m.hello.Addr)
		}
	}
	return out
}

// client is a control API client of the live managers, with the
// certificate of one of them.
func (c *cluster) client() (*swarm.Client, error) {
	for _, m := range c.mgrs {
		if m.alive() {
			conf, err := m.clientTLS()
			if err != nil {
				return nil, err
			}
			return &swarm.Client{Addrs: c.addrs(), TLS: conf}, nil
		}
	}
	return nil, errors.New("no manager alive")
}

// healthy waits until every manager runs, exactly one leads, three vote
// and, when the managers run tasks, their three nodes are ready; it
// returns the leader.
func (c *cluster) healthy(ctx context.Context) (*proc, error) {
	deadline := time.Now().Add(2 * time.Minute)
	var last error
	for time.Now().Before(deadline) {
		var leader *proc
		leaders := 0
		ok := true
		for _, m := range c.mgrs {
			st, err := m.status(ctx)
			if err != nil {
				ok, last = false, err
				break
			}
			if st.Leader {
				leaders++
				leader = m
				if st.Voters != len(c.mgrs) {
					ok, last = false, fmt.Errorf("%d voters", st.Voters)
				}
			}
		}
		if ok && leaders == 1 && c.exec {
			ok, last = c.nodesReady(ctx)
		} else if ok {
			ok, last = leaders == 1, fmt.Errorf("%d leaders", leaders)
		}
		if ok {
			return leader, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil, fmt.Errorf("cluster %s not healthy after 2 minutes: %v", c.name, last)
}

func (c *cluster) nodesReady(ctx context.Context) (bool, error) {
	cl, err := c.client()
	if err != nil {
		return false, err
	}
	for _, m := range c.mgrs {
		n, err := cl.Node(ctx, m.hello.ID)
		if err != nil {
			return false, err
		}
		if n.Status.State != api.NodeReady || n.Spec.Availability != api.NodeActive {
			return false, fmt.Errorf("node %s is %s, %s", m.name, n.Status.State, n.Spec.Availability)
		}
	}
	return true, nil
}

// setAvailability sets a node's availability, reading it again on a
// concurrent change.
func setAvailability(ctx context.Context, cl *swarm.Client, id string, a api.NodeAvailability) error {
	for range 10 {
		n, err := cl.Node(ctx, id)
		if err != nil {
			return err
		}
		spec := n.Spec
		spec.Availability = a
		_, err = cl.UpdateNode(ctx, id, n.Version, spec)
		if !errors.Is(err, raftstore.ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("node %s: availability: too many conflicts", id)
}

// serviceSpec is a service of fake tasks; zeroDelay replaces tasks at once
// instead of after the default restart delay (5 s, as Docker's).
func serviceSpec(name string, replicas int, zeroDelay bool) api.ServiceSpec {
	spec := api.ServiceSpec{Annotations: api.Annotations{Name: name}, Mode: api.Replicated(uint64(replicas)),
		TaskTemplate: api.TaskSpec{Image: "example/web:1"}}
	if zeroDelay {
		d := time.Duration(0)
		spec.TaskTemplate.RestartPolicy = &api.RestartPolicy{Condition: api.RestartAny, Delay: &d}
	}
	return spec
}

// runningOn counts a service's tasks RUNNING (and meant to) per node.
func runningOn(ctx context.Context, cl *swarm.Client, serviceID string) (map[string]int, int, error) {
	ts, err := cl.Tasks(ctx, swarm.Filter{Services: []string{serviceID}})
	if err != nil {
		return nil, 0, err
	}
	per := map[string]int{}
	total := 0
	for _, t := range ts {
		if t.Status.State == api.TaskRunning && t.DesiredState == api.TaskRunning {
			per[t.NodeID]++
			total++
		}
	}
	return per, total, nil
}

// waitRunning waits until n of a service's tasks run.
func waitRunning(ctx context.Context, cl *swarm.Client, serviceID string, n int) (map[string]int, error) {
	deadline := time.Now().Add(2 * time.Minute)
	var last error
	for time.Now().Before(deadline) {
		per, total, err := runningOn(ctx, cl, serviceID)
		if err == nil && total >= n {
			return per, nil
		}
		last = err
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil, fmt.Errorf("service %s: not %d running after 2 minutes (%v)", serviceID, n, last)
}

// removeService removes a service and waits until its tasks are gone.
func removeService(ctx context.Context, cl *swarm.Client, serviceID string) error {
	if err := cl.RemoveService(ctx, serviceID); err != nil && !errors.Is(err, swarm.ErrNotFound) {
		return err
	}
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		ts, err := cl.Tasks(ctx, swarm.Filter{Services: []string{serviceID}})
		if err == nil && len(ts) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("service %s: tasks still there a minute after its removal", serviceID)
}
