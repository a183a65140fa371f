package api_test

import (
	"fmt"

	"github.com/shoalproject/shoal/swarm/api"
)

func ExampleServiceSpec_Validate() {
	spec := api.ServiceSpec{
		Annotations: api.Annotations{Name: "web"},
		Mode:        api.Replicated(3),
		TaskTemplate: api.TaskSpec{
			Resources: &api.ResourceRequirements{Limits: &api.Resources{MemoryBytes: 1 << 20}},
		},
	}
	fmt.Println(spec.Validate())
	// Output: invalid spec: spec.taskTemplate.image: is required (for example example/web:1.0); spec.taskTemplate.resources.limits.memoryBytes: must be >= 4MiB, got 1048576 bytes
}
