package stack_test

import (
	"context"
	"fmt"
	"log"

	"github.com/shoalproject/shoal/swarm/stack"
	"github.com/shoalproject/shoal/swarm/stack/stacktest"
)

func Example() {
	ctx := context.Background()
	compose := []byte(`
version: "3.8"
services:
  web:
    image: example/web:${TAG:-1.0}
    build: .
    ports:
      - "8080:80"
    deploy:
      replicas: 3
`)
	st, err := stack.Load(ctx, "shop", []stack.File{{Name: "compose.yml", Content: compose}}, stack.Options{})
	if err != nil {
		log.Fatal(err)
	}
	for _, w := range st.Warnings {
		fmt.Println("warning:", w)
	}
	cluster := &stacktest.FakeBackend{} // a *swarm.Client in a program
	actions, err := stack.Deploy(ctx, cluster, st, stack.DeployOptions{})
	if err != nil {
		log.Fatal(err)
	}
	for _, a := range actions {
		fmt.Println(a)
	}
	svc := st.Service("shop_web")
	fmt.Println(svc.TaskTemplate.Image, svc.Mode.Replicated.Replicas)
	// Output:
	// warning: services.web.build: ignored: stack deploy builds no image; the service runs its image:
	// Creating network shop_default
	// Creating service shop_web
	// example/web:1.0 3
}
