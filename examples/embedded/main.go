// Command embedded is the smallest host program that embeds Shoal: it
// starts a one-node cluster on this machine's containerd and runs a
// service of two replicas until interrupted. Run as root, with containerd
// running:
//
//	go run ./examples/embedded
//
// The node keeps its state in /var/lib/shoal-embedded; a second run
// restarts it from there.
package main

import (
	"context"
	"errors"
	"log"
	"os/signal"
	"syscall"

	"github.com/shoalproject/shoal/agent/containerd"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context) error {
	executor := &containerd.Executor{Address: "/run/containerd/containerd.sock", Namespace: "shoal", StateDir: "/var/lib/shoal-embedded/agent"}
	if err := executor.Connect(ctx); err != nil {
		return err
	}
	node := &swarm.Node{Dir: "/var/lib/shoal-embedded", ListenAddr: "127.0.0.1:2377", Executor: executor}
	if err := node.StartOrInit(ctx); err != nil {
		return err
	}
	defer node.Shutdown(context.WithoutCancel(ctx))
	<-node.Ready()
	spec := api.ServiceSpec{Annotations: api.Annotations{Name: "web"}, Mode: api.Replicated(2), TaskTemplate: api.TaskSpec{Image: "docker.io/library/nginx:alpine"}}
	if _, err := node.Client().CreateService(ctx, spec); err != nil && !errors.Is(err, swarm.ErrNameInUse) {
		return err
	}
	<-ctx.Done()
	return nil
}
