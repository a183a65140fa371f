package api_test

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/shoalproject/shoal/scheduler"
	"github.com/shoalproject/shoal/swarm/api"
)

func fullService() *api.Service {
	grace := 10 * time.Second
	delay := 5 * time.Second
	yes := true
	return &api.Service{
		Meta: api.Meta{ID: "svc1", Version: 7, CreatedAt: time.Unix(100, 0).UTC(), UpdatedAt: time.Unix(200, 0).UTC()},
		Spec: api.ServiceSpec{
			Annotations: api.Annotations{Name: "web", Labels: map[string]string{"tier": "front"}},
			Mode:        api.Replicated(3),
			TaskTemplate: api.TaskSpec{
				Image: "example/web:1.0", Command: []string{"/web"}, Args: []string{"-v"}, Env: []string{"A=1", "B"},
				User: "1000", Dir: "/srv", Hostname: "{{.Task.Name}}", Labels: map[string]string{"x": "y"},
				Mounts:   []api.Mount{{Type: api.MountTmpfs, Target: "/tmp", TmpfsSizeBytes: 1 << 20}, {Type: api.MountBind, Source: "/data", Target: "/data", ReadOnly: true}},
				ReadOnly: true, Init: &yes,
				Secrets:         []api.SecretReference{{SecretName: "db", File: api.FileTarget{Name: "db", UID: "0", GID: "0", Mode: 0o400}}},
				Configs:         []api.ConfigReference{{ConfigName: "cfg", File: api.FileTarget{Name: "/etc/cfg"}}},
				Healthcheck:     &api.HealthConfig{Test: []string{"CMD", "/web", "-health"}, Interval: time.Second, Timeout: time.Second, Retries: 3, StartPeriod: 2 * time.Second},
				StopSignal:      "SIGTERM",
				StopGracePeriod: &grace,
				Resources: &api.ResourceRequirements{
					Limits:       &api.Resources{NanoCPUs: 1e9, MemoryBytes: 256 << 20, Pids: 100},
					Reservations: &api.Resources{NanoCPUs: 5e8, MemoryBytes: 128 << 20, Generic: []api.GenericResource{{Kind: "gpu", Value: 1}}},
				},
				RestartPolicy: &api.RestartPolicy{Condition: api.RestartOnFailure, Delay: &delay, MaxAttempts: 3, Window: time.Minute},
				Placement: &api.Placement{Constraints: []string{"node.labels.zone==east", "node.role!=manager"},
					Preferences: []api.PlacementPreference{{Spread: "node.labels.dc"}}, MaxReplicas: 2,
					Platforms: []api.Platform{{OS: "linux", Architecture: "amd64"}}},
				Networks:  []api.NetworkTarget{{Target: "backend", Aliases: []string{"www"}}},
				LogDriver: &api.Driver{Name: "json-file", Options: map[string]string{"max-size": "10m"}},
			},
			UpdateConfig:   &api.UpdateConfig{Parallelism: 2, Delay: time.Second, Monitor: 5 * time.Second, FailureAction: api.ActionRollback, MaxFailureRatio: 0.2, Order: api.StartFirst},
			RollbackConfig: &api.UpdateConfig{Parallelism: 1, FailureAction: api.ActionPause},
			EndpointSpec:   &api.EndpointSpec{Mode: api.EndpointVIP, Ports: []api.PortConfig{{Protocol: api.TCP, TargetPort: 80, PublishedPort: 8080, PublishMode: api.PublishIngress}}},
		},
		Endpoint: &api.Endpoint{VirtualIPs: []api.VirtualIP{{NetworkID: "n1", Addr: "10.0.0.2/24"}}},
	}
}

func roundTrip[T any](t *testing.T, in *T) {
	t.Helper()
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	out := new(T)
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip changed %T:\n in: %+v\nout: %+v", in, in, out)
	}
}

func TestJSONRoundTrip(t *testing.T) {
	roundTrip(t, fullService())
	roundTrip(t, &api.Task{
		Meta: api.Meta{ID: "t1", Version: 3}, ServiceID: "svc1", Slot: 2, NodeID: "n1",
		Annotations: api.Annotations{Name: "web.2.t1"}, Spec: fullService().Spec.TaskTemplate, SpecVersion: 7,
		DesiredState: api.TaskRunning,
		Status: api.TaskStatus{Timestamp: time.Unix(5, 0).UTC(), State: api.TaskFailed, Message: "exited", Err: "exit 3",
			ExitCode: 3, ContainerID: "c1", Health: "unhealthy"},
		Networks: []api.NetworkAttachment{{NetworkID: "n", Addresses: []string{"10.0.0.5/24"}}},
	})
	roundTrip(t, &api.Node{
		Meta: api.Meta{ID: "n1"},
		Spec: api.NodeSpec{Annotations: api.Annotations{Labels: map[string]string{"zone": "east"}}, Role: api.RoleManager, Availability: api.NodeDrain},
		Description: api.NodeDescription{Hostname: "h1", Platform: api.Platform{OS: "linux", Architecture: "amd64"},
			Resources: api.Resources{NanoCPUs: 2e9, MemoryBytes: 1 << 30, Generic: []api.GenericResource{{Kind: "gpu", Named: "GPU-1"}}},
			Engine:    api.Engine{Version: "shoal", Labels: map[string]string{"disk": "ssd"}}},
		Status:        api.NodeStatus{State: api.NodeReady, Addr: "192.0.2.1"},
		ManagerStatus: &api.ManagerStatus{Leader: true, Reachability: api.ReachabilityReachable, Addr: "192.0.2.1:2377"},
	})
	roundTrip(t, &api.Network{Meta: api.Meta{ID: "net"}, VNI: 4097, Spec: api.NetworkSpec{Annotations: api.Annotations{Name: "backend"},
		Driver: "overlay", Attachable: true, Encrypted: true, IPAM: &api.IPAMConfig{Subnet: "10.0.1.0/24", Gateway: "10.0.1.1"}}})
	roundTrip(t, &api.Secret{Meta: api.Meta{ID: "s"}, Spec: api.SecretSpec{Annotations: api.Annotations{Name: "db"}, Data: []byte("pw")}})
	roundTrip(t, &api.Config{Meta: api.Meta{ID: "c"}, Spec: api.ConfigSpec{Annotations: api.Annotations{Name: "cfg"}, Data: []byte("x=1")}})
	roundTrip(t, &api.Cluster{Meta: api.Meta{ID: "cl"}, Spec: api.ClusterSpec{Orchestration: api.OrchestrationConfig{TaskHistoryRetentionLimit: 5},
		Dispatcher: api.DispatcherConfig{HeartbeatPeriod: time.Second}, Encryption: api.EncryptionConfig{AutoLockManagers: true}},
		JoinTokens: api.JoinTokens{Worker: "SWMTKN-1-a-b", Manager: "SWMTKN-1-a-c"}})
}

func TestTaskStatesOrderedAndForwardOnly(t *testing.T) {
	states := api.TaskStates()
	want := "new pending assigned accepted preparing ready starting running complete shutdown failed rejected remove orphaned"
	var names []string
	for _, s := range states {
		names = append(names, s.String())
	}
	if got := strings.Join(names, " "); got != want || len(states) != 14 {
		t.Fatalf("states: %s", got)
	}
	for _, from := range states {
		for _, to := range states {
			if api.CanTransition(from, to) != (to > from) {
				t.Errorf("CanTransition(%v, %v) = %v", from, to, !(to > from))
			}
		}
	}
	if api.CanTransition(api.TaskRunning, api.TaskStarting) || !api.CanTransition(api.TaskRunning, api.TaskFailed) {
		t.Fatal("running -> starting must be refused, running -> failed allowed")
	}
	var s api.TaskState
	if err := json.Unmarshal([]byte(`"RUNNING"`), &s); err != nil || s != api.TaskRunning {
		t.Fatalf("unmarshal: %v %v", s, err)
	}
	if err := json.Unmarshal([]byte(`"sleeping"`), &s); err == nil {
		t.Fatal("unknown state accepted")
	}
	if !api.TaskFailed.Terminal() || api.TaskRunning.Terminal() {
		t.Fatal("Terminal wrong")
	}
}

func TestValidServiceSpecPasses(t *testing.T) {
	s := fullService()
	if err := s.Spec.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidationListsEveryProblemWithPaths(t *testing.T) {
	neg := -time.Second
	spec := api.ServiceSpec{
		Annotations: api.Annotations{Name: "-bad name"},
		Mode:        api.ServiceMode{Replicated: &api.ReplicatedService{Replicas: 1}, Global: &api.GlobalService{}},
		TaskTemplate: api.TaskSpec{
			Env:             []string{"=x"},
			Dir:             "relative",
			Mounts:          []api.Mount{{Type: "nfs", Target: "data"}, {Type: api.MountTmpfs, Target: "/t", NoCopy: true}},
			StopGracePeriod: &neg,
			Resources:       &api.ResourceRequirements{Limits: &api.Resources{MemoryBytes: 1 << 20}},
			RestartPolicy:   &api.RestartPolicy{Condition: "sometimes"},
			Placement:       &api.Placement{Constraints: []string{"node.labels.zone=east", "node.color==red", "node.role==boss"}, Preferences: []api.PlacementPreference{{Spread: "zone"}}},
			Healthcheck:     &api.HealthConfig{Test: []string{"RUN", "x"}},
			Secrets:         []api.SecretReference{{SecretName: "s", File: api.FileTarget{Name: "../etc/passwd"}}},
		},
		UpdateConfig: &api.UpdateConfig{MaxFailureRatio: 2, Order: "sideways"},
		EndpointSpec: &api.EndpointSpec{Mode: api.EndpointDNSRR, Ports: []api.PortConfig{{TargetPort: 0, PublishedPort: 80}, {TargetPort: 81, PublishedPort: 80}}},
	}
	err := spec.Validate()
	var ve *api.ValidationError
	if !errors.As(err, &ve) || !errors.Is(err, api.ErrInvalidSpec) {
		t.Fatalf("want *ValidationError, got %v", err)
	}
	paths := map[string]bool{}
	for _, p := range ve.Problems {
		paths[p.Path] = true
	}
	for _, want := range []string{
		"spec.name", "spec.mode", "spec.taskTemplate.image", "spec.taskTemplate.env[0]", "spec.taskTemplate.dir",
		"spec.taskTemplate.mounts[0].target", "spec.taskTemplate.mounts[0].type", "spec.taskTemplate.mounts[1].noCopy", "spec.taskTemplate.stopGracePeriod",
		"spec.taskTemplate.resources.limits.memoryBytes", "spec.taskTemplate.restartPolicy.condition",
		"spec.taskTemplate.placement.constraints[0]", "spec.taskTemplate.placement.constraints[1]",
		"spec.taskTemplate.placement.constraints[2]", "spec.taskTemplate.placement.preferences[0].spread",
		"spec.taskTemplate.healthcheck.test", "spec.taskTemplate.secrets[0].file.name",
		"spec.updateConfig.maxFailureRatio", "spec.updateConfig.order",
		"spec.endpointSpec.ports[0].targetPort", "spec.endpointSpec.ports[0].publishMode", "spec.endpointSpec.ports[1].publishedPort",
	} {
		if !paths[want] {
			t.Errorf("missing problem at %s", want)
		}
	}
	if !strings.Contains(err.Error(), "spec.taskTemplate.resources.limits.memoryBytes: must be >= 4MiB") {
		t.Errorf("message: %v", err)
	}
}

func TestOtherSpecsValidate(t *testing.T) {
	cases := []struct {
		name string
		err  error
		path string
	}{
		{"node role", (&api.NodeSpec{Role: "boss", Availability: api.NodeActive}).Validate(), "spec.role"},
		{"node availability", (&api.NodeSpec{Role: api.RoleWorker, Availability: "sleep"}).Validate(), "spec.availability"},
		{"network subnet", (&api.NetworkSpec{Annotations: api.Annotations{Name: "n"}, IPAM: &api.IPAMConfig{Subnet: "10.0.0.1/24"}}).Validate(), "spec.ipam.subnet"},
		{"network gateway", (&api.NetworkSpec{Annotations: api.Annotations{Name: "n"}, IPAM: &api.IPAMConfig{Subnet: "10.0.0.0/24", Gateway: "10.1.0.1"}}).Validate(), "spec.ipam.gateway"},
		{"network gateway without subnet", (&api.NetworkSpec{Annotations: api.Annotations{Name: "n"}, IPAM: &api.IPAMConfig{Gateway: "10.1.0.1"}}).Validate(), "spec.ipam.gateway"},
		{"network subnet too wide", (&api.NetworkSpec{Annotations: api.Annotations{Name: "n"}, IPAM: &api.IPAMConfig{Subnet: "0.0.0.0/1"}}).Validate(), "spec.ipam.subnet"},
		{"network subnet too narrow", (&api.NetworkSpec{Annotations: api.Annotations{Name: "n"}, IPAM: &api.IPAMConfig{Subnet: "10.0.0.0/31"}}).Validate(), "spec.ipam.subnet"},
		{"network subnet loopback", (&api.NetworkSpec{Annotations: api.Annotations{Name: "n"}, IPAM: &api.IPAMConfig{Subnet: "127.1.0.0/16"}}).Validate(), "spec.ipam.subnet"},
		{"network subnet link-local", (&api.NetworkSpec{Annotations: api.Annotations{Name: "n"}, IPAM: &api.IPAMConfig{Subnet: "169.254.1.0/24"}}).Validate(), "spec.ipam.subnet"},
		{"network subnet multicast", (&api.NetworkSpec{Annotations: api.Annotations{Name: "n"}, IPAM: &api.IPAMConfig{Subnet: "239.0.0.0/24"}}).Validate(), "spec.ipam.subnet"},
		{"network subnet IPv6", (&api.NetworkSpec{Annotations: api.Annotations{Name: "n"}, IPAM: &api.IPAMConfig{Subnet: "fd00::/64"}}).Validate(), "spec.ipam.subnet"},
		{"network driver", (&api.NetworkSpec{Annotations: api.Annotations{Name: "n"}, Driver: "bridge"}).Validate(), "spec.driver"},
		{"secret empty", (&api.SecretSpec{Annotations: api.Annotations{Name: "s"}}).Validate(), "spec.data"},
		{"secret big", (&api.SecretSpec{Annotations: api.Annotations{Name: "s"}, Data: make([]byte, api.MaxSecretSize+1)}).Validate(), "spec.data"},
		{"config name", (&api.ConfigSpec{Data: []byte("x")}).Validate(), "spec.name"},
		{"cluster pool", (&api.ClusterSpec{DefaultAddrPool: []string{"nope"}}).Validate(), "spec.defaultAddrPool[0]"},
	}
	for _, c := range cases {
		var ve *api.ValidationError
		if !errors.As(c.err, &ve) || ve.Problems[0].Path != c.path {
			t.Errorf("%s: got %v, want a problem at %s", c.name, c.err, c.path)
		}
	}
	if err := (&api.NodeSpec{Role: api.RoleWorker, Availability: api.NodePause}).Validate(); err != nil {
		t.Errorf("valid node spec: %v", err)
	}
}

// The API checks constraints with the scheduler's parser (its one
// grammar and test table are in package scheduler): what one accepts, the
// other does.
func TestCheckConstraintIsTheSchedulersGrammar(t *testing.T) {
	for _, c := range []string{"node.labels.zone==east", "NODE.ROLE==Manager", "node.labels.a b==x", "node.role==king", "node.id"} {
		_, perr := scheduler.ParseConstraint(c)
		if cerr := api.CheckConstraint(c); (cerr == nil) != (perr == nil) {
			t.Errorf("%q: api says %v, scheduler says %v", c, cerr, perr)
		}
	}
}

// FuzzServiceSpecValidate feeds arbitrary JSON into a spec: decoding may
// fail, validation must never panic.
func FuzzServiceSpecValidate(f *testing.F) {
	b, _ := json.Marshal(fullService().Spec)
	f.Add(b)
	f.Add([]byte(`{"mode":{},"taskTemplate":{"placement":{"constraints":["=="]}}}`))
	f.Add([]byte(`{"endpointSpec":{"ports":[{"targetPort":99999}]},"taskTemplate":{"healthcheck":{"test":[]}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var s api.ServiceSpec
		if json.Unmarshal(data, &s) != nil {
			return
		}
		if err := s.Validate(); err != nil {
			var ve *api.ValidationError
			if !errors.As(err, &ve) || len(ve.Problems) == 0 {
				t.Fatalf("Validate returned %T without problems", err)
			}
		}
	})
}

// NaN fails every comparison, so a range check written as two refusals
// would let it through.
func TestMaxFailureRatioNaN(t *testing.T) {
	spec := api.ServiceSpec{Annotations: api.Annotations{Name: "web"}, Mode: api.Replicated(1), TaskTemplate: api.TaskSpec{Image: "busybox"},
		UpdateConfig: &api.UpdateConfig{MaxFailureRatio: math.NaN()}}
	if err := spec.Validate(); err == nil || !strings.Contains(err.Error(), "maxFailureRatio") {
		t.Fatalf("NaN maxFailureRatio: %v", err)
	}
}

// Container labels under shoal. are the executors' own.
func TestReservedLabelsRefused(t *testing.T) {
	spec := api.ServiceSpec{Annotations: api.Annotations{Name: "web"}, Mode: api.Replicated(1),
		TaskTemplate: api.TaskSpec{Image: "busybox", Labels: map[string]string{"shoal.service.id": "victim"}}}
	if err := spec.Validate(); err == nil || !strings.Contains(err.Error(), "shoal.service.id") {
		t.Fatalf("reserved label: %v", err)
	}
	spec.TaskTemplate.Labels = map[string]string{"shoalish": "ok"}
	if err := spec.Validate(); err != nil {
		t.Fatal(err)
	}
}
