package dockerapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"

	"github.com/moby/moby/api/types/system"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/dockerapi"
)

// A node serves the Docker API on a unix socket; the docker CLI would
// use it with DOCKER_HOST=unix://SOCKET. Here a Go client asks what
// docker info asks.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "shoal-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	// A manager that also runs tasks (here on the fake executor), so it
	// is a node of the cluster as docker node ls lists them.
	node := &swarm.Node{Dir: filepath.Join(dir, "node"), ListenAddr: "127.0.0.1:0", Executor: &agent.FakeExecutor{}}
	if err := node.Init(ctx); err != nil {
		panic(err)
	}
	defer node.Close()
	<-node.Ready()

	h, err := dockerapi.ForNode(node)
	if err != nil {
		panic(err)
	}
	sock := filepath.Join(dir, "docker.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		panic(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	defer srv.Close()

	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	resp, err := client.Head("http://docker/_ping")
	if err != nil {
		panic(err)
	}
	resp.Body.Close()
	fmt.Println("API-Version:", resp.Header.Get("API-Version"), "Swarm:", resp.Header.Get("Swarm"))

	resp, err = client.Get("http://docker/v1.50/info")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	var info system.Info
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		panic(err)
	}
	fmt.Println("manager:", info.Swarm.ControlAvailable, "nodes:", info.Swarm.Nodes, "is this node:", info.Swarm.NodeID == node.ID())
	// Output:
	// API-Version: 1.50 Swarm: active/manager
	// manager: true nodes: 1 is this node: true
}
