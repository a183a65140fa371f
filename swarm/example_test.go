package swarm_test

import (
	"context"
	"fmt"
	"time"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// A manager in memory and a worker on the fake executor run a service of
// three replicas.
func Example() {
	ctx := context.Background()
	m := &swarm.Manager{}
	if err := m.Start(ctx); err != nil {
		panic(err)
	}
	defer m.Close()
	<-m.Ready()
	w := &swarm.Worker{NodeID: "node1", Executor: &agent.FakeExecutor{}, Dispatcher: m}
	if err := w.Start(ctx); err != nil {
		panic(err)
	}
	defer w.Close()
	svc, err := m.CreateService(ctx, api.ServiceSpec{Annotations: api.Annotations{Name: "web"},
		Mode: api.Replicated(3), TaskTemplate: api.TaskSpec{Image: "example/web:1"}})
	if err != nil {
		panic(err)
	}
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		ts, _ := m.Tasks(svc.ID)
		running := 0
		for _, t := range ts {
			if t.Status.State == api.TaskRunning {
				running++
			}
		}
		if running == 3 {
			fmt.Println("web: 3 tasks running on", ts[0].NodeID)
			return
		}
	}
	fmt.Println("web did not converge")
	// Output: web: 3 tasks running on node1
}
