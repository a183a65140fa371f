package stack_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/stack"
)

// A file with every key Shoal supports.
const fullFile = `
version: "3.9"
services:
  api:
    image: example/api:${TAG:-1.4}
    entrypoint: ["/bin/api"]
    command: serve --port 8080
    environment:
      MODE: production
      FROM_ENV:
    env_file: api.env
    labels:
      tier: backend
    user: "1000:1000"
    working_dir: /srv
    hostname: api-host
    read_only: true
    init: true
    stop_signal: SIGINT
    stop_grace_period: 20s
    platform: linux/arm64
    tmpfs:
      - /run
    healthcheck:
      test: ["CMD", "/bin/api", "health"]
      interval: 10s
      timeout: 2s
      retries: 4
      start_period: 30s
    logging:
      driver: json-file
      options:
        max-size: 10m
    networks:
      front:
        aliases: [api-alias]
      back:
    ports:
      - target: 8080
        published: 80
        protocol: tcp
        mode: host
        name: http
      - "53:53/udp"
      - "9090"
    secrets:
      - db_password
      - source: tls_key
        target: server.key
        uid: "100"
        gid: "101"
        mode: 0400
      - source: from_env
        target: /run/secrets/token
    configs:
      - source: app_conf
        target: /etc/api/app.conf
        mode: 0440
      - shared_conf
    volumes:
      - type: bind
        source: ./data
        target: /data
        read_only: true
      - type: volume
        source: cache
        target: /cache
        volume:
          nocopy: true
      - type: tmpfs
        target: /scratch
        tmpfs:
          size: 64m
      - /anonymous
    deploy:
      mode: replicated
      replicas: 4
      endpoint_mode: vip
      labels:
        com.example.team: core
      resources:
        limits:
          cpus: "1.5"
          memory: 512M
          pids: 200
        reservations:
          cpus: "0.25"
          memory: 128M
          generic_resources:
            - discrete_resource_spec:
                kind: gpu
                value: 2
      restart_policy:
        condition: any
        delay: 5s
        max_attempts: 3
        window: 2m
      update_config:
        parallelism: 2
        delay: 10s
        failure_action: rollback
        monitor: 30s
        max_failure_ratio: 0.25
        order: start-first
      rollback_config:
        parallelism: 0
        failure_action: pause
        order: stop-first
      placement:
        constraints:
          - node.role == worker
          - node.labels.zone==east
        preferences:
          - spread: node.labels.rack
        max_replicas_per_node: 2
  agent:
    image: example/agent
    restart: unless-stopped
    deploy:
      mode: global
      endpoint_mode: dnsrr
  migrate:
    image: example/migrate
    deploy:
      mode: replicated-job
      replicas: 2
  dns:
    image: example/dns
    ports:
      - target: 53
        published: 5353
        protocol: udp
        mode: host
    deploy:
      endpoint_mode: dnsrr
networks:
  front:
    attachable: true
    driver_opts:
      encrypted: ""
    ipam:
      config:
        - subnet: 10.20.0.0/24
          gateway: 10.20.0.1
          ip_range: 10.20.0.128/25
          aux_addresses:
            printer: 10.20.0.9
  back:
    driver: overlay
    internal: true
    name: shared-back
    labels:
      purpose: db
  outside:
    external:
      name: corp-net
volumes:
  cache:
secrets:
  db_password:
    file: ./db_password.txt
  tls_key:
    external: true
  from_env:
    environment: API_TOKEN
configs:
  app_conf:
    file: ./app.conf
    labels:
      v: "1"
  shared_conf:
    external: true
    name: corp-shared
x-common: &common
  anything: goes
`

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func loadFull(t *testing.T, env map[string]string) (*stack.Stack, error) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"api.env":         "FROM_FILE=yes\nMODE=overridden-by-environment\n",
		"db_password.txt": "s3cret",
		"app.conf":        "level=debug\n",
		"compose.yml":     fullFile,
	})
	return stack.Load(context.Background(), "full", []stack.File{{Name: filepath.Join(dir, "compose.yml")}},
		stack.Options{Env: env})
}

func TestLoadEverySupportedKey(t *testing.T) {
	env := map[string]string{"FROM_ENV": "from-the-caller", "API_TOKEN": "tok"}
	st, err := loadFull(t, env)
	if err != nil {
		t.Fatal(err)
	}
	api1 := svc(t, st, "full_api")
	tt := api1.TaskTemplate
	eq(t, "image", tt.Image, "example/api:1.4")
	eqs(t, "command (entrypoint)", tt.Command, []string{"/bin/api"})
	eqs(t, "args (command)", tt.Args, []string{"serve", "--port", "8080"})
	eqs(t, "env", tt.Env, []string{"FROM_ENV=from-the-caller", "FROM_FILE=yes", "MODE=production"})
	eq(t, "container label", tt.Labels["tier"], "backend")
	eq(t, "user", tt.User, "1000:1000")
	eq(t, "dir", tt.Dir, "/srv")
	eq(t, "hostname", tt.Hostname, "api-host")
	eq(t, "read only", tt.ReadOnly, true)
	eq(t, "init", *tt.Init, true)
	eq(t, "stop signal", tt.StopSignal, "SIGINT")
	eq(t, "stop grace", *tt.StopGracePeriod, 20*time.Second)
	eq(t, "health", strings.Join(tt.Healthcheck.Test, " "), "CMD /bin/api health")
	eq(t, "health timing", [4]time.Duration{tt.Healthcheck.Interval, tt.Healthcheck.Timeout, tt.Healthcheck.StartPeriod, time.Duration(tt.Healthcheck.Retries)},
		[4]time.Duration{10 * time.Second, 2 * time.Second, 30 * time.Second, 4})
	eq(t, "log driver", tt.LogDriver.Name, "json-file")
	eq(t, "log option", tt.LogDriver.Options["max-size"], "10m")
	eqs(t, "networks", targets(api1), []string{"full_front(api-alias,api)", "shared-back(api)"})
	eqs(t, "ports", ports(api1), []string{"80/8080/tcp/host", "53/53/udp/ingress", "0/9090/tcp/ingress"})
	eq(t, "port name", api1.EndpointSpec.Ports[0].Name, "http")
	eq(t, "endpoint mode", api1.EndpointSpec.Mode, api.EndpointVIP)

	eq(t, "secrets", len(tt.Secrets), 3)
	eq(t, "secret 0", tt.Secrets[0], api.SecretReference{SecretName: "full_db_password", File: api.FileTarget{Name: "db_password", UID: "0", GID: "0", Mode: 0o444}})
	eq(t, "secret 1", tt.Secrets[1], api.SecretReference{SecretName: "tls_key", File: api.FileTarget{Name: "server.key", UID: "100", GID: "101", Mode: 0o400}})
	eq(t, "secret 2", tt.Secrets[2], api.SecretReference{SecretName: "full_from_env", File: api.FileTarget{Name: "token", UID: "0", GID: "0", Mode: 0o444}})
	eq(t, "configs", len(tt.Configs), 2)
	eq(t, "config 0", tt.Configs[0], api.ConfigReference{ConfigName: "full_app_conf", File: api.FileTarget{Name: "/etc/api/app.conf", UID: "0", GID: "0", Mode: 0o440}})
	eq(t, "config 1", tt.Configs[1], api.ConfigReference{ConfigName: "corp-shared", File: api.FileTarget{Name: "/shared_conf", UID: "0", GID: "0", Mode: 0o444}})

	eq(t, "mounts", len(tt.Mounts), 5)
	if m := tt.Mounts[0]; m.Type != api.MountBind || !filepath.IsAbs(m.Source) || filepath.Base(m.Source) != "data" || m.Target != "/data" || !m.ReadOnly {
		t.Errorf("bind mount %+v", m)
	}
	eq(t, "volume mount", tt.Mounts[1], api.Mount{Type: api.MountVolume, Source: "full_cache", Target: "/cache", NoCopy: true})
	eq(t, "tmpfs mount", tt.Mounts[2], api.Mount{Type: api.MountTmpfs, Target: "/scratch", TmpfsSizeBytes: 64 << 20})
	eq(t, "anonymous volume", tt.Mounts[3], api.Mount{Type: api.MountVolume, Target: "/anonymous"})
	eq(t, "service tmpfs", tt.Mounts[4], api.Mount{Type: api.MountTmpfs, Target: "/run"})

	eq(t, "replicas", replicas(t, api1), 4)
	eq(t, "service label", api1.Labels["com.example.team"], "core")
	eq(t, "limits", [3]int64{tt.Resources.Limits.NanoCPUs, tt.Resources.Limits.MemoryBytes, tt.Resources.Limits.Pids}, [3]int64{1_500_000_000, 512 << 20, 200})
	eq(t, "reservation cpu", tt.Resources.Reservations.NanoCPUs, 250_000_000)
	eq(t, "reservation memory", tt.Resources.Reservations.MemoryBytes, 128<<20)
	eqs(t, "generic", tt.Resources.Reservations.Generic, []api.GenericResource{{Kind: "gpu", Value: 2}})
	delay := 5 * time.Second
	eq(t, "restart", tt.RestartPolicy.Condition, api.RestartAny)
	eq(t, "restart delay", *tt.RestartPolicy.Delay, delay)
	eq(t, "restart attempts", tt.RestartPolicy.MaxAttempts, 3)
	eq(t, "restart window", tt.RestartPolicy.Window, 2*time.Minute)
	eq(t, "update", *api1.UpdateConfig, api.UpdateConfig{Parallelism: 2, Delay: 10 * time.Second, FailureAction: api.ActionRollback,
		Monitor: 30 * time.Second, MaxFailureRatio: 0.25, Order: api.StartFirst})
	eq(t, "rollback", *api1.RollbackConfig, api.UpdateConfig{Parallelism: 0, FailureAction: api.ActionPause, Order: api.StopFirst})
	eqs(t, "constraints", tt.Placement.Constraints, []string{"node.role == worker", "node.labels.zone==east"})
	eqs(t, "preferences", tt.Placement.Preferences, []api.PlacementPreference{{Spread: "node.labels.rack"}})
	eq(t, "max per node", tt.Placement.MaxReplicas, 2)
	eqs(t, "platforms", tt.Placement.Platforms, []api.Platform{{OS: "linux", Architecture: "arm64"}})

	agent := svc(t, st, "full_agent")
	if !agent.Mode.IsGlobal() || agent.Mode.Global == nil {
		t.Errorf("agent mode %+v", agent.Mode)
	}
	eq(t, "agent endpoint", agent.EndpointSpec.Mode, api.EndpointDNSRR)
	eq(t, "restart: unless-stopped", agent.TaskTemplate.RestartPolicy.Condition, api.RestartAny)
	migrate := svc(t, st, "full_migrate")
	eq(t, "job", *migrate.Mode.ReplicatedJob, api.ReplicatedJob{MaxConcurrent: 2, TotalCompletions: 2})

	eqs(t, "networks", networkNames(st), []string{"full_default", "full_front", "shared-back"})
	front, back := st.Network("full_front"), st.Network("shared-back")
	if !front.Attachable || !front.Encrypted || front.Internal || !reflect.DeepEqual(*front.IPAM, api.IPAMConfig{Subnet: "10.20.0.0/24", Gateway: "10.20.0.1", IPRange: "10.20.0.128/25", AuxAddresses: map[string]string{"printer": "10.20.0.9"}}) {
		t.Errorf("front %+v", front)
	}
	if !back.Internal || back.Labels["purpose"] != "db" || back.Labels[stack.LabelNamespace] != "full" {
		t.Errorf("back %+v", back)
	}
	eqs(t, "external networks", st.ExternalNetworks, nil) // declared, but used by no service
	eqs(t, "external secrets", st.ExternalSecrets, []string{"tls_key"})
	eqs(t, "external configs", st.ExternalConfigs, []string{"corp-shared"})
	eq(t, "secrets", len(st.Secrets), 2)
	eq(t, "secret data", string(st.Secrets[0].Data), "s3cret")
	eq(t, "secret name", st.Secrets[0].Name, "full_db_password")
	eq(t, "env secret", string(st.Secrets[1].Data), "tok")
	eq(t, "configs", len(st.Configs), 1)
	eq(t, "config", st.Configs[0].Name+"="+string(st.Configs[0].Data), "full_app_conf=level=debug\n")
	eq(t, "config label", st.Configs[0].Labels["v"], "1")

	var warnings []string
	for _, w := range st.Warnings {
		warnings = append(warnings, w.String())
	}
	eqs(t, "warnings", warnings, []string{"services.agent.restart: converted to deploy.restart_policy (condition: any)"})
	if err := st.Validate(); err != nil {
		t.Fatal(err)
	}

	// The secret from a variable needs it.
	_, err = loadFull(t, map[string]string{})
	if !errors.Is(err, stack.ErrMissingVariable) || !strings.Contains(err.Error(), "secrets.from_env.environment: variable API_TOKEN is not set") {
		t.Errorf("without API_TOKEN: %v", err)
	}
}

func TestLoadSeveralFilesOverride(t *testing.T) {
	base := "services:\n  web:\n    image: web:1\n    deploy:\n      replicas: 2\n"
	override := "services:\n  web:\n    image: web:2\n  worker:\n    image: worker:1\n"
	st, err := stack.Load(context.Background(), "s", []stack.File{{Name: "a.yml", Content: []byte(base)}, {Name: "b.yml", Content: []byte(override)}}, stack.Options{})
	if err != nil {
		t.Fatal(err)
	}
	web := svc(t, st, "s_web")
	eq(t, "image", web.TaskTemplate.Image, "web:2")
	eq(t, "replicas", replicas(t, web), 2)
	svc(t, st, "s_worker")
}

func TestLoadInterpolation(t *testing.T) {
	const file = `
services:
  web:
    image: "${IMAGE:-nginx}:${TAG-latest}"
    environment:
      - PLAIN=${PLAIN}
      - DOLLAR=$$HOME
      - EMPTY_DEFAULT=${EMPTY:-fallback}
      - EMPTY_KEPT=${EMPTY-kept}
      - SET_ALT=${PLAIN:+alt}
    deploy:
      replicas: ${REPLICAS:-2}
`
	t.Run("defaults", func(t *testing.T) {
		st := mustLoad(t, "i", file, map[string]string{"EMPTY": ""})
		web := svc(t, st, "i_web")
		eq(t, "image", web.Labels[stack.LabelImage], "nginx:latest")
		eqs(t, "env", web.TaskTemplate.Env, []string{"DOLLAR=$HOME", "EMPTY_DEFAULT=fallback", "EMPTY_KEPT=", "PLAIN=", "SET_ALT="})
		eq(t, "replicas", replicas(t, web), 2)
		// Docker's warning for a variable that is not set.
		if len(st.Warnings) != 1 || st.Warnings[0].String() != `The "PLAIN" variable is not set. Defaulting to a blank string.` {
			t.Errorf("warnings %v", st.Warnings)
		}
	})
	t.Run("set", func(t *testing.T) {
		st := mustLoad(t, "i", file, map[string]string{"IMAGE": "httpd", "TAG": "2.4", "PLAIN": "p", "REPLICAS": "7"})
		web := svc(t, st, "i_web")
		eq(t, "image", web.Labels[stack.LabelImage], "httpd:2.4")
		eq(t, "mapped image", web.TaskTemplate.Image, testImage("httpd:2.4"))
		eqs(t, "env", web.TaskTemplate.Env, []string{"DOLLAR=$HOME", "EMPTY_DEFAULT=fallback", "EMPTY_KEPT=kept", "PLAIN=p", "SET_ALT=alt"})
		eq(t, "replicas", replicas(t, web), 7)
		if len(st.Warnings) != 0 {
			t.Errorf("warnings %v", st.Warnings)
		}
	})
	t.Run("required", func(t *testing.T) {
		_, err := load(t, "i", "services:\n  web:\n    image: \"app:${TAG:?set TAG to the release}\"\n", nil)
		if !errors.Is(err, stack.ErrMissingVariable) {
			t.Fatalf("err = %v", err)
		}
		eq(t, "error", err.Error(), "stack: variable not set: services.web.image: required variable TAG is missing a value: set TAG to the release")
		_, err = load(t, "i", "services:\n  web:\n    image: \"app:${TAG:?}\"\n", map[string]string{"TAG": ""})
		if !errors.Is(err, stack.ErrMissingVariable) || !strings.Contains(err.Error(), "required variable TAG is missing a value") {
			t.Fatalf("empty TAG with :? gave %v", err)
		}
		st := mustLoad(t, "i", "services:\n  web:\n    image: \"app:${TAG?}\"\n", map[string]string{"TAG": ""})
		eq(t, "image", svc(t, st, "i_web").Labels[stack.LabelImage], "app:")
	})
	t.Run("unset where a number is needed", func(t *testing.T) {
		_, err := load(t, "i", "services:\n  web:\n    image: nginx\n    deploy:\n      replicas: ${REPLICAS}\n", nil)
		if !errors.Is(err, stack.ErrMissingVariable) {
			t.Fatalf("err = %v", err)
		}
		eq(t, "error", err.Error(), "stack: variable not set: services.web.deploy.replicas: variable REPLICAS is not set, and the key needs a value (set it, or write ${REPLICAS:-default})")
	})
	t.Run("bad value", func(t *testing.T) {
		_, err := load(t, "i", "services:\n  web:\n    image: nginx\n    deploy:\n      replicas: ${REPLICAS}\n", map[string]string{"REPLICAS": "many"})
		if !errors.Is(err, stack.ErrInvalidFile) || !strings.Contains(err.Error(), "services.web.deploy.replicas") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("bad template", func(t *testing.T) {
		_, err := load(t, "i", "services:\n  web:\n    image: \"nginx:${\"\n", nil)
		if !errors.Is(err, stack.ErrInvalidFile) || !strings.Contains(err.Error(), "invalid interpolation format for services.web.image") {
			t.Fatalf("err = %v", err)
		}
	})
}

// Keys Shoal cannot honour are refused, each named with its service, all
// at once; nothing is loaded.
func TestLoadUnsupportedKeys(t *testing.T) {
	cases := []struct {
		name, file string
		want       []string
	}{
		{"service keys", `
services:
  web:
    image: nginx
    privileged: true
    cap_add: [NET_ADMIN]
    network_mode: host
    deploy:
      resources:
        reservations:
          devices:
            - capabilities: [gpu]
    ports:
      - "127.0.0.1:8080:80"
  db:
    image: postgres
    mem_limit: 1g
    extends:
      service: web
`, []string{
			"services.db.extends: not supported by Shoal (Docker's stack deploy refuses it too",
			"services.db.mem_limit: not supported by Shoal (use deploy.resources.limits.memory)",
			"services.web.cap_add: not supported by Shoal",
			"services.web.deploy.resources.reservations.devices: not supported by Shoal (use deploy.resources.reservations.generic_resources)",
			"services.web.network_mode: not supported by Shoal",
			"services.web.ports[].host_ip: not supported by Shoal",
			"services.web.privileged: not supported by Shoal",
		}},
		{"values", `
services:
  web:
    image: nginx
    ports:
      - target: 80
        published: "8000-8010"
    secrets:
      - source: s
        target: /etc/s
    volumes:
      - type: npipe
        source: x
        target: /x
    tmpfs:
      - /run:size=10m
networks:
  default:
    driver: bridge
    driver_opts:
      com.docker.network.driver.mtu: "1400"
    ipam:
      driver: dhcp
      config:
        - subnet: 10.0.0.0/24
        - subnet: 10.0.1.0/24
volumes:
  v:
    driver: nfs
secrets:
  s:
    file: ./s
`, []string{
			`networks.default.driver: "bridge" is not supported by Shoal`,
			"networks.default.driver_opts.com.docker.network.driver.mtu: not supported by Shoal",
			`networks.default.ipam.driver: "dhcp" is not supported by Shoal`,
			"networks.default.ipam.config: has 2 pools; a Shoal network has one subnet",
			`volumes.v.driver: "nfs" is not supported by Shoal`,
			`services.web.ports[0].published: "8000-8010": port ranges are not supported by Shoal`,
			`services.web.secrets[0].target: "/etc/s": secrets are files under /run/secrets`,
			`services.web.volumes[0].type: "npipe" is not supported by Shoal`,
			`services.web.tmpfs[0]: "/run:size=10m": tmpfs options are not supported by Shoal`,
		}},
		{"top level", `
include:
  - other.yml
services:
  web:
    image: nginx
    deploy:
      mode: replicated
      replicas: 2
      placement:
        constraints: [node.role==worker]
    healthcheck:
      test: ["CMD", "true"]
      start_interval: 1s
    volumes:
      - type: volume
        source: v
        target: /v
        volume:
          subpath: sub
volumes:
  v:
    labels:
      a: b
`, []string{
			"include: not supported by Shoal",
			"services.web.healthcheck.start_interval: not supported by Shoal (use start_period and interval)",
			"services.web.volumes[].volume.subpath: not supported by Shoal",
			"volumes.v.labels: not supported by Shoal",
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.name == "values" {
				os.WriteFile(filepath.Join(t.TempDir(), "s"), []byte("x"), 0o600)
			}
			st, err := load(t, "u", c.file, nil)
			var ue *stack.UnsupportedError
			if !errors.As(err, &ue) || !errors.Is(err, stack.ErrUnsupported) {
				t.Fatalf("Load = %v, %v; want an *UnsupportedError", st, err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			if len(ue.Problems) != len(c.want) {
				t.Errorf("%d problems, want %d: %v", len(ue.Problems), len(c.want), ue.Problems)
			}
		})
	}
}

// Keys that only docker compose uses are ignored with a warning, as
// Docker's stack deploy prints them.
func TestLoadComposeOnlyKeysWarn(t *testing.T) {
	st := mustLoad(t, "w", `
name: myproject
services:
  web:
    image: nginx
    build: .
    container_name: my-web
    depends_on: [db]
    links: [db]
    expose: ["80"]
    profiles: [debug]
    pull_policy: always
    restart: always
    deploy:
      restart_policy:
        condition: on-failure
    volumes:
      - type: bind
        source: /srv
        target: /srv
        consistency: cached
    x-custom: ignored
  db:
    image: postgres
    restart: on-failure:3
x-anchors:
  common: &c
    a: b
`, nil)
	var got []string
	for _, w := range st.Warnings {
		got = append(got, w.String())
	}
	want := []string{
		"name: ignored: the stack is named by the deploy command",
		"services.web.build: ignored: stack deploy builds no image; the service runs its image:",
		"services.web.container_name: ignored: setting the container name is not supported (tasks are named SERVICE.SLOT.ID)",
		"services.web.depends_on: ignored: the services of a stack start together, in no order; each must wait for what it needs",
		"services.web.expose: ignored: exposing ports is unnecessary - services on the same network can access each other's tasks on any port",
		"services.web.links: ignored: services on a shared network reach each other by service name",
		"services.web.profiles: ignored: every service of the file is deployed",
		"services.web.pull_policy: ignored: nodes pull an image when they need it",
		"services.web.volumes[].consistency: ignored: only Docker Desktop uses it",
		"services.db.restart: converted to deploy.restart_policy (condition: on-failure)",
		"services.web.restart: ignored: deploy.restart_policy is used",
	}
	eqs(t, "warnings", got, want)
	eq(t, "restart policy from deploy", svc(t, st, "w_web").TaskTemplate.RestartPolicy.Condition, api.RestartOnFailure)
	db := svc(t, st, "w_db").TaskTemplate.RestartPolicy
	eq(t, "restart: on-failure:3", *db, api.RestartPolicy{Condition: api.RestartOnFailure, MaxAttempts: 3})

	// A service with build: and no image: cannot run.
	_, err := load(t, "w", "services:\n  web:\n    build: .\n", nil)
	if !errors.Is(err, stack.ErrUnsupported) || !strings.Contains(err.Error(), "services.web.image: is required: Shoal runs images, it does not build them") {
		t.Errorf("build without image: %v", err)
	}
}

// A spec the API would refuse is refused by Load, naming the service.
func TestLoadInvalidSpecs(t *testing.T) {
	cases := map[string]string{
		"constraint": "services:\n  web:\n    image: nginx\n    deploy:\n      placement:\n        constraints: [\"zone=east\"]\n",
		"memory":     "services:\n  web:\n    image: nginx\n    deploy:\n      resources:\n        limits:\n          memory: 1k\n",
		"dup ports":  "services:\n  web:\n    image: nginx\n    ports: [\"80:80\", \"80:81\"]\n",
		"dnsrr mesh": "services:\n  web:\n    image: nginx\n    ports: [\"80:80\"]\n    deploy:\n      endpoint_mode: dnsrr\n",
		"workdir":    "services:\n  web:\n    image: nginx\n    working_dir: relative\n",
		"replicas":   "services:\n  web:\n    image: nginx\n    deploy:\n      replicas: 100000000\n",
		"global+n":   "services:\n  web:\n    image: nginx\n    deploy:\n      mode: global\n      replicas: 2\n",
		"bad mode":   "services:\n  web:\n    image: nginx\n    deploy:\n      mode: daemonset\n",
		"ratio":      "services:\n  web:\n    image: nginx\n    deploy:\n      update_config:\n        max_failure_ratio: 1.5\n",
	}
	for name, file := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := load(t, "v", file, nil)
			if err == nil {
				t.Fatal("loaded")
			}
			if !errors.Is(err, api.ErrInvalidSpec) && !errors.Is(err, stack.ErrUnsupported) && !errors.Is(err, stack.ErrInvalidFile) {
				t.Fatalf("err = %v", err)
			}
			if !strings.Contains(err.Error(), "web") {
				t.Errorf("error does not name the service: %v", err)
			}
			t.Log(err)
		})
	}
}

// A network's ip_range or aux address outside its subnet is refused with
// the network and the field named.
func TestLoadIPRangeOutsideSubnet(t *testing.T) {
	for file, want := range map[string]string{
		"services:\n  web:\n    image: nginx\n    networks: [back]\nnetworks:\n  back:\n    ipam:\n      config:\n        - subnet: 10.20.0.0/24\n          ip_range: 10.21.0.0/25\n":                        "ipam.ipRange: 10.21.0.0/25 is not inside subnet 10.20.0.0/24",
		"services:\n  web:\n    image: nginx\n    networks: [back]\nnetworks:\n  back:\n    ipam:\n      config:\n        - subnet: 10.20.0.0/24\n          aux_addresses:\n            printer: 10.9.0.1\n": "ipam.auxAddresses[printer]: 10.9.0.1 is not inside subnet 10.20.0.0/24",
	} {
		_, err := load(t, "v", file, nil)
		if !errors.Is(err, api.ErrInvalidSpec) || !strings.Contains(err.Error(), "back") || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want one naming network back and saying %q", err, want)
		}
	}
}

// A malformed file gives compose-go's message, with the file and the
// position or key.
func TestLoadMalformed(t *testing.T) {
	cases := []struct{ name, file, want string }{
		{"yaml syntax", "services:\n  web:\n    image: nginx\n   ports: [80\n", "failed to parse compose.yml: yaml: while parsing a block mapping at line 1, column 3: line 3, column 4: did not find expected key"},
		{"tabs", "services:\n\tweb:\n", "failed to parse compose.yml: yaml: while scanning for the next token at line 2: found character that cannot start any token"},
		{"not a mapping", "- a\n- b\n", "compose.yml: top-level object must be a mapping"},
		{"empty", "", "compose.yml is empty"},
		{"comments only", "# nothing\n", "compose.yml is empty"},
		{"type", "services:\n  web:\n    image: nginx\n    deploy:\n      replicas: many\n", "services.web.deploy.replicas"},
		{"unknown key", "services:\n  web:\n    image: nginx\n    deploy:\n      foo: 1\n", "validating compose.yml: services.web.deploy additional properties 'foo' not allowed"},
		{"unknown top", "servics:\n  web:\n    image: nginx\n", "additional properties 'servics' not allowed"},
		{"undefined network", "services:\n  web:\n    image: nginx\n    networks: [nope]\n", "service \"web\" refers to undefined network nope"},
		{"undefined secret", "services:\n  web:\n    image: nginx\n    secrets: [nope]\n", "undefined secret nope"},
		{"duration", "services:\n  web:\n    image: nginx\n    stop_grace_period: soon\n", "soon"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := load(t, "m", c.file, nil)
			if !errors.Is(err, stack.ErrInvalidFile) {
				t.Fatalf("err = %v, want ErrInvalidFile", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q lacks %q", err, c.want)
			}
		})
	}
}

func TestLoadNamesAndInputs(t *testing.T) {
	for _, bad := range []string{"", "-x", "a b", "x_", strings.Repeat("a", 49)} {
		if _, err := load(t, bad, "services:\n  web:\n    image: nginx\n", nil); !errors.Is(err, stack.ErrInvalidName) {
			t.Errorf("stack name %q: %v", bad, err)
		}
	}
	// Upper case and dots are fine (compose-go would refuse them as project names).
	st := mustLoad(t, "My.Stack", "services:\n  web:\n    image: nginx\n", nil)
	svc(t, st, "My.Stack_web")
	eqs(t, "networks", networkNames(st), []string{"My.Stack_default"})

	if _, err := stack.Load(context.Background(), "s", nil, stack.Options{}); !errors.Is(err, stack.ErrInvalidFile) {
		t.Errorf("no files: %v", err)
	}
	if _, err := stack.Load(context.Background(), "s", []stack.File{{Name: "/nonexistent/compose.yml"}}, stack.Options{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	big := strings.NewReader(strings.Repeat("#", stack.MaxFileSize+1))
	if _, err := stack.ReadFile("big.yml", big); !errors.Is(err, stack.ErrInvalidFile) {
		t.Errorf("big file: %v", err)
	}
	f, err := stack.ReadFile("stdin", strings.NewReader("services:\n  web:\n    image: nginx\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stack.Load(context.Background(), "s", []stack.File{f}, stack.Options{}); err != nil {
		t.Error(err)
	}
	env := stack.Environ([]string{"A=1", "B=x=y", "=skip", "NOVALUE"})
	if len(env) != 2 || env["A"] != "1" || env["B"] != "x=y" {
		t.Errorf("Environ = %v", env)
	}
}

// The list forms of Compose's mappings load as the mapping forms do.
func TestLoadListForms(t *testing.T) {
	st := mustLoad(t, "l", `
services:
  web:
    image: nginx
    labels: ["tier=front"]
    environment: ["A=1", "B"]
    deploy:
      labels: ["team=web"]
    networks: [n]
networks:
  n:
    labels: ["purpose=test"]
configs:
  c:
    content: x
    labels: ["v=1"]
`, map[string]string{"B": "2"})
	web := svc(t, st, "l_web")
	eq(t, "container label", web.TaskTemplate.Labels["tier"], "front")
	eq(t, "service label", web.Labels["team"], "web")
	eqs(t, "env", web.TaskTemplate.Env, []string{"A=1", "B=2"})
	eq(t, "network label", st.Network("l_n").Labels["purpose"], "test")
	eq(t, "config label", st.Configs[0].Labels["v"], "1")
	eq(t, "config namespace", st.Configs[0].Labels[stack.LabelNamespace], "l")
}

// A YAML alias bomb is refused quickly, not expanded.
func TestLoadAliasBomb(t *testing.T) {
	bomb := "x-a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n"
	for i := 1; i <= 9; i++ {
		p := "*a" + strconv.Itoa(i-1)
		bomb += "x-a" + strconv.Itoa(i) + ": &a" + strconv.Itoa(i) + " [" + strings.Repeat(p+",", 8) + p + "]\n"
	}
	bomb += "services:\n  web:\n    image: nginx\n    labels: *a9\n"
	start := time.Now()
	_, err := load(t, "b", bomb, nil)
	if err == nil {
		t.Fatal("the bomb loaded")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
	t.Log(err)
}
