// Package stack deploys Compose v3 files to a Shoal cluster, as `docker
// stack deploy` deploys them to a Docker Swarm: the stack's services,
// overlay networks, secrets and configs are named NAME_KEY and labelled
// com.docker.stack.namespace=NAME, a redeploy updates them in place, and
// removing the stack removes exactly what carries its label.
//
// Load reads the files with compose-go (interpolating ${VAR},
// ${VAR:-default} and ${VAR:?message} from the caller's variables) and
// converts them to the API's specs, each checked with its Validate. Keys
// Shoal cannot honour are refused, all at once, naming each
// ("services.web.privileged: not supported by Shoal"); keys that only
// docker compose uses (build, container_name, depends_on ...) are ignored
// with a warning, as Docker ignores them. Deploy, Remove, List, Services
// and Tasks work through a Backend: the cluster's control API
// (*swarm.Client), or stacktest.FakeBackend in tests.
//
//	st, err := stack.Load(ctx, "web", []stack.File{{Name: "docker-compose.yml"}},
//		stack.Options{Env: stack.Environ(os.Environ())})
//	if err != nil {
//		return err // stack: services.web.deploy.replicas: variable REPLICAS is not set ...
//	}
//	for _, w := range st.Warnings {
//		fmt.Fprintln(os.Stderr, "warning:", w) // services.web.build: ignored: ...
//	}
//	actions, err := stack.Deploy(ctx, client, st, stack.DeployOptions{Prune: true})
//	for _, a := range actions {
//		fmt.Println(a) // Creating network web_default, Creating service web_web ...
//	}
package stack
