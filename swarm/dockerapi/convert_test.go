package dockerapi

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	dswarm "github.com/moby/moby/api/types/swarm"

	"github.com/shoalproject/shoal/swarm/api"
)

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// fullSpec uses every field Docker can show.
func fullSpec() api.ServiceSpec {
	grace, delay := 20*time.Second, 3*time.Second
	yes := true
	return api.ServiceSpec{
		Annotations: api.Annotations{Name: "web", Labels: map[string]string{"tier": "front"}},
		Mode:        api.Replicated(3),
		TaskTemplate: api.TaskSpec{
			Image: "example/web:1", Command: []string{"/web"}, Args: []string{"-v"}, Env: []string{"A=1", "B"},
			User: "app", Dir: "/srv", Hostname: "web-{{.Task.Slot}}", Labels: map[string]string{"c": "d"},
			Mounts: []api.Mount{
				{Type: api.MountBind, Source: "/data", Target: "/data", ReadOnly: true},
				{Type: api.MountVolume, Source: "cache", Target: "/cache", NoCopy: true},
				{Type: api.MountTmpfs, Target: "/tmp", TmpfsSizeBytes: 1 << 20},
			},
			ReadOnly: true, Init: &yes,
			Secrets:         []api.SecretReference{{SecretName: "db", File: api.FileTarget{Name: "db", UID: "0", GID: "0", Mode: 0o400}}},
			Configs:         []api.ConfigReference{{ConfigName: "conf", File: api.FileTarget{Name: "/etc/web.conf", Mode: 0o444}}},
			Healthcheck:     &api.HealthConfig{Test: []string{"CMD", "/web", "-health"}, Interval: time.Second, Timeout: 2 * time.Second, StartPeriod: 3 * time.Second, Retries: 4},
			StopSignal:      "SIGINT",
			StopGracePeriod: &grace,
			Resources: &api.ResourceRequirements{
				Limits:       &api.Resources{NanoCPUs: 1e9, MemoryBytes: 64 << 20, Pids: 100},
				Reservations: &api.Resources{NanoCPUs: 5e8, MemoryBytes: 32 << 20, Generic: []api.GenericResource{{Kind: "gpu", Value: 1}, {Kind: "ssd", Named: "sda"}}},
			},
			RestartPolicy: &api.RestartPolicy{Condition: api.RestartOnFailure, Delay: &delay, MaxAttempts: 3, Window: time.Minute},
			Placement: &api.Placement{Constraints: []string{"node.role==worker"}, Preferences: []api.PlacementPreference{{Spread: "node.labels.zone"}},
				MaxReplicas: 2, Platforms: []api.Platform{{OS: "linux", Architecture: "amd64"}}},
			Networks:    []api.NetworkTarget{{Target: "front", Aliases: []string{"www"}}},
			LogDriver:   &api.Driver{Name: "json-file", Options: map[string]string{"max-size": "1m"}},
			ForceUpdate: 2,
		},
		UpdateConfig:   &api.UpdateConfig{Parallelism: 2, Delay: time.Second, Monitor: 5 * time.Second, FailureAction: api.ActionRollback, MaxFailureRatio: 0.25, Order: api.StartFirst},
		RollbackConfig: &api.UpdateConfig{Parallelism: 1, FailureAction: api.ActionPause, Order: api.StopFirst},
		EndpointSpec: &api.EndpointSpec{Mode: api.EndpointVIP, Ports: []api.PortConfig{
			{Protocol: api.TCP, TargetPort: 80, PublishedPort: 8080, PublishMode: api.PublishIngress},
			{Name: "dns", Protocol: api.UDP, TargetPort: 53, PublishMode: api.PublishHost},
		}},
	}
}

// A spec survives the trip through Docker's form, field for field.
func TestServiceSpecRoundTrip(t *testing.T) {
	specs := map[string]api.ServiceSpec{"full": fullSpec()}
	for name, m := range map[string]api.ServiceMode{
		"global": api.Global(), "replicated job": {ReplicatedJob: &api.ReplicatedJob{MaxConcurrent: 2, TotalCompletions: 10}},
		"global job": {GlobalJob: &api.GlobalJob{}},
	} {
		s := api.ServiceSpec{Annotations: api.Annotations{Name: "s"}, Mode: m, TaskTemplate: api.TaskSpec{Image: "x"}}
		specs[name] = s
	}
	for name, s := range specs {
		d := ServiceSpecToDocker(s)
		// Through JSON, as the CLI reads and sends it.
		var sent dswarm.ServiceSpec
		if err := json.Unmarshal([]byte(jsonOf(t, d)), &sent); err != nil {
			t.Fatal(err)
		}
		back, err := ServiceSpecFromDocker(sent)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got, want := jsonOf(t, back), jsonOf(t, s); got != want {
			t.Fatalf("%s: the round trip changed the spec:\n got %s\nwant %s", name, got, want)
		}
		if err := back.Validate(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

// What the docker CLI sends for a plain service create: many empty
// values, which are not features.
func TestServiceSpecFromCLI(t *testing.T) {
	const sent = `{"Name":"web","Labels":{},"TaskTemplate":{"ContainerSpec":{"Image":"busybox:1.36","Labels":{},"Env":[],
		"Privileges":{"CredentialSpec":null,"SELinuxContext":null,"NoNewPrivileges":false},"Init":false,"DNSConfig":{},
		"Mounts":[],"Isolation":"default","Hosts":[],"Groups":[]},
		"Resources":{"Limits":{},"Reservations":{}},"Placement":{},"Networks":[],"ForceUpdate":0,"Runtime":"container"},
		"Mode":{"Replicated":{"Replicas":3}},
		"EndpointSpec":{"Mode":"vip","Ports":[{"Protocol":"tcp","TargetPort":80,"PublishedPort":8080,"PublishMode":"ingress"}]}}`
	var d dswarm.ServiceSpec
	if err := json.Unmarshal([]byte(sent), &d); err != nil {
		t.Fatal(err)
	}
	s, err := ServiceSpecFromDocker(d)
	if err != nil {
		t.Fatal(err)
	}
	no := false
	want := api.ServiceSpec{Annotations: api.Annotations{Name: "web"}, Mode: api.Replicated(3),
		TaskTemplate: api.TaskSpec{Image: "busybox:1.36", Init: &no},
		EndpointSpec: &api.EndpointSpec{Mode: api.EndpointVIP, Ports: []api.PortConfig{{Protocol: api.TCP, TargetPort: 80, PublishedPort: 8080, PublishMode: api.PublishIngress}}}}
	if got, w := jsonOf(t, s), jsonOf(t, want); got != w {
		t.Fatalf("got  %s\nwant %s", got, w)
	}
	// No mode: one replica, as Docker; a job's defaults, as Docker's.
	s, _ = ServiceSpecFromDocker(dswarm.ServiceSpec{})
	if s.Mode.Replicated == nil || s.Mode.Replicated.Replicas != 1 {
		t.Fatalf("no mode: %+v", s.Mode)
	}
	s, _ = ServiceSpecFromDocker(dswarm.ServiceSpec{Mode: dswarm.ServiceMode{ReplicatedJob: &dswarm.ReplicatedJob{}}})
	if j := s.Mode.ReplicatedJob; j == nil || j.MaxConcurrent != 1 || j.TotalCompletions != 1 {
		t.Fatalf("a job without counts: %+v", s.Mode.ReplicatedJob)
	}
}

// Every field Shoal cannot represent is named; none is dropped.
func TestServiceSpecUnsupported(t *testing.T) {
	one := int64(1)
	d := dswarm.ServiceSpec{TaskTemplate: dswarm.TaskSpec{
		Runtime:    dswarm.RuntimePlugin,
		PluginSpec: &dswarm.RuntimeSpec{Name: "p"},
		ContainerSpec: &dswarm.ContainerSpec{
			Image: "x", Groups: []string{"staff"}, TTY: true, OpenStdin: true, Hosts: []string{"192.0.2.1 db"},
			DNSConfig:      &dswarm.DNSConfig{Search: []string{"example.com"}},
			Privileges:     &dswarm.Privileges{NoNewPrivileges: true, AppArmor: &dswarm.AppArmorOpts{Mode: dswarm.AppArmorModeDisabled}},
			Isolation:      container.IsolationHyperV,
			Sysctls:        map[string]string{"net.core.somaxconn": "1024"},
			CapabilityAdd:  []string{"NET_ADMIN"},
			CapabilityDrop: []string{"CHOWN"},
			Ulimits:        []*container.Ulimit{{Name: "nofile", Soft: 1, Hard: 2}},
			OomScoreAdj:    10,
			Healthcheck:    &container.HealthConfig{Test: []string{"CMD", "true"}, StartInterval: time.Second},
			Mounts: []mount.Mount{
				{Type: mount.TypeNamedPipe, Source: `\\.\pipe\x`, Target: `\\.\pipe\x`},
				{Type: mount.TypeBind, Source: "/a", Target: "/a", BindOptions: &mount.BindOptions{Propagation: mount.PropagationShared}},
				{Type: mount.TypeVolume, Source: "v", Target: "/v", VolumeOptions: &mount.VolumeOptions{Subpath: "sub", DriverConfig: &mount.Driver{Name: "nfs"}}},
				{Type: mount.TypeTmpfs, Target: "/t", TmpfsOptions: &mount.TmpfsOptions{Mode: 0o700}},
			},
			Configs: []*dswarm.ConfigReference{{ConfigName: "cred", Runtime: &dswarm.ConfigReferenceRuntimeTarget{}}},
		},
		Resources: &dswarm.ResourceRequirements{SwapBytes: &one, Reservations: &dswarm.Resources{GenericResources: []dswarm.GenericResource{{}}}},
		Placement: &dswarm.Placement{Preferences: []dswarm.PlacementPreference{{}}},
		Networks:  []dswarm.NetworkAttachmentConfig{{Target: "n", DriverOpts: map[string]string{"a": "b"}}},
	}}
	_, err := ServiceSpecFromDocker(d)
	var ue *UnsupportedFieldsError
	if !errors.As(err, &ue) || !errors.Is(err, ErrUnsupported) {
		t.Fatalf("want an *UnsupportedFieldsError, got %v", err)
	}
	for _, want := range []string{"TaskTemplate.Runtime", "TaskTemplate.PluginSpec", "ContainerSpec.Groups (--group)", "ContainerSpec.TTY (--tty)",
		"ContainerSpec.OpenStdin", "ContainerSpec.Hosts (--host)", "ContainerSpec.DNSConfig", "Privileges.AppArmor", "Privileges.NoNewPrivileges",
		"ContainerSpec.Isolation", "ContainerSpec.Sysctls", "ContainerSpec.CapabilityAdd", "ContainerSpec.CapabilityDrop", "ContainerSpec.Ulimits",
		"ContainerSpec.OomScoreAdj", "Healthcheck.StartInterval", "Mounts[0].Type", "Mounts[1].BindOptions.Propagation",
		"Mounts[2].VolumeOptions.Subpath", "Mounts[2].VolumeOptions.DriverConfig", "Mounts[3].TmpfsOptions.Mode", "Configs[0].Runtime",
		"Resources.SwapBytes", "Reservations.GenericResources[0]", "Placement.Preferences[0]", "Networks[0].DriverOpts"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q not named in: %v", want, err)
		}
	}
}

// A Docker spec sent back as it was shown keeps Shoal's spelling of each
// part; a changed part keeps the Shoal fields Docker cannot show.
func TestKeepUnchanged(t *testing.T) {
	cur := api.ServiceSpec{Annotations: api.Annotations{Name: "s"}, Mode: api.Replicated(2),
		TaskTemplate: api.TaskSpec{Image: "x:1", Placement: &api.Placement{}, Resources: &api.ResourceRequirements{
			Limits:       &api.Resources{MemoryBytes: 64 << 20, Generic: []api.GenericResource{{Kind: "gpu", Value: 1}}},
			Reservations: &api.Resources{Pids: 10}}}}
	d := ServiceSpecToDocker(cur)
	*d.Mode.Replicated.Replicas = 4
	next, err := ServiceSpecFromDocker(d)
	if err != nil {
		t.Fatal(err)
	}
	got := keepUnchanged(cur, d, next)
	want := cur
	want.Mode = api.Replicated(4)
	if jsonOf(t, got) != jsonOf(t, want) {
		t.Fatalf("a scale changed the template:\n got %s\nwant %s", jsonOf(t, got), jsonOf(t, want))
	}
	d.TaskTemplate.ContainerSpec.Image = "x:2"
	d.TaskTemplate.Resources.Limits.MemoryBytes = 128 << 20
	next, _ = ServiceSpecFromDocker(d)
	got = keepUnchanged(cur, d, next)
	if r := got.TaskTemplate.Resources; got.TaskTemplate.Image != "x:2" || r.Limits.MemoryBytes != 128<<20 || len(r.Limits.Generic) != 1 {
		t.Fatalf("an update lost a field: %s", jsonOf(t, got.TaskTemplate))
	}
}

func TestClusterSpecFromDocker(t *testing.T) {
	cur := api.ClusterSpec{Annotations: api.Annotations{Name: "default"}, Orchestration: api.OrchestrationConfig{TaskHistoryRetentionLimit: 5, MaxReplicas: 1000}}
	shown := clusterSpecToDocker(cur)
	if shown.CAConfig.NodeCertExpiry != 90*24*time.Hour {
		t.Fatalf("the default expiry shown: %v", shown.CAConfig.NodeCertExpiry)
	}
	same, err := clusterSpecFromDocker(shown, cur)
	if err != nil || jsonOf(t, same) != jsonOf(t, cur) {
		t.Fatalf("sent back as shown: %v %s", err, jsonOf(t, same))
	}
	shown.Orchestration.TaskHistoryRetentionLimit = ptr(int64(10))
	shown.Dispatcher.HeartbeatPeriod = 2 * time.Second
	next, err := clusterSpecFromDocker(shown, cur)
	if err != nil || next.Orchestration.TaskHistoryRetentionLimit != 10 || next.Dispatcher.HeartbeatPeriod != 2*time.Second ||
		next.Orchestration.MaxReplicas != 1000 || next.CAConfig.NodeCertExpiry != 0 {
		t.Fatalf("changes: %v %+v", err, next)
	}
	shown.CAConfig.ExternalCAs = []*dswarm.ExternalCA{{URL: "https://ca"}}
	shown.Raft.ElectionTick = 10
	shown.TaskDefaults.LogDriver = &dswarm.Driver{Name: "syslog"}
	_, err = clusterSpecFromDocker(shown, cur)
	for _, want := range []string{"CAConfig.ExternalCAs (--external-ca)", "Raft.ElectionTick", "TaskDefaults.LogDriver"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%q not named in: %v", want, err)
		}
	}
}

func TestMessages(t *testing.T) {
	for in, want := range map[string]string{
		"swarm: manager 127.0.0.1:4000: swarm: name in use: swarm: name in use: service \"web\" exists": "name in use: service \"web\" exists",
		"api: invalid spec: swarm: manager [::1]:1: api: invalid spec: node x is up":                    "node x is up",
		"a: b: c": "a: b: c",
		"raftstore: no quorum: x: swarm: manager 127.0.0.1:1: raftstore: no quorum: x (lost)\nswarm: manager 127.0.0.1:2: dial tcp: refused": "no quorum: x (lost); dial tcp: refused",
	} {
		if got := messageOf(errors.New(in)); got != want {
			t.Errorf("messageOf(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseFilters(t *testing.T) {
	for raw, want := range map[string]string{
		``:                                    `{}`,
		`{"name":{"web":true,"api":true}}`:    `{"name":["api","web"]}`,
		`{"name":["web"],"label":["a=b"]}`:    `{"label":["a=b"],"name":["web"]}`,
		`{"desired-state":{"running":false}}`: `{}`,
	} {
		f, err := parseFilters(raw)
		if err != nil || jsonOf(t, f) != want {
			t.Errorf("parseFilters(%s) = %s, %v; want %s", raw, jsonOf(t, f), err, want)
		}
	}
	for _, raw := range []string{`x`, `{"name":"web"}`, `[1]`} {
		if _, err := parseFilters(raw); err == nil || statusOf(err) != 400 {
			t.Errorf("parseFilters(%s): %v, want a 400", raw, err)
		}
	}
	if err := (filters{"nmae": {"x"}}).accept("name", "id"); err == nil || !strings.Contains(err.Error(), "invalid filter 'nmae' (one of id, name)") {
		t.Errorf("accept: %v", err)
	}
}

func TestVersionsAndTimes(t *testing.T) {
	for _, c := range []struct {
		a, b string
		less bool
	}{{"1.41", "1.50", true}, {"1.50", "1.41", false}, {"1.9", "1.24", true}, {"1.50", "1.50", false}, {"2.0", "1.50", false}} {
		if versionLess(c.a, c.b) != c.less {
			t.Errorf("versionLess(%s, %s) != %v", c.a, c.b, c.less)
		}
	}
	now := time.Unix(1_700_000_000, 0)
	for in, want := range map[string]time.Time{
		"1700000001":           time.Unix(1_700_000_001, 0),
		"1700000001.5":         time.Unix(1_700_000_001, 500_000_000),
		"1700000001.000000001": time.Unix(1_700_000_001, 1),
		"10m":                  now.Add(-10 * time.Minute),
		"2023-11-14T22:13:20Z": time.Unix(1_700_000_000, 0),
	} {
		got, err := parseEventTime(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseEventTime(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"soon", "1.x", "-5"} {
		if _, err := parseEventTime(in, now); err == nil {
			t.Errorf("parseEventTime(%q): no error", in)
		}
	}
}
