package swarm_test

import (
	"context"
	"testing"

	"github.com/shoalproject/shoal/swarm/api"
)

func (c *cluster) states(serviceID string) map[api.TaskState]int {
	ts, _ := c.m.Tasks(serviceID)
	out := map[api.TaskState]int{}
	for _, t := range ts {
		out[t.Status.State]++
	}
	return out
}

func TestReplicatedJobRunsToCompletion(t *testing.T) {
	c := newCluster(t, 2)
	spec := service("migrate", api.ServiceMode{ReplicatedJob: &api.ReplicatedJob{MaxConcurrent: 2, TotalCompletions: 5}})
	spec.TaskTemplate.Image = onceImage
	spec.TaskTemplate.RestartPolicy = nil // jobs default to on-failure
	svc, err := c.m.CreateService(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	c.eventually("5 completions", func() bool { return c.states(svc.ID)[api.TaskComplete] == 5 })
	ts, _ := c.m.Tasks(svc.ID)
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
	svc, err := c.m.CreateService(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	c.eventually("first try and 2 retries failed", func() bool { return c.states(svc.ID)[api.TaskFailed] == 3 })
	for range 20 {
		if n := c.states(svc.ID)[api.TaskFailed]; n != 3 {
			t.Fatalf("%d failed tries; MaxAttempts 2 allows 3", n)
		}
	}
}

func TestGlobalJobRunsOncePerNode(t *testing.T) {
	c := newCluster(t, 2)
	spec := service("inventory", api.ServiceMode{GlobalJob: &api.GlobalJob{}})
	spec.TaskTemplate.Image = onceImage
	svc, err := c.m.CreateService(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	c.eventually("one completion per node", func() bool { return c.states(svc.ID)[api.TaskComplete] == 2 })
	c.join("late")
	c.eventually("the new node runs it too", func() bool { return c.states(svc.ID)[api.TaskComplete] == 3 })
	ts, _ := c.m.Tasks(svc.ID)
	if len(ts) != 3 {
		t.Fatalf("%d tasks, want 3", len(ts))
	}
}
