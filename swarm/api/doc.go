// Package api is Shoal's object model: nodes, services, tasks, networks,
// secrets, configs and the cluster, with their specs as in Docker Swarm mode.
//
// Every stored object embeds Meta (ID, version, timestamps). Specs have a
// Validate method that returns a *ValidationError listing every problem with
// its field path, so a user can fix a spec in one go:
//
//	spec := api.ServiceSpec{
//		Annotations:  api.Annotations{Name: "web"},
//		Mode:         api.Replicated(3),
//		TaskTemplate: api.TaskSpec{Image: "example/web:1.0"},
//	}
//	if err := spec.Validate(); err != nil {
//		log.Fatal(err) // invalid spec: spec.taskTemplate.image: is required ...
//	}
//
// Task states are ordered (TaskNew ... TaskOrphaned) and only move forward;
// CanTransition enforces it.
package api
