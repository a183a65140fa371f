package swarm_test

import (
	"testing"

	"github.com/shoalproject/shoal/swarm/api"
)

func TestReplicatedJobRunsToCompletion(t *testing.T) {
	c := newCluster(t, 2)
	spec := service("migrate", api.ServiceMode{ReplicatedJob: &api.ReplicatedJob{MaxConcurrent: 2, TotalCompletions: 5}})
	spec.TaskTemplate.Image = onceImage
	spec.TaskTemplate.RestartPolicy = nil // jobs default to on-failure
	svc := create(t, c, spec)
	c.WaitFor("5 completions", func() bool { return states(c, svc.ID)[api.TaskComplete] == 5 })
	settle(t, c)
	ts := c.Tasks(svc.ID)
	if len(ts) != 5 {
		t.Fatalf("%d tasks for 5 completions, want 5 (none run again)", len(ts))
	}
	slots := map[uint64]bool{}
	for _, tk := range ts {
		slots[tk.Slot] = true
	}
	if len(slots) != 5 {
		t.Fatalf("slots %v", slots)
	}
}

func TestFailingJobIsRetriedThenGivenUp(t *testing.T) {
	c := newCluster(t, 1)
	spec := service("flaky", api.ServiceMode{ReplicatedJob: &api.ReplicatedJob{MaxConcurrent: 1, TotalCompletions: 1}})
	spec.TaskTemplate.Image = badImage
	zero := spec.TaskTemplate.RestartPolicy.Delay
	spec.TaskTemplate.RestartPolicy = &api.RestartPolicy{Condition: api.RestartOnFailure, Delay: zero, MaxAttempts: 2}
	svc := create(t, c, spec)
	c.WaitFor("first try and 2 retries failed", func() bool { return states(c, svc.ID)[api.TaskFailed] == 3 })
	// With no restart delay, a fourth try would be made by the pass that
	// saw the third failure: once the leader has settled, it would exist.
	settle(t, c)
	if ts := c.Tasks(svc.ID); len(ts) != 3 || states(c, svc.ID)[api.TaskFailed] != 3 {
		t.Fatalf("%d tasks (%v); MaxAttempts 2 allows 3 tries", len(ts), states(c, svc.ID))
	}
}

func TestGlobalJobRunsOncePerNode(t *testing.T) {
	c := newCluster(t, 2)
	spec := service("inventory", api.ServiceMode{GlobalJob: &api.GlobalJob{}})
	spec.TaskTemplate.Image = onceImage
	svc := create(t, c, spec)
	c.WaitFor("one completion per node", func() bool { return states(c, svc.ID)[api.TaskComplete] == 2 })
	c.AddWorker("late")
	c.WaitFor("the new node runs it too", func() bool { return states(c, svc.ID)[api.TaskComplete] == 3 })
	settle(t, c)
	if ts := c.Tasks(svc.ID); len(ts) != 3 {
		t.Fatalf("%d tasks, want 3", len(ts))
	}
}
