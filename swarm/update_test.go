package swarm_test

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoalproject/shoal/swarm/api"
)

// update changes a service's image and update config (also used for
// rollbacks).
func (c *cluster) update(name, image string, cfg *api.UpdateConfig) {
	c.t.Helper()
	svc, err := c.m.Service(name)
	if err != nil {
		c.t.Fatal(err)
	}
	spec := svc.Spec
	spec.TaskTemplate.Image, spec.UpdateConfig = image, cfg
	if cfg != nil {
		rb := *cfg
		rb.FailureAction = api.ActionPause
		spec.RollbackConfig = &rb
	}
	if _, err := c.m.UpdateService(context.Background(), svc.ID, svc.Version, spec); err != nil {
		c.t.Fatal(err)
	}
}

// watchFloor samples the running tasks of a service until stop, and keeps
// the fewest seen.
func (c *cluster) watchFloor(serviceID string) (floor *atomic.Int64, stop func()) {
	floor = &atomic.Int64{}
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
			if n := int64(len(c.running(serviceID))); n < floor.Load() {
				floor.Store(n)
			}
		}
	}()
	return floor, func() { close(done); <-finished }
}

func (c *cluster) images(serviceID string) map[string]int {
	out := map[string]int{}
	for _, t := range c.running(serviceID) {
		out[t.Spec.Image]++
	}
	return out
}

func (c *cluster) updateState(name string) api.UpdateState {
	svc, err := c.m.Service(name)
	if err != nil || svc.UpdateStatus == nil {
		return ""
	}
	return svc.UpdateStatus.State
}

func TestRollingUpdateStopFirst(t *testing.T) {
	c := newCluster(t, 3)
	svc, err := c.m.CreateService(context.Background(), service("web", api.Replicated(4)))
	if err != nil {
		t.Fatal(err)
	}
	c.eventually("4 running", func() bool { return len(c.running(svc.ID)) == 4 })
	floor, stop := c.watchFloor(svc.ID)
	c.update("web", "example/web:2", &api.UpdateConfig{Parallelism: 2, Monitor: 100 * time.Millisecond})
	c.eventually("all on the new image", func() bool { return c.images(svc.ID)["example/web:2"] == 4 })
	c.eventually("update completed", func() bool { return c.updateState("web") == api.UpdateCompleted })
	stop()
	if f := floor.Load(); f < 2 {
		t.Fatalf("%d tasks running at one point; parallelism 2 of 4 keeps at least 2", f)
	}
	// Stop first: in every slot the new task came after the old one
	// stopped; and the new tasks came in steps of at most 2, a monitor
	// period apart.
	ts, _ := c.m.Tasks(svc.ID)
	var created []time.Time
	for _, nt := range ts {
		if nt.Spec.Image != "example/web:2" {
			continue
		}
		created = append(created, nt.CreatedAt)
		for _, ot := range ts {
			if ot.Slot == nt.Slot && ot.Spec.Image == "example/web:1" && ot.Status.Timestamp.After(nt.CreatedAt) {
				t.Fatalf("slot %d: new task created %v before the old one stopped %v", nt.Slot, nt.CreatedAt, ot.Status.Timestamp)
			}
		}
	}
	slices.SortFunc(created, time.Time.Compare)
	if len(created) != 4 || created[2].Sub(created[1]) < 100*time.Millisecond {
		t.Fatalf("new tasks created at %v: want two steps of 2, 100 ms apart", created)
	}
}

func TestRollingUpdateStartFirstKeepsEveryReplica(t *testing.T) {
	c := newCluster(t, 2)
	svc, err := c.m.CreateService(context.Background(), service("api", api.Replicated(2)))
	if err != nil {
		t.Fatal(err)
	}
	c.eventually("2 running", func() bool { return len(c.running(svc.ID)) == 2 })
	floor, stop := c.watchFloor(svc.ID)
	c.update("api", "example/api:2", &api.UpdateConfig{Parallelism: 1, Order: api.StartFirst, Monitor: 50 * time.Millisecond})
	c.eventually("both on the new image", func() bool { return c.images(svc.ID)["example/api:2"] == 2 })
	c.eventually("update completed", func() bool { return c.updateState("api") == api.UpdateCompleted })
	stop()
	if f := floor.Load(); f < 2 {
		t.Fatalf("start-first let the service drop to %d running", f)
	}
}

func TestFailedUpdateRollsBackOrPauses(t *testing.T) {
	c := newCluster(t, 3)
	ctx := context.Background()
	for _, name := range []string{"rb", "ps"} {
		if _, err := c.m.CreateService(ctx, service(name, api.Replicated(3))); err != nil {
			t.Fatal(err)
		}
	}
	rb, _ := c.m.Service("rb")
	ps, _ := c.m.Service("ps")
	c.eventually("both running", func() bool { return len(c.running(rb.ID)) == 3 && len(c.running(ps.ID)) == 3 })
	c.update("rb", badImage, &api.UpdateConfig{Parallelism: 1, Monitor: 100 * time.Millisecond, FailureAction: api.ActionRollback})
	c.update("ps", badImage, &api.UpdateConfig{Parallelism: 1, Monitor: 100 * time.Millisecond})
	start := time.Now()
	c.eventually("rollback completed", func() bool { return c.updateState("rb") == api.UpdateRollbackCompleted })
	t.Logf("failed update rolled back in %v", time.Since(start))
	c.eventually("the old image everywhere", func() bool { return c.images(rb.ID)["example/web:1"] == 3 })
	got, _ := c.m.Service("rb")
	if got.Spec.TaskTemplate.Image != "example/web:1" {
		t.Fatalf("spec after rollback: %s", got.Spec.TaskTemplate.Image)
	}
	c.eventually("update paused", func() bool { return c.updateState("ps") == api.UpdatePaused })
	t.Logf("failed update paused after %v", time.Since(start))
	// Paused: most tasks still run the old image; nothing more is replaced.
	time.Sleep(300 * time.Millisecond)
	if old := c.images(ps.ID)["example/web:1"]; old < 2 {
		ts, _ := c.m.Tasks(ps.ID)
		for _, tk := range ts {
			t.Logf("slot %d %s desired %s state %s created %v %s", tk.Slot, tk.Spec.Image, tk.DesiredState, tk.Status.State, tk.CreatedAt.Format("05.000"), tk.Status.Message)
		}
		svc, _ := c.m.Service("ps")
		t.Logf("status %+v", svc.UpdateStatus)
		t.Fatalf("paused update kept only %d old tasks running", old)
	}
}

func TestManualRollback(t *testing.T) {
	c := newCluster(t, 2)
	ctx := context.Background()
	svc, err := c.m.CreateService(ctx, service("rb", api.Replicated(2)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.m.RollbackService(ctx, svc.ID); !errors.Is(err, api.ErrInvalidSpec) {
		t.Fatalf("rollback of a service never updated: %v", err)
	}
	c.eventually("2 running", func() bool { return len(c.running(svc.ID)) == 2 })
	c.update("rb", "example/web:2", &api.UpdateConfig{Parallelism: 2, Monitor: 50 * time.Millisecond})
	c.eventually("updated", func() bool {
		return c.updateState("rb") == api.UpdateCompleted && c.images(svc.ID)["example/web:2"] == 2
	})
	if _, err := c.m.RollbackService(ctx, svc.ID); err != nil {
		t.Fatal(err)
	}
	c.eventually("rolled back", func() bool {
		return c.updateState("rb") == api.UpdateRollbackCompleted && c.images(svc.ID)["example/web:1"] == 2
	})
}
