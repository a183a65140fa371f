// Package dockerapi serves the swarm part of the Docker Engine API over a
// Shoal cluster, so that the stock docker CLI drives it: docker info,
// swarm inspect/update/join-token/unlock-key, node ls/inspect/update/
// promote/demote/rm/ps, service create/ls/ps/inspect/scale/update/
// rollback/rm (with the progress display, which polls tasks), network
// create/ls/inspect/rm, secret and config create/ls/inspect/rm, stack
// deploy/ls/ps/services/rm (which the CLI does with those), and events.
// Types are Docker's own (github.com/moby/moby/api); the CLI negotiates
// an API version between MinAPIVersion and MaxAPIVersion.
//
// Docker's service spec is converted to Shoal's and back
// (ServiceSpecFromDocker, ServiceSpecToDocker): what Shoal cannot
// represent (a TTY, extra groups, DNS options, capabilities, ...) is
// refused with every such field named (*UnsupportedFieldsError), never
// dropped, and Shoal's own validation answers with its field paths.
// Networks are Shoal's overlay networks (docker network create
// --driver overlay; IPv6, other IPAM drivers, IP ranges and driver
// options but encrypted are refused by name); a secret's data never comes
// back. Calls outside the swarm subset (docker run, images, volumes)
// answer 501 "not supported by Shoal". Service and task logs (docker
// service logs) come from the nodes through the leader, as the stdcopy
// stream dockerd writes (see logs.go).
//
// Serve a node's API on a unix socket:
//
//	h, err := dockerapi.ForNode(node) // a started *swarm.Node
//	if err != nil { ... }
//	ln, err := net.Listen("unix", "/run/shoal/docker.sock")
//	if err != nil { ... }
//	go http.Serve(ln, h)
//	// DOCKER_HOST=unix:///run/shoal/docker.sock docker service ls
//
// The handler does no authentication of its own: serve it on a unix
// socket with the right permissions, or on TCP with mutual TLS, where the
// cluster's root CA vouches for the server and a client must present a
// manager certificate of the cluster:
//
//	hosts, err := dockerapi.Hosts(":2376") // what clients dial
//	cfg, err := dockerapi.NodeTLSConfig(node, hosts...)
//	ln, err := dockerapi.ListenTLS(ctx, ":2376", cfg)
//	srv := dockerapi.NewServer(h)
//	go srv.Serve(ln)
//	// DOCKER_HOST=tcp://HOST:2376 DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH=DIR
//	// (DIR: ca.pem, the cluster's root; cert.pem and key.pem, a manager
//	// certificate the root issued) docker service ls
package dockerapi
