package dockerapi_test

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	dswarm "github.com/moby/moby/api/types/swarm"

	"github.com/shoalproject/shoal/swarm/swarmtest"
)

// Networks, secrets and configs over HTTP, and services that use them.
func TestAPIObjects(t *testing.T) {
	c := swarmtest.NewTLS(t, swarmtest.TLSOptions{Managers: 1, Workers: 1})
	e := serve(t, c, "m0")
	q := url.QueryEscape

	// Events of the objects made here.
	evResp, err := e.http.Get("http://docker/v1.50/events?filters=" + q(`{"type":{"network":true,"secret":true,"config":true}}`))
	if err != nil {
		t.Fatal(err)
	}
	defer evResp.Body.Close()
	evs := make(chan events.Message, 100)
	go func() {
		defer close(evs)
		dec := json.NewDecoder(bufio.NewReader(evResp.Body))
		for {
			var m events.Message
			if dec.Decode(&m) != nil {
				return
			}
			evs <- m
		}
	}()

	var front network.CreateResponse
	t.Run("networks", func(t *testing.T) {
		code, body := e.call(t, "POST", "/v1.50/networks/create", `{"Name":"front","Driver":"overlay","Attachable":true,"Internal":true,
			"IPAM":{"Driver":"default","Config":[{"Subnet":"10.20.0.0/24","Gateway":"10.20.0.254"}]},
			"Options":{"encrypted":""},"Labels":{"tier":"front"}}`)
		if code != http.StatusCreated || json.Unmarshal(body, &front) != nil || front.ID == "" {
			t.Fatalf("create: %d %s", code, body)
		}
		// The 20.10 CLI's request (API 1.41), with CheckDuplicate.
		code, body = e.call(t, "POST", "/v1.41/networks/create", `{"Name":"back","CheckDuplicate":true,"Driver":"overlay","Scope":"",
			"EnableIPv6":false,"IPAM":{"Driver":"default","Options":{},"Config":[]},"Internal":false,"Attachable":false,"Ingress":false,
			"ConfigOnly":false,"ConfigFrom":null,"Options":{},"Labels":{}}`)
		if code != http.StatusCreated {
			t.Fatalf("create as the 20.10 CLI does: %d %s", code, body)
		}
		var n network.Inspect
		for _, ref := range []string{"front", front.ID, front.ID[:6]} {
			e.get(t, "/v1.50/networks/"+ref, &n)
			if n.ID != front.ID {
				t.Fatalf("inspect %s: %s", ref, n.ID)
			}
		}
		if n.Name != "front" || n.Scope != "swarm" || n.Driver != "overlay" || !n.Attachable || !n.Internal || n.Ingress ||
			len(n.IPAM.Config) != 1 || n.IPAM.Config[0].Subnet.String() != "10.20.0.0/24" || n.IPAM.Config[0].Gateway.String() != "10.20.0.254" ||
			n.Labels["tier"] != "front" || n.Options["com.docker.network.driver.overlay.vxlanid_list"] == "" {
			t.Fatalf("inspect: %+v", n)
		}
		if _, ok := n.Options["encrypted"]; !ok {
			t.Fatalf("an encrypted network without the encrypted option: %v", n.Options)
		}
		e.get(t, "/v1.50/networks/back", &n)
		if len(n.IPAM.Config) != 1 || !n.IPAM.Config[0].Subnet.IsValid() || n.Attachable {
			t.Fatalf("a network with an allocated subnet: %+v", n)
		}

		list := func(filters string) []string {
			var ns []network.Summary
			e.get(t, "/v1.50/networks?filters="+q(filters), &ns)
			var names []string
			for _, n := range ns {
				names = append(names, n.Name)
			}
			slices.Sort(names)
			return names
		}
		for _, c := range []struct{ filters, want string }{
			{``, "back front ingress"},
			{`{"label":{"tier=front":true}}`, "front"},
			{`{"name":{"ron":true}}`, "front"},
			{`{"id":{"` + front.ID[:5] + `":true}}`, "front"},
			{`{"driver":{"overlay":true}}`, "back front ingress"},
			{`{"driver":{"bridge":true}}`, ""},
			{`{"scope":{"local":true}}`, ""},
			{`{"type":{"builtin":true}}`, "ingress"},
			{`{"type":{"custom":true}}`, "back front"},
			{`{"dangling":{"true":true}}`, "back front"},
		} {
			if got := strings.Join(list(c.filters), " "); got != c.want {
				t.Errorf("networks %s: got %q, want %q", c.filters, got, c.want)
			}
		}

		for _, c := range []struct{ body, want string }{
			{`{"Name":"br","Driver":"bridge"}`, "Driver (--driver bridge: Shoal's networks span the swarm and are overlay networks; use --driver overlay)"},
			{`{"Name":"x","Driver":"overlay","EnableIPv6":true,"Options":{"com.docker.network.driver.mtu":"1400"},
				"IPAM":{"Driver":"foo","Config":[{"Subnet":"10.30.0.0/24","IPRange":"10.30.0.0/25","AuxiliaryAddresses":{"a":"10.30.0.9"}},{"Subnet":"fd00::/64"}]}}`,
				"EnableIPv6 (--ipv6: Shoal's networks are IPv4 only), Options[com.docker.network.driver.mtu] (--opt com.docker.network.driver.mtu: the only driver option is encrypted), IPAM.Driver (--ipam-driver foo: Shoal allocates addresses itself), IPAM.Config[1] (a second --subnet"},
			{`{"Name":"x","Driver":"overlay","Scope":"local","ConfigOnly":true}`, "Scope (--scope local: Shoal's networks are swarm-scoped), ConfigOnly (--config-only)"},
			{`{"Name":"x","Driver":"overlay","Options":{"encrypted":"maybe"}}`, "Options[encrypted] (--opt encrypted=maybe: give no value, true or false)"},
		} {
			code, body := e.call(t, "POST", "/v1.50/networks/create", c.body)
			wantError(t, "unsupported: "+c.body, code, body, 400, c.want)
		}
		code, body = e.call(t, "POST", "/v1.50/networks/create", `{"Name":"x","Driver":"overlay","IPAM":{"Config":[{"Subnet":"10.30.0.0/24","IPRange":"10.31.0.0/25"}]}}`)
		wantError(t, "an IP range outside the subnet", code, body, 400, "spec.ipam.ipRange: 10.31.0.0/25 is not inside subnet 10.30.0.0/24")
		code, body = e.call(t, "POST", "/v1.50/networks/create", `{"Name":"x","Driver":"overlay","IPAM":{"Config":[{"Subnet":"10.30.0.0/24","Gateway":"10.31.0.1"}]}}`)
		wantError(t, "a gateway outside the subnet", code, body, 400, "spec.ipam.gateway: 10.31.0.1 is not inside subnet 10.30.0.0/24")
		code, body = e.call(t, "POST", "/v1.50/networks/create", `{"Name":"x","Driver":"overlay","IPAM":{"Config":[{"Subnet":"10.20.0.0/24"}]}}`)
		wantError(t, "a subnet taken", code, body, 400, "spec.ipam.subnet")
		code, body = e.call(t, "POST", "/v1.50/networks/create", `{"Name":"x","Driver":"overlay","IPAM":{"Config":[{"Subnet":"not-a-subnet"}]}}`)
		wantError(t, "a malformed subnet", code, body, 400, "request body")
		code, body = e.call(t, "POST", "/v1.50/networks/create", `{"Name":"front","Driver":"overlay"}`)
		wantError(t, "a name in use", code, body, http.StatusConflict, `network "front" exists`)
		code, body = e.call(t, "POST", "/v1.50/networks/create", `{"Name":"x","Driver":"overlay","Colour":"red"}`)
		wantError(t, "an unknown field", code, body, 400, `unknown field "Colour"`)
		code, body = e.call(t, "POST", "/v1.50/networks/create", `{"Name":`)
		wantError(t, "broken JSON", code, body, 400, "request body")
		code, body = e.call(t, "GET", "/v1.50/networks/nope", nil)
		wantError(t, "an unknown network", code, body, 404, "network nope not found")
		code, body = e.call(t, "GET", "/v1.50/networks/front?scope=local", nil)
		wantError(t, "a local network", code, body, 404, "swarm-scoped")
		code, body = e.call(t, "GET", `/v1.50/networks?filters={"colour":{"red":true}}`, nil)
		wantError(t, "an unknown filter", code, body, 400, "invalid filter 'colour'")
		code, body = e.call(t, "GET", `/v1.50/networks?filters={"dangling":{"maybe":true}}`, nil)
		wantError(t, "a bad dangling", code, body, 400, "invalid filter 'dangling=maybe'")
		code, body = e.call(t, "GET", `/v1.50/networks?filters={"type":{"odd":true}}`, nil)
		wantError(t, "a bad type", code, body, 400, "invalid filter 'type=odd'")
	})

	var secretID, configID string
	t.Run("secrets and configs", func(t *testing.T) {
		data := base64.StdEncoding.EncodeToString([]byte("hunter2"))
		code, body := e.call(t, "POST", "/v1.50/secrets/create", `{"Name":"dbpw","Labels":{"env":"prod"},"Data":"`+data+`"}`)
		var created dswarm.SecretCreateResponse
		if code != http.StatusCreated || json.Unmarshal(body, &created) != nil || created.ID == "" {
			t.Fatalf("secret create: %d %s", code, body)
		}
		secretID = created.ID
		var s dswarm.Secret
		e.get(t, "/v1.50/secrets/dbpw", &s)
		if s.ID != secretID || s.Spec.Name != "dbpw" || s.Spec.Labels["env"] != "prod" || len(s.Spec.Data) != 0 || s.Version.Index == 0 {
			t.Fatalf("secret inspect: %+v", s)
		}
		for _, path := range []string{"/v1.50/secrets/" + secretID, "/v1.50/secrets", "/v1.50/secrets?filters=" + q(`{"name":{"db":true}}`)} {
			if _, raw := e.call(t, "GET", path, nil); strings.Contains(string(raw), data) || strings.Contains(string(raw), "hunter2") {
				t.Fatalf("GET %s gives the secret's data: %s", path, raw)
			}
		}
		var ss []dswarm.Secret
		e.get(t, "/v1.50/secrets?filters="+q(`{"label":{"env=prod":true}}`), &ss)
		if len(ss) != 1 || ss[0].ID != secretID {
			t.Fatalf("secrets env=prod: %+v", ss)
		}
		e.get(t, "/v1.50/secrets?filters="+q(`{"names":{"zz":true}}`), &ss)
		if len(ss) != 0 {
			t.Fatalf("secrets names=zz: %+v", ss)
		}

		// Labels change; the data may come back as it is (stack deploy
		// sends it), not changed.
		s.Spec.Labels["env"] = "staging"
		s.Spec.Data = []byte("hunter2")
		code, body = e.call(t, "POST", fmt.Sprintf("/v1.50/secrets/%s/update?version=%d", secretID, s.Version.Index), s.Spec)
		if code != 200 {
			t.Fatalf("secret label update: %d %s", code, body)
		}
		e.get(t, "/v1.50/secrets/"+secretID, &s)
		if s.Spec.Labels["env"] != "staging" {
			t.Fatalf("labels after update: %v", s.Spec.Labels)
		}
		s.Spec.Data = []byte("other")
		code, body = e.call(t, "POST", fmt.Sprintf("/v1.50/secrets/%s/update?version=%d", secretID, s.Version.Index), s.Spec)
		wantError(t, "a data change", code, body, 400, "only a secret's labels can change")
		code, body = e.call(t, "POST", fmt.Sprintf("/v1.50/secrets/%s/update?version=%d", secretID, s.Version.Index-1), dswarm.SecretSpec{Annotations: s.Spec.Annotations})
		wantError(t, "a stale version", code, body, http.StatusConflict, "read it again")
		code, body = e.call(t, "POST", "/v1.50/secrets/"+secretID+"/update", s.Spec)
		wantError(t, "no version", code, body, 400, "invalid secret version")
		code, body = e.call(t, "POST", "/v1.50/secrets/create", `{"Name":"ext","Data":"eA==","Driver":{"Name":"vault"}}`)
		wantError(t, "a secret driver", code, body, 400, "not supported by Shoal: Driver (--driver")
		code, body = e.call(t, "POST", "/v1.50/secrets/create", `{"Name":"empty"}`)
		wantError(t, "no data", code, body, 400, "spec.data: is required")
		code, body = e.call(t, "POST", "/v1.50/secrets/create", `{"Name":"dbpw","Data":"eA=="}`)
		wantError(t, "a name in use", code, body, http.StatusConflict, `secret "dbpw" exists`)
		code, body = e.call(t, "POST", "/v1.50/secrets/create", `{"Name":"x","Data":"not base64!"}`)
		wantError(t, "data not base64", code, body, 400, "request body")
		code, body = e.call(t, "GET", "/v1.50/secrets/nope", nil)
		wantError(t, "an unknown secret", code, body, 404, "secret nope not found")
		code, body = e.call(t, "GET", `/v1.50/secrets?filters={"driver":{"x":true}}`, nil)
		wantError(t, "an unknown filter", code, body, 400, "invalid filter 'driver'")

		code, body = e.call(t, "POST", "/v1.50/configs/create", dswarm.ConfigSpec{Annotations: dswarm.Annotations{Name: "app.conf", Labels: map[string]string{"a": "b"}}, Data: []byte("port=80\n")})
		var cc dswarm.ConfigCreateResponse
		if code != http.StatusCreated || json.Unmarshal(body, &cc) != nil {
			t.Fatalf("config create: %d %s", code, body)
		}
		configID = cc.ID
		var cfg dswarm.Config
		e.get(t, "/v1.50/configs/app.conf", &cfg)
		if cfg.ID != configID || string(cfg.Spec.Data) != "port=80\n" || cfg.Spec.Labels["a"] != "b" {
			t.Fatalf("config inspect: %+v", cfg)
		}
		cfg.Spec.Labels = map[string]string{"c": "d"}
		code, body = e.call(t, "POST", fmt.Sprintf("/v1.50/configs/%s/update?version=%d", configID, cfg.Version.Index), cfg.Spec)
		if code != 200 {
			t.Fatalf("config label update: %d %s", code, body)
		}
		var cs []dswarm.Config
		e.get(t, "/v1.50/configs?filters="+q(`{"label":{"c":true}}`), &cs)
		if len(cs) != 1 || cs[0].ID != configID || cs[0].Spec.Labels["a"] != "" {
			t.Fatalf("configs with label c: %+v", cs)
		}
		code, body = e.call(t, "POST", "/v1.50/configs/create", `{"Name":"t","Data":"eA==","Templating":{"Name":"golang"}}`)
		wantError(t, "a template driver", code, body, 400, "not supported by Shoal: Templating (--template-driver")
	})

	t.Run("services that use them", func(t *testing.T) {
		spec := dswarm.ServiceSpec{
			Annotations: dswarm.Annotations{Name: "web", Labels: map[string]string{"com.docker.stack.namespace": "shop"}},
			TaskTemplate: dswarm.TaskSpec{
				ContainerSpec: &dswarm.ContainerSpec{Image: "example/web:1",
					Secrets: []*dswarm.SecretReference{{SecretName: "dbpw", File: &dswarm.SecretReferenceFileTarget{Name: "db_password", UID: "0", GID: "0", Mode: 0o400}}},
					Configs: []*dswarm.ConfigReference{{ConfigName: "app.conf", File: &dswarm.ConfigReferenceFileTarget{Name: "/etc/app.conf", UID: "0", GID: "0", Mode: 0o444}}},
					Mounts: []mount.Mount{{Type: "volume", Source: "shop_data", Target: "/data",
						VolumeOptions: &mount.VolumeOptions{Labels: map[string]string{"com.docker.stack.namespace": "shop"}}}},
				},
				Networks: []dswarm.NetworkAttachmentConfig{{Target: "front", Aliases: []string{"www"}}, {Target: "back"}},
			},
			EndpointSpec: &dswarm.EndpointSpec{Ports: []dswarm.PortConfig{
				{Protocol: "tcp", TargetPort: 80, PublishedPort: 8080, PublishMode: dswarm.PortConfigPublishModeIngress},
				{Protocol: "tcp", TargetPort: 90, PublishedPort: 9090, PublishMode: dswarm.PortConfigPublishModeHost},
			}},
		}
		code, body := e.call(t, "POST", "/v1.50/services/create", spec)
		if code != http.StatusCreated {
			t.Fatalf("create: %d %s", code, body)
		}
		var s dswarm.Service
		e.get(t, "/v1.50/services/web", &s)
		var back network.Inspect
		e.get(t, "/v1.50/networks/back", &back)
		cs := s.Spec.TaskTemplate.ContainerSpec
		nets := s.Spec.TaskTemplate.Networks
		slices.SortFunc(nets, func(a, b dswarm.NetworkAttachmentConfig) int { return strings.Compare(a.Target, b.Target) })
		wantNets := []dswarm.NetworkAttachmentConfig{{Target: front.ID, Aliases: []string{"www"}}, {Target: back.ID}}
		slices.SortFunc(wantNets, func(a, b dswarm.NetworkAttachmentConfig) int { return strings.Compare(a.Target, b.Target) })
		if jsonString(nets) != jsonString(wantNets) {
			t.Fatalf("networks: %s, want %s", jsonString(nets), jsonString(wantNets))
		}
		if len(cs.Secrets) != 1 || cs.Secrets[0].SecretID != secretID || cs.Secrets[0].SecretName != "dbpw" || cs.Secrets[0].File.Name != "db_password" || cs.Secrets[0].File.Mode != 0o400 ||
			len(cs.Configs) != 1 || cs.Configs[0].ConfigID != configID || cs.Configs[0].File.Name != "/etc/app.conf" || cs.Configs[0].File.Mode != 0o444 {
			t.Fatalf("secrets and configs: %s %s", jsonString(cs.Secrets), jsonString(cs.Configs))
		}
		if len(cs.Mounts) != 1 || cs.Mounts[0].Source != "shop_data" || cs.Mounts[0].Type != "volume" {
			t.Fatalf("mounts: %s", jsonString(cs.Mounts))
		}
		ports := s.Endpoint.Ports
		if len(ports) != 2 || ports[0].PublishedPort != 8080 || ports[0].PublishMode != "ingress" || ports[1].PublishedPort != 9090 || ports[1].PublishMode != "host" {
			t.Fatalf("ports: %s", jsonString(ports))
		}
		// A VIP on each of its networks and on ingress.
		poll(t, "three VIPs", func() bool {
			e.get(t, "/v1.50/services/web", &s)
			return len(s.Endpoint.VirtualIPs) == 3
		})

		// Tasks by the service's labels (docker stack ps).
		poll(t, "the task running", func() bool {
			var ts []dswarm.Task
			e.get(t, "/v1.50/tasks?filters="+q(`{"label":{"com.docker.stack.namespace=shop":true},"desired-state":{"running":true}}`), &ts)
			return len(ts) == 1 && ts[0].ServiceID == s.ID && ts[0].Status.State == dswarm.TaskStateRunning
		})
		var ts []dswarm.Task
		e.get(t, "/v1.50/tasks?filters="+q(`{"label":{"com.docker.stack.namespace=other":true}}`), &ts)
		if len(ts) != 0 {
			t.Fatalf("tasks of another stack: %d", len(ts))
		}

		// In use: refused with the service named; dockerd's status.
		for _, path := range []string{"/v1.50/networks/front", "/v1.50/secrets/dbpw", "/v1.50/configs/app.conf"} {
			code, body := e.call(t, "DELETE", path, nil)
			wantError(t, "removing "+path+" in use", code, body, 400, "is in use by service(s) web")
		}
		var dangling []network.Summary
		e.get(t, "/v1.50/networks?filters="+q(`{"dangling":{"true":true}}`), &dangling)
		if len(dangling) != 0 {
			t.Fatalf("dangling networks while web uses both: %+v", dangling)
		}

		// Unsupported references.
		bad := spec
		bad.Name = "bad"
		bad.EndpointSpec = nil
		bad.TaskTemplate.Networks = []dswarm.NetworkAttachmentConfig{{Target: "ingress"}}
		code, body = e.call(t, "POST", "/v1.50/services/create", bad)
		wantError(t, "a service on ingress", code, body, 400, "the ingress network is for published ports")
		bad.TaskTemplate.Networks = []dswarm.NetworkAttachmentConfig{{Target: "nope"}}
		code, body = e.call(t, "POST", "/v1.50/services/create", bad)
		wantError(t, "an unknown network", code, body, 400, `network "nope" does not exist`)
		bad.TaskTemplate.Networks = nil
		bad.TaskTemplate.ContainerSpec.Mounts = []mount.Mount{{Type: "volume", Source: "v", Target: "/v", VolumeOptions: &mount.VolumeOptions{Labels: map[string]string{"owner": "me"}}}}
		code, body = e.call(t, "POST", "/v1.50/services/create", bad)
		wantError(t, "a volume label", code, body, 400, "TaskTemplate.ContainerSpec.Mounts[0].VolumeOptions.Labels (--mount volume-label=...)")

		code, body = e.call(t, "DELETE", "/v1.50/services/web", nil)
		if code != 200 {
			t.Fatalf("service rm: %d %s", code, body)
		}
		for _, path := range []string{"/v1.50/networks/front", "/v1.50/networks/back", "/v1.50/secrets/" + secretID[:6], "/v1.50/configs/app.conf"} {
			if code, body := e.call(t, "DELETE", path, nil); code != http.StatusNoContent {
				t.Fatalf("DELETE %s once unused: %d %s", path, code, body)
			}
		}
		code, body = e.call(t, "DELETE", "/v1.50/networks/front", nil)
		wantError(t, "a removed network", code, body, 404, "network front not found")
		code, body = e.call(t, "DELETE", "/v1.50/secrets/dbpw", nil)
		wantError(t, "a removed secret", code, body, 404, "secret dbpw not found")
	})

	// The events of it all, in Docker's form.
	want := []string{"network create front", "network create back", "secret create dbpw", "secret update dbpw", "config create app.conf",
		"network remove front", "secret remove dbpw", "config remove app.conf"}
	var got []string
	timeout := time.After(time.Minute)
	for slices.ContainsFunc(want, func(w string) bool { return !slices.Contains(got, w) }) {
		select {
		case m, ok := <-evs:
			if !ok {
				t.Fatalf("the event stream ended; events %q", got)
			}
			if m.Scope != "swarm" || m.Actor.ID == "" {
				t.Fatalf("event: %+v", m)
			}
			got = append(got, fmt.Sprintf("%s %s %s", m.Type, m.Action, m.Actor.Attributes["name"]))
		case <-timeout:
			t.Fatalf("events %q, want all of %q", got, want)
		}
	}
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
