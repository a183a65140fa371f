package shoal_test

import (
	"context"
	"fmt"

	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm/api"
)

// Example keeps a service in a single-member replicated store, the way a
// manager does.
func Example() {
	ctx := context.Background()
	schema := &raftstore.Schema{Tables: []raftstore.Table{
		{Name: "services", New: func() raftstore.Object { return &api.Service{} }},
	}}
	store := &raftstore.Store{ID: "m1", Schema: schema, Transport: raftstore.NewMemNetwork().Transport("m1"),
		Bootstrap: []raftstore.Server{{ID: "m1", Address: "m1", Voter: true}}}
	if err := store.Start(ctx); err != nil {
		panic(err)
	}
	defer store.Close()
	<-store.Ready()

	svc := &api.Service{Meta: api.Meta{ID: "svc1"}, Spec: api.ServiceSpec{
		Annotations:  api.Annotations{Name: "web"},
		Mode:         api.Replicated(3),
		TaskTemplate: api.TaskSpec{Image: "example/web:1.0"},
	}}
	if err := svc.Spec.Validate(); err != nil {
		panic(err)
	}
	if err := store.Update(ctx, func(tx *raftstore.Tx) error { return tx.Create("services", svc) }); err != nil {
		panic(err)
	}
	store.View(func(tx *raftstore.ReadTx) error {
		got, _ := tx.Get("services", "svc1")
		s := got.(*api.Service)
		fmt.Println(s.Spec.Name, s.Spec.Mode.Replicated.Replicas, s.Version > 0)
		return nil
	})
	// Output: web 3 true
}
