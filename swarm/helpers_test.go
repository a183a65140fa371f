package swarm_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/internal/waitfor"
	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/swarmtest"
)

// badImage's tasks fail as soon as they start.
const badImage = "example/bad:1"

// onceImage's tasks succeed as soon as they start.
const onceImage = "example/once:1"

// newCluster is the usual test cluster: one manager in memory and n
// workers whose executors know badImage and onceImage.
func newCluster(t *testing.T, workers int) *swarmtest.Cluster {
	t.Helper()
	return swarmtest.New(t, swarmtest.Options{Workers: workers, Executor: testImages})
}

func testImages(_ string, e *agent.FakeExecutor) {
	e.ExitCodes = map[string]int{badImage: 1, onceImage: 0}
}

func noDelay() *api.RestartPolicy {
	d := time.Duration(0)
	return &api.RestartPolicy{Condition: api.RestartAny, Delay: &d}
}

func service(name string, mode api.ServiceMode) api.ServiceSpec {
	return api.ServiceSpec{Annotations: api.Annotations{Name: name}, Mode: mode,
		TaskTemplate: api.TaskSpec{Image: "example/web:1", RestartPolicy: noDelay()}}
}

func create(t *testing.T, c *swarmtest.Cluster, spec api.ServiceSpec) *api.Service {
	t.Helper()
	svc, err := c.Leader().CreateService(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

func states(c *swarmtest.Cluster, serviceID string) map[api.TaskState]int {
	out := map[api.TaskState]int{}
	for _, t := range c.Tasks(serviceID) {
		out[t.Status.State]++
	}
	return out
}

func images(c *swarmtest.Cluster, serviceID string) map[string]int {
	out := map[string]int{}
	for _, t := range c.Running(serviceID) {
		out[t.Spec.Image]++
	}
	return out
}

func updateState(c *swarmtest.Cluster, name string) api.UpdateState {
	svc, err := c.Leader().Service(name)
	if err != nil || svc.UpdateStatus == nil {
		return ""
	}
	return svc.UpdateStatus.State
}

var probes atomic.Int64

// settle returns once the leader has reconciled every change committed
// before the call. It creates a probe service and waits for its task: the
// leader handles changes in commit order, so by then every pass that an
// earlier change asked for has committed what it decided. It lets a test
// check that something did not happen without sleeping.
func settle(t *testing.T, c *swarmtest.Cluster) {
	t.Helper()
	// Twice: a pass that a timer asked for (a restart delay or monitor
	// that had run out) comes after the first probe's pass at the latest.
	settleOnce(t, c)
	settleOnce(t, c)
}

func settleOnce(t *testing.T, c *swarmtest.Cluster) {
	t.Helper()
	ctx := context.Background()
	name := fmt.Sprint("probe-", probes.Add(1))
	spec := service(name, api.Replicated(1))
	spec.TaskTemplate.Placement = &api.Placement{Constraints: []string{"node.labels.probe==never"}} // never placed, never run
	svc := create(t, c, spec)
	c.WaitFor("the leader reconciled the probe "+name, func() bool { return len(c.Tasks(svc.ID)) > 0 })
	if err := c.Leader().RemoveService(ctx, svc.ID); err != nil {
		t.Fatal(err)
	}
}

// update changes a service's image and update config (also used for
// rollbacks).
func update(t *testing.T, c *swarmtest.Cluster, name, image string, cfg *api.UpdateConfig) {
	t.Helper()
	m := c.Leader()
	svc, err := m.Service(name)
	if err != nil {
		t.Fatal(err)
	}
	spec := svc.Spec
	spec.TaskTemplate.Image, spec.UpdateConfig = image, cfg
	if cfg != nil {
		rb := *cfg
		rb.FailureAction = api.ActionPause
		spec.RollbackConfig = &rb
	}
	if _, err := m.UpdateService(context.Background(), svc.ID, svc.Version, spec); err != nil {
		t.Fatal(err)
	}
}

// watchFloor samples the running tasks of a service until stop, and
// returns the fewest seen.
func watchFloor(c *swarmtest.Cluster, m *swarm.Manager, serviceID string) (stop func() int) {
	var floor atomic.Int64
	floor.Store(1 << 30)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-done:
				return
			case <-time.After(2 * time.Millisecond):
			}
			ts, err := m.Tasks(serviceID)
			if err != nil {
				continue
			}
			n := int64(0)
			for _, t := range ts {
				if t.Status.State == api.TaskRunning && t.DesiredState == api.TaskRunning {
					n++
				}
			}
			if n < floor.Load() {
				floor.Store(n)
			}
		}
	}()
	return func() int { close(done); <-finished; return int(floor.Load()) }
}

var netErrClosed = net.ErrClosed

func waitForWithin(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	waitfor.Within(t, d, what, cond)
}

// nodeEditor is a Manager or a Client.
type nodeEditor interface {
	UpdateNode(ctx context.Context, id string, version uint64, spec api.NodeSpec) (*api.Node, error)
}

// editNode changes a node's spec, reading it again when it changed in
// between (the allocator gives nodes their ingress address, say).
func editNode(t *testing.T, ed nodeEditor, get func(id string) (*api.Node, error), id string, change func(*api.NodeSpec)) {
	t.Helper()
	for {
		n, err := get(id)
		if err != nil {
			t.Fatal(err)
		}
		spec := n.Spec
		change(&spec)
		_, err = ed.UpdateNode(context.Background(), id, n.Version, spec)
		if err == nil {
			return
		}
		if !errors.Is(err, raftstore.ErrConflict) {
			t.Fatal(err)
		}
	}
}
