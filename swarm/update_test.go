package swarm_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/shoalproject/shoal/swarm/api"
)

func TestRollingUpdateStopFirst(t *testing.T) {
	c := newCluster(t, 3)
	svc := create(t, c, service("web", api.Replicated(4)))
	c.WaitFor("4 running", func() bool { return len(c.Running(svc.ID)) == 4 })
	stop := watchFloor(c, c.Leader(), svc.ID)
	update(t, c, "web", "example/web:2", &api.UpdateConfig{Parallelism: 2, Monitor: 100 * time.Millisecond})
	c.WaitFor("all on the new image", func() bool { return images(c, svc.ID)["example/web:2"] == 4 })
	c.WaitFor("update completed", func() bool { return updateState(c, "web") == api.UpdateCompleted })
	if f := stop(); f < 2 {
		t.Fatalf("%d tasks running at one point; parallelism 2 of 4 keeps at least 2", f)
	}
	// Stop first: in every slot the new task came after the old one
	// stopped; and the new tasks came in steps of at most 2, a monitor
	// period apart.
	ts := c.Tasks(svc.ID)
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
	if len(created) != 4 {
		t.Fatalf("%d tasks of the new spec, want 4:\n%s", len(created), c.Dump())
	}
	// The second step starts once a task of the first has run for the
	// monitor period: after the first new task, at least 100 ms later.
	if created[2].Sub(created[0]) < 100*time.Millisecond {
		t.Fatalf("new tasks created at %v: want two steps of 2, the second 100 ms after the first began", created)
	}
}

func TestRollingUpdateStartFirstKeepsEveryReplica(t *testing.T) {
	c := newCluster(t, 2)
	svc := create(t, c, service("api", api.Replicated(2)))
	c.WaitFor("2 running", func() bool { return len(c.Running(svc.ID)) == 2 })
	stop := watchFloor(c, c.Leader(), svc.ID)
	update(t, c, "api", "example/api:2", &api.UpdateConfig{Parallelism: 1, Order: api.StartFirst, Monitor: 50 * time.Millisecond})
	c.WaitFor("both on the new image", func() bool { return images(c, svc.ID)["example/api:2"] == 2 })
	c.WaitFor("update completed", func() bool { return updateState(c, "api") == api.UpdateCompleted })
	if f := stop(); f < 2 {
		t.Fatalf("start-first let the service drop to %d running", f)
	}
}

func TestFailedUpdateRollsBackOrPauses(t *testing.T) {
	c := newCluster(t, 3)
	rb := create(t, c, service("rb", api.Replicated(3)))
	ps := create(t, c, service("ps", api.Replicated(3)))
	c.WaitFor("both running", func() bool { return len(c.Running(rb.ID)) == 3 && len(c.Running(ps.ID)) == 3 })
	update(t, c, "rb", badImage, &api.UpdateConfig{Parallelism: 1, Monitor: 100 * time.Millisecond, FailureAction: api.ActionRollback})
	update(t, c, "ps", badImage, &api.UpdateConfig{Parallelism: 1, Monitor: 100 * time.Millisecond})
	took := c.WaitFor("rollback completed", func() bool { return updateState(c, "rb") == api.UpdateRollbackCompleted })
	t.Logf("failed update rolled back in %v", took)
	c.WaitFor("the old image everywhere", func() bool { return images(c, rb.ID)["example/web:1"] == 3 })
	if got, _ := c.Leader().Service("rb"); got.Spec.TaskTemplate.Image != "example/web:1" {
		t.Fatalf("spec after rollback: %s", got.Spec.TaskTemplate.Image)
	}
	c.WaitFor("update paused", func() bool { return updateState(c, "ps") == api.UpdatePaused })
	// Paused after the first slot failed: the leader replaces nothing
	// more, so once it has settled the other two slots still run the old
	// image (the failing slot keeps retrying the new one).
	settle(t, c)
	if old := images(c, ps.ID)["example/web:1"]; old != 2 {
		t.Fatalf("paused update kept %d old tasks running, want 2:\n%s", old, c.Dump())
	}
	for _, tk := range c.Tasks(ps.ID) {
		if tk.Spec.Image == "example/web:1" && tk.DesiredState != api.TaskRunning && tk.Slot != failingSlot(c, ps.ID) {
			t.Fatalf("paused update stopped slot %d's old task:\n%s", tk.Slot, c.Dump())
		}
	}
}

// failingSlot is the slot whose task runs (or tried) the new image.
func failingSlot(c interface{ Tasks(string) []*api.Task }, serviceID string) uint64 {
	for _, tk := range c.Tasks(serviceID) {
		if tk.Spec.Image == badImage {
			return tk.Slot
		}
	}
	return 0
}

func TestManualRollback(t *testing.T) {
	c := newCluster(t, 2)
	ctx := context.Background()
	svc := create(t, c, service("rb", api.Replicated(2)))
	if _, err := c.Leader().RollbackService(ctx, svc.ID); !errors.Is(err, api.ErrInvalidSpec) {
		t.Fatalf("rollback of a service never updated: %v", err)
	}
	c.WaitFor("2 running", func() bool { return len(c.Running(svc.ID)) == 2 })
	update(t, c, "rb", "example/web:2", &api.UpdateConfig{Parallelism: 2, Monitor: 50 * time.Millisecond})
	c.WaitFor("updated", func() bool {
		return updateState(c, "rb") == api.UpdateCompleted && images(c, svc.ID)["example/web:2"] == 2
	})
	if _, err := c.Leader().RollbackService(ctx, svc.ID); err != nil {
		t.Fatal(err)
	}
	c.WaitFor("rolled back", func() bool {
		return updateState(c, "rb") == api.UpdateRollbackCompleted && images(c, svc.ID)["example/web:1"] == 2
	})
}
