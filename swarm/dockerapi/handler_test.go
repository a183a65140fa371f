package dockerapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/events"
	dswarm "github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/api/types/system"

	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/swarmtest"
)

// The API over HTTP, against a TLS cluster of one manager and two workers.
func TestAPI(t *testing.T) {
	c := swarmtest.NewTLS(t, swarmtest.TLSOptions{Managers: 1, Workers: 2})
	e := serve(t, c, "m0")
	ctx := context.Background()

	t.Run("ping", func(t *testing.T) {
		for _, method := range []string{http.MethodHead, http.MethodGet} {
			req, _ := http.NewRequest(method, "http://docker/_ping", nil)
			resp, err := e.http.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			h := resp.Header
			if resp.StatusCode != 200 || h.Get("API-Version") != "1.50" || h.Get("Swarm") != "active/manager" ||
				h.Get("OSType") != "linux" || h.Get("Docker-Experimental") != "false" {
				t.Fatalf("%s /_ping: %d %v", method, resp.StatusCode, h)
			}
		}
	})

	t.Run("versions", func(t *testing.T) {
		var v system.VersionResponse
		e.get(t, "/v1.24/version", &v)
		if v.APIVersion != "1.50" || v.MinAPIVersion != "1.24" {
			t.Fatalf("version: %+v", v)
		}
		var info system.Info
		e.get(t, "/info", &info) // unversioned: the latest
		e.get(t, "/v1.41/info", &info)
		if info.Swarm.NodeID != c.NodeID("m0") || !info.Swarm.ControlAvailable || info.Swarm.Nodes != 3 || info.Swarm.Managers != 1 ||
			info.Swarm.Cluster == nil || info.Swarm.LocalNodeState != dswarm.LocalNodeStateActive || len(info.Swarm.RemoteManagers) != 1 {
			t.Fatalf("info: %+v", info.Swarm)
		}
		code, body := e.call(t, http.MethodGet, "/v1.51/info", nil)
		wantError(t, "a newer API", code, body, 400, "client version 1.51 is too new. Maximum supported API version is 1.50")
		code, body = e.call(t, http.MethodGet, "/v1.12/info", nil)
		wantError(t, "an older API", code, body, 400, "Minimum supported API version is 1.24")
	})

	t.Run("not supported", func(t *testing.T) {
		for _, c := range []struct{ method, path, want string }{
			{"POST", "/v1.50/containers/create", "not supported by Shoal: POST /containers/create"},
			{"GET", "/v1.50/containers/json", "not supported by Shoal: GET /containers/json"},
			{"POST", "/v1.50/images/create?fromImage=busybox", "not supported by Shoal: POST /images/create"},
			{"POST", "/v1.50/build", "not supported by Shoal"},
			{"DELETE", "/v1.50/swarm", "not supported by Shoal: DELETE /swarm"},
			{"POST", "/v1.50/networks/web/connect", "not supported by Shoal: POST /networks/web/connect: connecting containers"},
			{"POST", "/v1.50/networks/prune", "not supported by Shoal: POST /networks/prune"},
			{"PUT", "/v1.50/secrets", "not supported by Shoal: PUT /secrets"},
			{"GET", "/v1.50/volumes", "not supported by Shoal: GET /volumes"},
			{"POST", "/v1.50/swarm/leave", "not supported by Shoal yet"},
		} {
			code, body := e.call(t, c.method, c.path, nil)
			wantError(t, c.method+" "+c.path, code, body, http.StatusNotImplemented, c.want)
		}
		code, body := e.call(t, "POST", "/v1.50/swarm/init", "{}")
		wantError(t, "swarm init", code, body, http.StatusServiceUnavailable, "already part of a swarm")
	})

	t.Run("service errors", func(t *testing.T) {
		create := func(spec string) (int, []byte) { return e.call(t, "POST", "/v1.50/services/create", spec) }
		code, body := create(`{"Name":"bad","TaskTemplate":{"ContainerSpec":{"Image":"x"}},"Mode":{"Replicated":{"Replicas":-1}}}`)
		wantError(t, "replicas -1", code, body, 400, "cannot unmarshal number -1")
		code, body = create(`{"Name":"bad","TaskTemplate":{"ContainerSpec":{"Image":"x"}},"Bogus":1}`)
		wantError(t, "an unknown field", code, body, 400, `unknown field "Bogus"`)
		code, body = create(`{"Name":"bad","TaskTemplate":{"ContainerSpec":{"Image":"x"},"Placement":{"Constraints":["node.labels.zone=east"]}}}`)
		wantError(t, "a bad constraint", code, body, 400, "spec.taskTemplate.placement.constraints[0]")
		code, body = create(`{"Name":"bad","TaskTemplate":{"ContainerSpec":{}},"Mode":{"Replicated":{"Replicas":1000000}}}`)
		wantError(t, "no image, too many replicas", code, body, 400, "spec.taskTemplate.image: is required")
		if !strings.Contains(string(body), "spec.mode.replicated.replicas: must be at most 100000") {
			t.Fatalf("want every problem: %s", body)
		}
		code, body = create(`{"Name":"bad","TaskTemplate":{"ContainerSpec":{"Image":"x","TTY":true,"Sysctls":{"a":"b"},"Mounts":[{"Type":"npipe","Target":"/p"}]},"Resources":{"SwapBytes":1}}}`)
		wantError(t, "unsupported fields", code, body, 400,
			"not supported by Shoal: TaskTemplate.ContainerSpec.TTY (--tty), TaskTemplate.ContainerSpec.Sysctls (--sysctl), TaskTemplate.ContainerSpec.Mounts[0].Type")
		if !strings.Contains(string(body), "TaskTemplate.Resources.SwapBytes") {
			t.Fatalf("want every unsupported field: %s", body)
		}
		code, body = create(`{"Name":"bad",`)
		wantError(t, "broken JSON", code, body, 400, "request body")
		code, body = create(`{"Name":"big","TaskTemplate":{"ContainerSpec":{"Image":"` + strings.Repeat("x", 5<<20) + `"}}}`)
		wantError(t, "a huge body", code, body, http.StatusRequestEntityTooLarge, "request body over")
		code, body = e.call(t, "GET", "/v1.50/services/nope", nil)
		wantError(t, "an unknown service", code, body, 404, "service nope not found")
		code, body = e.call(t, "GET", `/v1.50/services?filters={"colour":{"red":true}}`, nil)
		wantError(t, "an unknown filter", code, body, 400, "invalid filter 'colour'")
		code, body = e.call(t, "GET", `/v1.50/tasks?filters=notjson`, nil)
		wantError(t, "filters not JSON", code, body, 400, "invalid filters")
	})

	t.Run("services", func(t *testing.T) {
		spec := `{"Name":"api","Labels":{"tier":"front"},"TaskTemplate":{"ContainerSpec":{"Image":"example/api:1","Env":["A=1"]},
			"Placement":{"Constraints":["node.role==worker"]}},"Mode":{"Replicated":{"Replicas":2}},
			"EndpointSpec":{"Ports":[{"Protocol":"tcp","TargetPort":80,"PublishedPort":8088}]}}`
		code, body := e.call(t, "POST", "/v1.50/services/create", spec)
		if code != http.StatusCreated {
			t.Fatalf("create: %d %s", code, body)
		}
		var created dswarm.ServiceCreateResponse
		json.Unmarshal(body, &created)
		code, body = e.call(t, "POST", "/v1.50/services/create", spec)
		wantError(t, "a name in use", code, body, http.StatusConflict, `service "api" exists`)

		// ServiceStatus, as docker service ls needs.
		var list []dswarm.Service
		poll(t, "2 running tasks in the service status", func() bool {
			e.get(t, "/v1.50/services?status=true&filters="+url.QueryEscape(`{"label":{"tier=front":true}}`), &list)
			return len(list) == 1 && list[0].ServiceStatus != nil && list[0].ServiceStatus.RunningTasks == 2
		})
		if list[0].ServiceStatus.DesiredTasks != 2 || list[0].ID != created.ID {
			t.Fatalf("service status: %+v", list[0].ServiceStatus)
		}
		e.get(t, "/v1.40/services?status=true", &list) // before 1.41: no status
		for _, s := range list {
			if s.ServiceStatus != nil {
				t.Fatalf("a service status for API 1.40: %+v", s)
			}
		}
		e.get(t, `/v1.50/services?filters={"mode":{"global":true}}`, &list)
		if len(list) != 0 {
			t.Fatalf("mode=global: %d services", len(list))
		}

		// Inspect by name, ID and ID prefix.
		var s dswarm.Service
		for _, ref := range []string{"api", created.ID, created.ID[:5]} {
			e.get(t, "/v1.50/services/"+ref, &s)
			if s.ID != created.ID {
				t.Fatalf("inspect %s: %s", ref, s.ID)
			}
		}
		var tasks []dswarm.Task
		e.get(t, "/v1.50/tasks?filters="+url.QueryEscape(`{"service":{"api":true},"desired-state":{"running":true}}`), &tasks)
		if len(tasks) != 2 {
			t.Fatalf("tasks of api: %d", len(tasks))
		}
		ids := map[string]bool{tasks[0].ID: true, tasks[1].ID: true}
		var one dswarm.Task
		e.get(t, "/v1.50/tasks/"+tasks[0].ID[:6], &one)
		if one.ID != tasks[0].ID || one.Spec.ContainerSpec.Image != "example/api:1" || one.Status.State != dswarm.TaskStateRunning {
			t.Fatalf("task inspect: %+v", one)
		}
		e.get(t, "/v1.50/tasks?filters="+url.QueryEscape(fmt.Sprintf(`{"node":{%q:true}}`, c.NodeID("m0"))), &tasks)
		if len(tasks) != 0 {
			t.Fatalf("tasks on the manager, whose role the constraint excludes: %d", len(tasks))
		}

		// Scale with the spec as read: the tasks stay.
		s.Spec.Mode.Replicated.Replicas = ptr(uint64(3))
		code, body = e.call(t, "POST", fmt.Sprintf("/v1.50/services/%s/update?version=%d", s.ID, s.Version.Index), s.Spec)
		if code != 200 {
			t.Fatalf("scale: %d %s", code, body)
		}
		code, body = e.call(t, "POST", fmt.Sprintf("/v1.50/services/%s/update?version=%d", s.ID, s.Version.Index), s.Spec)
		wantError(t, "an update from a stale version", code, body, http.StatusConflict, "read it again")
		code, body = e.call(t, "POST", fmt.Sprintf("/v1.50/services/%s/update?version=x", s.ID), s.Spec)
		wantError(t, "a bad version", code, body, 400, "invalid service version 'x'")
		poll(t, "3 up-to-date running tasks", func() bool {
			e.get(t, "/v1.50/tasks?filters="+url.QueryEscape(`{"service":{"api":true},"_up-to-date":{"true":true},"desired-state":{"running":true}}`), &tasks)
			running := 0
			for _, t := range tasks {
				if t.Status.State == dswarm.TaskStateRunning {
					running++
				}
			}
			return running == 3
		})
		kept := 0
		for _, t := range tasks {
			if ids[t.ID] {
				kept++
			}
		}
		e.get(t, "/v1.50/services/api", &s)
		if kept != 2 || s.UpdateStatus != nil {
			t.Fatalf("scaling replaced tasks (%d of 2 kept) or started an update (%+v)", kept, s.UpdateStatus)
		}

		// Update the image, then roll back: up-to-date tasks follow.
		s.Spec.TaskTemplate.ContainerSpec.Image = "example/api:2"
		code, body = e.call(t, "POST", fmt.Sprintf("/v1.50/services/%s/update?version=%d", s.ID, s.Version.Index), s.Spec)
		if code != 200 {
			t.Fatalf("update: %d %s", code, body)
		}
		e.get(t, "/v1.50/tasks?filters="+url.QueryEscape(`{"service":{"api":true},"_up-to-date":{"true":true}}`), &tasks)
		for _, t2 := range tasks {
			if t2.Spec.ContainerSpec.Image != "example/api:2" {
				t.Fatalf("an up-to-date task of the old image: %+v", t2)
			}
		}
		e.get(t, "/v1.50/services/api", &s)
		code, body = e.call(t, "POST", fmt.Sprintf("/v1.50/services/%s/update?version=%d&rollback=previous", s.ID, s.Version.Index), s.Spec)
		if code != 200 {
			t.Fatalf("rollback: %d %s", code, body)
		}
		e.get(t, "/v1.50/services/api", &s)
		if s.Spec.TaskTemplate.ContainerSpec.Image != "example/api:1" || s.UpdateStatus == nil || !strings.HasPrefix(string(s.UpdateStatus.State), "rollback") {
			t.Fatalf("after rollback: %s %+v", s.Spec.TaskTemplate.ContainerSpec.Image, s.UpdateStatus)
		}

		code, body = e.call(t, "DELETE", "/v1.50/services/"+created.ID[:7], nil)
		if code != 200 {
			t.Fatalf("remove: %d %s", code, body)
		}
		code, body = e.call(t, "DELETE", "/v1.50/services/api", nil)
		wantError(t, "a removed service", code, body, 404, "not found")
	})

	t.Run("spelling of a spec made in Go", func(t *testing.T) {
		// A spec with empty parts that Docker's form cannot spell (an
		// empty resources object) is sent back as read: nothing changes.
		cl := c.Client()
		svc, err := cl.CreateService(ctx, api.ServiceSpec{Annotations: api.Annotations{Name: "gospec"}, Mode: api.Replicated(1),
			TaskTemplate: api.TaskSpec{Image: "example/go:1", Resources: &api.ResourceRequirements{}, Placement: &api.Placement{},
				RestartPolicy: &api.RestartPolicy{}}})
		if err != nil {
			t.Fatal(err)
		}
		var s dswarm.Service
		e.get(t, "/v1.50/services/gospec", &s)
		code, body := e.call(t, "POST", fmt.Sprintf("/v1.50/services/%s/update?version=%d", s.ID, s.Version.Index), s.Spec)
		if code != 200 {
			t.Fatalf("update as read: %d %s", code, body)
		}
		got, err := cl.Service(ctx, svc.ID)
		if err != nil {
			t.Fatal(err)
		}
		a, _ := json.Marshal(got.Spec)
		b, _ := json.Marshal(svc.Spec)
		if string(a) != string(b) || got.UpdateStatus != nil {
			t.Fatalf("the spec changed:\n%s\n%s\n%+v", a, b, got.UpdateStatus)
		}
		cl.RemoveService(ctx, svc.ID)
	})

	t.Run("nodes", func(t *testing.T) {
		var nodes []dswarm.Node
		e.get(t, "/v1.50/nodes", &nodes)
		if len(nodes) != 3 {
			t.Fatalf("nodes: %d", len(nodes))
		}
		e.get(t, `/v1.50/nodes?filters={"role":{"manager":true}}`, &nodes)
		if len(nodes) != 1 || nodes[0].ID != c.NodeID("m0") || nodes[0].ManagerStatus == nil || !nodes[0].ManagerStatus.Leader {
			t.Fatalf("managers: %+v", nodes)
		}
		var n dswarm.Node
		id := c.NodeID("node1")
		e.get(t, "/v1.50/nodes/"+id[:8], &n)
		if n.ID != id || n.Description.TLSInfo.TrustRoot == "" || n.Spec.Role != dswarm.NodeRoleWorker {
			t.Fatalf("node inspect: %+v", n)
		}
		n.Spec.Labels["rack"] = "r1"
		code, body := e.call(t, "POST", fmt.Sprintf("/v1.50/nodes/%s/update?version=%d", n.ID, n.Version.Index), n.Spec)
		if code != 200 {
			t.Fatalf("node update: %d %s", code, body)
		}
		e.get(t, `/v1.50/nodes?filters={"node.label":{"rack=r1":true}}`, &nodes)
		if len(nodes) != 1 || nodes[0].ID != id {
			t.Fatalf("node.label=rack=r1: %+v", nodes)
		}
		e.get(t, "/v1.50/nodes/"+id, &n)
		n.Spec.Availability = "sleepy"
		code, body = e.call(t, "POST", fmt.Sprintf("/v1.50/nodes/%s/update?version=%d", n.ID, n.Version.Index), n.Spec)
		wantError(t, "a bad availability", code, body, 400, "spec.availability: must be active, pause or drain")
		code, body = e.call(t, "DELETE", "/v1.50/nodes/nope", nil)
		wantError(t, "an unknown node", code, body, 404, "node nope not found")
		code, body = e.call(t, "GET", `/v1.50/nodes?filters={"role":{"boss":true}}`, nil)
		wantError(t, "a bad role", code, body, 400, "invalid role filter")
	})

	t.Run("swarm", func(t *testing.T) {
		var sw dswarm.Swarm
		e.get(t, "/v1.50/swarm", &sw)
		if !strings.HasPrefix(sw.JoinTokens.Worker, "SWMTKN-1-") || sw.Spec.Orchestration.TaskHistoryRetentionLimit == nil ||
			!strings.Contains(sw.TLSInfo.TrustRoot, "BEGIN CERTIFICATE") || len(sw.TLSInfo.CertIssuerPublicKey) == 0 {
			t.Fatalf("swarm: %+v", sw)
		}
		old := sw.JoinTokens.Worker
		code, body := e.call(t, "POST", fmt.Sprintf("/v1.50/swarm/update?version=%d&rotateWorkerToken=true", sw.Version.Index), sw.Spec)
		if code != 200 {
			t.Fatalf("rotate: %d %s", code, body)
		}
		e.get(t, "/v1.50/swarm", &sw)
		if sw.JoinTokens.Worker == old || sw.JoinTokens.Manager == "" {
			t.Fatalf("the worker token did not change")
		}
		spec := sw.Spec
		spec.Orchestration.TaskHistoryRetentionLimit = ptr(int64(7))
		spec.CAConfig.NodeCertExpiry = 48 * time.Hour
		code, body = e.call(t, "POST", fmt.Sprintf("/v1.50/swarm/update?version=%d", sw.Version.Index), spec)
		if code != 200 {
			t.Fatalf("update: %d %s", code, body)
		}
		cl, err := c.Client().Cluster(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if cl.Spec.Orchestration.TaskHistoryRetentionLimit != 7 || cl.Spec.CAConfig.NodeCertExpiry != 48*time.Hour || cl.Spec.Dispatcher.HeartbeatPeriod != sw.Spec.Dispatcher.HeartbeatPeriod {
			t.Fatalf("cluster spec after update: %+v", cl.Spec)
		}
		e.get(t, "/v1.50/swarm", &sw)
		spec = sw.Spec
		spec.EncryptionConfig.AutoLockManagers = true
		spec.Raft.KeepOldSnapshots = ptr(uint64(2))
		code, body = e.call(t, "POST", fmt.Sprintf("/v1.50/swarm/update?version=%d", sw.Version.Index), spec)
		wantError(t, "autolock", code, body, 400, "not supported by Shoal: Raft.KeepOldSnapshots (--max-snapshots), EncryptionConfig.AutoLockManagers")
		code, body = e.call(t, "POST", fmt.Sprintf("/v1.50/swarm/update?version=%d", sw.Version.Index-1), sw.Spec)
		if code != 200 {
			t.Fatalf("an unchanged spec from an old version: %d %s", code, body)
		}
		var uk dswarm.UnlockKeyResponse
		e.get(t, "/v1.50/swarm/unlockkey", &uk)
		if uk.UnlockKey != "" {
			t.Fatalf("an unlock key without autolock: %q", uk.UnlockKey)
		}
		code, body = e.call(t, "POST", "/v1.50/swarm/unlock", `{"UnlockKey":"SWMKEY-1-x"}`)
		wantError(t, "unlock", code, body, 400, "swarm is not locked")
	})

	t.Run("events", func(t *testing.T) {
		code, body := e.call(t, "GET", fmt.Sprintf("/v1.50/events?since=%d", time.Now().Add(-time.Hour).Unix()), nil)
		wantError(t, "events from the past", code, body, 400, "not supported by Shoal yet: events from the past")
		until := time.Now().Add(4 * time.Second)
		q := url.Values{"until": {fmt.Sprintf("%d.%09d", until.Unix(), until.Nanosecond())},
			"filters": {`{"type":{"service":true},"event":{"create":true,"remove":true}}`}}
		resp, err := e.http.Get("http://docker/v1.50/events?" + q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		cl := c.Client()
		svc, err := cl.CreateService(ctx, api.ServiceSpec{Annotations: api.Annotations{Name: "ev"}, Mode: api.Replicated(1), TaskTemplate: api.TaskSpec{Image: "x"}})
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.RemoveService(ctx, svc.ID); err != nil {
			t.Fatal(err)
		}
		var got []string
		dec := json.NewDecoder(bufio.NewReader(resp.Body))
		for {
			var m events.Message
			if err := dec.Decode(&m); err != nil {
				break // the stream ends at until
			}
			if m.Scope != "swarm" || m.TimeNano == 0 || m.Actor.ID != svc.ID {
				t.Fatalf("event: %+v", m)
			}
			got = append(got, fmt.Sprintf("%s %s %s", m.Type, m.Action, m.Actor.Attributes["name"]))
		}
		if strings.Join(got, ", ") != "service create ev, service remove ev" {
			t.Fatalf("events: %q", got)
		}
		if time.Now().Before(until) {
			t.Fatal("the stream ended before until")
		}
	})

	t.Run("worker", func(t *testing.T) {
		w := serve(t, c, "node0")
		req, _ := http.NewRequest(http.MethodHead, "http://docker/_ping", nil)
		resp, err := w.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("Swarm"); got != "active/worker" {
			t.Fatalf("a worker's ping: Swarm %q", got)
		}
		var info system.Info
		w.get(t, "/v1.50/info", &info)
		if info.Swarm.NodeID != c.NodeID("node0") || info.Swarm.ControlAvailable || info.Swarm.LocalNodeState != dswarm.LocalNodeStateActive {
			t.Fatalf("a worker's info: %+v", info.Swarm)
		}
		code, body := w.call(t, "GET", "/v1.50/nodes", nil)
		wantError(t, "node ls on a worker", code, body, http.StatusServiceUnavailable, "This node is not a swarm manager")
	})
}

func ptr[T any](v T) *T { return &v }

// docker info on a cluster of two managers says that it survives no
// manager failure, and what to add.
func TestInfoWarnsOfTwoManagers(t *testing.T) {
	c := swarmtest.NewTLS(t, swarmtest.TLSOptions{Managers: 2})
	e := serve(t, c, "m0")
	leader := c.Node(c.LeaderName()).Manager()
	c.WaitFor("two voters", func() bool {
		srvs, err := leader.Store().Servers(context.Background())
		voters := 0
		for _, s := range srvs {
			if s.Voter {
				voters++
			}
		}
		return err == nil && voters == 2
	})
	var info system.Info
	e.get(t, "/v1.50/info", &info)
	warned := false
	for _, w := range info.Warnings {
		warned = warned || strings.HasPrefix(w, "WARNING: 2 managers and no arbiter") && strings.Contains(w, "tolerates no manager failure")
	}
	if !warned || info.Swarm.Managers != 2 {
		t.Fatalf("docker info of two managers: managers %d, warnings %q", info.Swarm.Managers, info.Warnings)
	}
}

// A manager without a quorum answers writes 503, and reads from its own
// state.
func TestNoQuorum(t *testing.T) {
	if testing.Short() {
		t.Skip("three managers")
	}
	c := swarmtest.NewTLS(t, swarmtest.TLSOptions{Managers: 3})
	e := serve(t, c, "m0")
	// Kill them once all three vote: a node whose manager still waits to
	// vote does not stop on Close (swarm.Node runs that wait under the
	// context given to Join, not its own).
	leader := c.Node(c.LeaderName()).Manager()
	c.WaitFor("three voters", func() bool {
		srvs, err := leader.Store().Servers(context.Background())
		voters := 0
		for _, s := range srvs {
			if s.Voter {
				voters++
			}
		}
		return err == nil && voters == 3
	})
	c.Kill("m1")
	c.Kill("m2")
	e.http.Timeout = 40 * time.Second
	start := time.Now()
	code, body := e.call(t, "POST", "/v1.50/services/create", `{"Name":"web","TaskTemplate":{"ContainerSpec":{"Image":"x"}}}`)
	var msg struct{ Message string }
	json.Unmarshal(body, &msg)
	t.Logf("a write without quorum: %d %q after %v", code, msg.Message, time.Since(start).Round(time.Millisecond))
	if code != http.StatusServiceUnavailable || !strings.Contains(msg.Message, "no quorum") {
		t.Fatalf("a write without quorum: %d %s", code, body)
	}
	var info system.Info
	e.get(t, "/v1.50/info", &info)
	if info.Swarm.NodeID != c.NodeID("m0") {
		t.Fatalf("info without quorum: %+v", info.Swarm)
	}
}
