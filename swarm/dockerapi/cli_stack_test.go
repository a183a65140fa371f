package dockerapi_test

import (
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/network"
	dswarm "github.com/moby/moby/api/types/swarm"

	"github.com/shoalproject/shoal/swarm/swarmtest"
)

// The docker CLIs drive networks, secrets, configs, services that use
// them, and stacks (which the CLI builds on those) on a Shoal cluster.
// The stack files are the ones Shoal's users learn Swarm from
// (testdata/stacks/README.md); the fake executors run any image name.

func TestDockerCLIObjects(t *testing.T) {
	bin := findCLI(t, dockerCLI28, "the docker CLI 28.2.2")
	if testing.Short() {
		t.Skip("a docker CLI session of about two minutes")
	}
	c := swarmtest.NewTLS(t, swarmtest.TLSOptions{Managers: 1, Workers: 1})
	e := serve(t, c, "m0")
	var script strings.Builder
	saveTranscript(t, "docker-28.2.2-objects", &script)
	d := newCLI(t, bin, e, &script)
	objectsSession(t, d)
	stacksSession(t, d, true)
}

func TestDockerCLIObjects20(t *testing.T) {
	bin := findCLI(t, dockerCLI20, "the docker.io package's CLI (20.10)")
	if testing.Short() {
		t.Skip("a docker CLI session of about a minute")
	}
	out, err := exec.CommandContext(context.Background(), bin, "--version").Output()
	if err != nil || !strings.Contains(string(out), "20.10") {
		t.Skipf("%s is not the 20.10 CLI (%q, %v)", bin, out, err)
	}
	c := swarmtest.NewTLS(t, swarmtest.TLSOptions{Managers: 1, Workers: 1})
	e := serve(t, c, "m0")
	var script strings.Builder
	saveTranscript(t, "docker-20.10-objects", &script)
	d := newCLI(t, bin, e, &script)
	objectsSession(t, d)
	stacksSession(t, d, false)
}

// objectsSession: networks, secrets and configs, and a service that uses
// them all.
func objectsSession(t *testing.T, d *dockerCLI) {
	frontID := strings.TrimSpace(d.ok("network", "create", "--driver", "overlay", "--attachable", "--internal", "--opt", "encrypted",
		"--subnet", "10.20.0.0/24", "--gateway", "10.20.0.254", "--label", "tier=front", "front"))
	d.ok("network", "create", "-d", "overlay", "back")
	ls := d.ok("network", "ls")
	mustContain(t, "network ls", ls, frontID[:12]+"   front     overlay   swarm", "back", "ingress")
	var nets []network.Inspect
	if err := json.Unmarshal([]byte(d.ok("network", "inspect", "front")), &nets); err != nil || len(nets) != 1 {
		t.Fatalf("network inspect: %v", err)
	}
	n := nets[0]
	if n.ID != frontID || n.Scope != "swarm" || !n.Attachable || !n.Internal || n.Labels["tier"] != "front" ||
		len(n.IPAM.Config) != 1 || n.IPAM.Config[0].Subnet.String() != "10.20.0.0/24" || n.IPAM.Config[0].Gateway.String() != "10.20.0.254" {
		t.Fatalf("network inspect: %+v", n)
	}
	if _, ok := n.Options["encrypted"]; !ok {
		t.Fatalf("network inspect: not encrypted: %v", n.Options)
	}
	mustContain(t, "network ls --filter", d.ok("network", "ls", "--filter", "label=tier=front", "--format", "{{.Name}}"), "front")
	if out := d.ok("network", "ls", "--filter", "type=custom", "--format", "{{.Name}}"); strings.Contains(out, "ingress") {
		t.Fatalf("network ls type=custom lists ingress:\n%s", out)
	}
	mustContain(t, "a bridge network", d.fails("network", "create", "local"),
		"not supported by Shoal: Driver (--driver bridge: Shoal's networks span the swarm and are overlay networks; use --driver overlay)")
	mustContain(t, "unsupported network options", d.fails("network", "create", "-d", "overlay", "--ipv6", "--subnet", "10.30.0.0/24", "--ip-range", "10.30.0.0/25",
		"--opt", "com.docker.network.driver.mtu=1400", "x"), "EnableIPv6 (--ipv6", "Options[com.docker.network.driver.mtu]")
	// An IP range and auxiliary addresses are kept, and shown back.
	d.ok("network", "create", "-d", "overlay", "--subnet", "10.31.0.0/24", "--ip-range", "10.31.0.128/25", "--aux-address", "printer=10.31.0.9", "ranged")
	mustContain(t, "network inspect of a range", d.ok("network", "inspect", "ranged", "--format", "{{json .IPAM.Config}}"),
		`"IPRange":"10.31.0.128/25"`, `"AuxiliaryAddresses":{"printer":"10.31.0.9"}`)
	d.ok("network", "rm", "ranged")
	// (The CLI refuses a range outside the subnet itself: "no matching
	// subnet for range"; the API's answer is in TestAPIObjects.)
	mustContain(t, "a name in use", d.fails("network", "create", "-d", "overlay", "front"), `network "front" exists`)
	// The 20.10 CLI says it itself on a 404, the 28 CLI gives the daemon's.
	if out := d.fails("network", "inspect", "nope"); !strings.Contains(out, "network nope not found") && !strings.Contains(out, "No such network: nope") {
		t.Fatalf("network inspect nope: %q", out)
	}

	// Secrets (from stdin) and configs (from a file).
	secretID := strings.TrimSpace(d.okIn("hunter2", "secret", "create", "--label", "env=prod", "dbpw", "-"))
	configFile := filepath.Join(t.TempDir(), "app.conf")
	writeFile(t, configFile, "port=80\n")
	d.ok("config", "create", "--label", "a=b", "app.conf", configFile)
	mustContain(t, "secret ls", d.ok("secret", "ls"), secretID, "dbpw")
	mustContain(t, "config ls", d.ok("config", "ls"), "app.conf")
	inspected := d.ok("secret", "inspect", "dbpw")
	mustContain(t, "secret inspect", inspected, secretID, `"env": "prod"`)
	if strings.Contains(inspected, "hunter2") || strings.Contains(inspected, "aHVudGVyMg") || strings.Contains(inspected, `"Data"`) {
		t.Fatalf("secret inspect shows the data:\n%s", inspected)
	}
	mustContain(t, "config inspect --pretty", d.ok("config", "inspect", "--pretty", "app.conf"), "Name:", "app.conf", "port=80")
	mustContain(t, "a template driver", d.fails("config", "create", "--template-driver", "golang", "tmpl", configFile),
		"not supported by Shoal: Templating (--template-driver")

	// A service on both networks, with the secret, the config and ports
	// published both ways.
	mustContain(t, "service create", d.ok("service", "create", "--name", "web", "--replicas", "2",
		"--network", "name=front,alias=www", "--network", "back",
		"--secret", "source=dbpw,target=db_password,mode=0400", "--config", "source=app.conf,target=/etc/app.conf",
		"--publish", "published=8080,target=80", "--publish", "mode=host,published=9090,target=90", testImage), "converged")
	var svcs []dswarm.Service
	if err := json.Unmarshal([]byte(d.ok("service", "inspect", "web")), &svcs); err != nil || len(svcs) != 1 {
		t.Fatalf("service inspect: %v", err)
	}
	s := svcs[0]
	cs := s.Spec.TaskTemplate.ContainerSpec
	targets := []string{}
	for _, n := range s.Spec.TaskTemplate.Networks {
		targets = append(targets, n.Target)
	}
	if !slices.Contains(targets, frontID) || len(targets) != 2 || len(cs.Secrets) != 1 || cs.Secrets[0].SecretID != secretID ||
		cs.Secrets[0].File.Name != "db_password" || cs.Secrets[0].File.Mode != 0o400 || len(cs.Configs) != 1 || cs.Configs[0].File.Name != "/etc/app.conf" {
		t.Fatalf("service inspect: networks %v, secrets %s, configs %s", targets, jsonString(cs.Secrets), jsonString(cs.Configs))
	}
	if p := s.Endpoint.Ports; len(p) != 2 || p[0].PublishMode != "ingress" || p[0].PublishedPort != 8080 || p[1].PublishMode != "host" || p[1].PublishedPort != 9090 {
		t.Fatalf("service inspect: ports %s", jsonString(p))
	}
	mustContain(t, "service inspect --pretty", d.ok("service", "inspect", "--pretty", "web"),
		"Networks:", " back", " front", "Secrets:", "Source:\tdbpw", "Configs:", "PublishMode = host")
	mustContain(t, "service ls", d.ok("service", "ls"), "web", "2/2", "*:8080->80/tcp")

	// What a service uses cannot go; the message names the service.
	mustContain(t, "network rm in use", d.fails("network", "rm", "front"), "network front is in use by service(s) web")
	mustContain(t, "secret rm in use", d.fails("secret", "rm", "dbpw"), "secret dbpw is in use by service(s) web")
	mustContain(t, "config rm in use", d.fails("config", "rm", "app.conf"), "config app.conf is in use by service(s) web")
	// Unless the service lets go of it.
	mustContain(t, "service update", d.ok("service", "update", "--network-rm", "front", "--secret-rm", "dbpw", "web"), "converged")
	d.ok("network", "rm", "front")
	d.ok("secret", "rm", "dbpw")
	d.ok("service", "rm", "web")
	d.ok("network", "rm", "back")
	d.ok("config", "rm", "app.conf")
	if out := d.ok("network", "ls", "-q"); strings.Count(strings.TrimSpace(out), "\n") != 0 {
		t.Fatalf("network ls after rm: want ingress alone:\n%s", out)
	}
	if out := d.ok("secret", "ls", "-q") + d.ok("config", "ls", "-q"); strings.TrimSpace(out) != "" {
		t.Fatalf("secrets and configs after rm: %q", out)
	}
}

// stacksSession deploys the stacks of testdata/stacks. With the 28 CLI
// (waits: docker stack deploy --detach=false) it also redeploys one with a
// new image under a rolling update.
func stacksSession(t *testing.T, d *dockerCLI, waits bool) {
	file := func(name string) string {
		p, err := filepath.Abs(filepath.Join("testdata", "stacks", name))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	deploy := []string{"stack", "deploy"}
	if waits {
		deploy = append(deploy, "--detach=false")
	}
	runningTasks := func(stack string) int {
		return strings.Count(d.ok("stack", "ps", "--filter", "desired-state=running", "--format", "{{.CurrentState}}", stack), "Running")
	}

	// An overlay network of its own, deploy labels, a published port.
	out := d.ok(append(deploy, "-c", file("seed-whoami.yml"), "whoami")...)
	mustContain(t, "stack deploy whoami", out, "Creating network whoami_test-net", "Creating service whoami_whoami")
	if waits {
		mustContain(t, "stack deploy whoami", out, "converged")
	}
	poll(t, "6 whoami tasks running", func() bool { return runningTasks("whoami") == 6 })
	mustContain(t, "stack services", d.ok("stack", "services", "whoami"), "whoami_whoami", "6/6", "training/whoami:latest", "*:81->8000/tcp")
	mustContain(t, "service labels", d.ok("service", "inspect", "--format", "{{json .Spec.Labels}}", "whoami_whoami"),
		`"app":"sample-app"`, `"com.docker.stack.namespace":"whoami"`, `"environment":"prod-south"`)
	mustContain(t, "update config", d.ok("service", "inspect", "--format", "{{.Spec.UpdateConfig.Parallelism}} {{.Spec.UpdateConfig.Delay}}", "whoami_whoami"), "2 10s")

	// Two services on one network, a named volume.
	mustContain(t, "stack deploy pets", d.ok(append(deploy, "-c", file("seed-pets.yml"), "pets")...), "Creating network pets_pets-net", "Creating service pets_web", "Creating service pets_db")
	poll(t, "4 pets tasks running", func() bool { return runningTasks("pets") == 4 })
	mustContain(t, "the named volume", d.ok("service", "inspect", "--format", "{{range .Spec.TaskTemplate.ContainerSpec.Mounts}}{{.Type}} {{.Source}} {{.Target}}{{end}}", "pets_db"),
		"volume pets_pets-data /var/lib/postgresql/data")

	// A default network, resources, a restart policy.
	d.ok(append(deploy, "-c", file("seed-web-5-replicas.yml"), "getstarted")...)
	poll(t, "5 getstarted tasks running", func() bool { return runningTasks("getstarted") == 5 })
	mustContain(t, "limits", d.ok("service", "inspect", "--format", "{{.Spec.TaskTemplate.Resources.Limits.NanoCPUs}} {{.Spec.TaskTemplate.Resources.Limits.MemoryBytes}} {{.Spec.TaskTemplate.RestartPolicy.Condition}}", "getstarted_web"),
		"100000000 52428800 on-failure")

	// A secret, a config and an attachable network; deployed again, the
	// service is updated in place and its tasks stay.
	out = d.ok(append(deploy, "-c", file("stack-secrets.yml"), "sec")...)
	mustContain(t, "stack deploy sec", out, "Creating network sec_back", "Creating secret sec_db_password", "Creating config sec_app_conf", "Creating service sec_app")
	poll(t, "2 sec tasks running", func() bool { return runningTasks("sec") == 2 })
	before := d.ok("stack", "ps", "-q", "sec")
	mustContain(t, "stack deploy sec again", d.ok(append(deploy, "-c", file("stack-secrets.yml"), "sec")...), "Updating service sec_app")
	if after := d.ok("stack", "ps", "-q", "sec"); after != before {
		t.Fatalf("deploying the same stack again replaced its tasks:\n%s\n%s", before, after)
	}
	mustContain(t, "the stack's secret", d.ok("secret", "ls", "--filter", "label=com.docker.stack.namespace=sec"), "sec_db_password")

	ls := d.ok("stack", "ls")
	mustContain(t, "stack ls", ls, "getstarted   1", "pets         2", "sec          1", "whoami       1")

	// Refused, and not deployed half-way.
	mustContain(t, "the misprinted file", d.fails("stack", "deploy", "-c", file("seed-pets-as-printed.yml"), "printed"), "networks.driver must be a mapping or null")
	saved := d.env
	d.env = append(slices.Clone(d.env), "WEBAPP_REPLICAS=5", "NGINX_REPLICAS=2")
	mustContain(t, "a service on the ingress network", d.fails("stack", "deploy", "-c", file("seed-prod-with-variables.yml"), "frontend"),
		"spec.taskTemplate.networks[0]: the ingress network is for published ports")
	d.env = saved
	if out := d.ok("stack", "ls"); out != ls {
		t.Fatalf("a refused stack left something:\n%s", out)
	}

	if waits {
		// A bind mount; then a new image with parallelism 2 and a 30 s
		// delay: two tasks change, then the third.
		d.ok(append(deploy, "-c", file("seed-httpd-v1.yml"), "httpd")...)
		poll(t, "3 httpd tasks running", func() bool { return runningTasks("httpd") == 3 })
		mustContain(t, "the bind mount", d.ok("service", "inspect", "--format", "{{range .Spec.TaskTemplate.ContainerSpec.Mounts}}{{.Type}} {{.Source}}{{end}}", "httpd_web"), "bind /var/www/html")
		mustContain(t, "stack deploy v2", d.ok("stack", "deploy", "--detach", "-c", file("seed-httpd-v2.yml"), "httpd"), "Updating service httpd_web")
		poll(t, "the rolling update to httpd:v2", func() bool {
			ps := d.ok("stack", "ps", "--filter", "desired-state=running", "--format", "{{.Image}} {{.CurrentState}}", "httpd")
			return strings.Count(ps, "httpd:v2 Running") == 3
		})
		mustContain(t, "service ps after the update", d.ok("service", "ps", "httpd_web"), `\_ httpd_web.1`, "httpd:v1", "Shutdown")
		poll(t, "the update completed", func() bool {
			return strings.TrimSpace(d.ok("service", "inspect", "--format", "{{.UpdateStatus.State}}", "httpd_web")) == "completed"
		})
	}

	// Remove them all: services, networks, the secret and config go.
	for _, st := range []string{"whoami", "pets", "getstarted", "sec", "httpd"} {
		if st == "httpd" && !waits {
			continue
		}
		mustContain(t, "stack rm "+st, d.ok("stack", "rm", st), "Removing service "+st+"_")
	}
	if out := d.ok("stack", "ls", "--format", "{{.Name}}"); strings.TrimSpace(out) != "" {
		t.Fatalf("stacks after stack rm: %q", out)
	}
	if out := d.ok("network", "ls", "--format", "{{.Name}}"); strings.TrimSpace(out) != "ingress" {
		t.Fatalf("networks after stack rm: %q", out)
	}
	if out := d.ok("secret", "ls", "-q") + d.ok("config", "ls", "-q"); strings.TrimSpace(out) != "" {
		t.Fatalf("secrets and configs after stack rm: %q", out)
	}

	// Deployed again at once: the new network takes a removed one's
	// subnet, and its tasks get addresses and run.
	d.ok(append(deploy, "-c", file("seed-pets.yml"), "pets")...)
	poll(t, "4 pets tasks running again", func() bool { return runningTasks("pets") == 4 })
	d.ok("stack", "rm", "pets")
}
