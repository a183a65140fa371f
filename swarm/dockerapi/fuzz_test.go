package dockerapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	dswarm "github.com/moby/moby/api/types/swarm"

	"github.com/shoalproject/shoal/swarm/api"
)

// Any Docker spec converts without a panic: to a Shoal spec that
// validates without a panic and survives its own round trip, or to an
// *UnsupportedFieldsError.
func FuzzServiceSpecFromDocker(f *testing.F) {
	f.Add([]byte(`{"Name":"web","TaskTemplate":{"ContainerSpec":{"Image":"busybox"}},"Mode":{"Replicated":{"Replicas":3}}}`))
	f.Add([]byte(`{"Name":"j","TaskTemplate":{"ContainerSpec":{"Image":"x","TTY":true}},"Mode":{"ReplicatedJob":{"MaxConcurrent":0}}}`))
	f.Add([]byte(`{"TaskTemplate":{"Resources":{"Limits":{},"Reservations":{"GenericResources":[{"DiscreteResourceSpec":{"Kind":"gpu","Value":2}}]}},
		"Placement":{"Preferences":[{"Spread":{"SpreadDescriptor":"node.labels.zone"}}]}},"Mode":{"Global":{},"GlobalJob":{}}}`))
	f.Add([]byte(`{"TaskTemplate":{"ContainerSpec":{"Mounts":[{"Type":"tmpfs","Target":"/t","TmpfsOptions":{"SizeBytes":-1}}],
		"Healthcheck":{"Interval":-5},"Secrets":[null,{"SecretName":"s"}]}},"EndpointSpec":{"Ports":[{"TargetPort":70000}]}}`))
	full, _ := json.Marshal(ServiceSpecToDocker(fullSpec()))
	f.Add(full)
	f.Fuzz(func(t *testing.T, data []byte) {
		var d dswarm.ServiceSpec
		if json.Unmarshal(data, &d) != nil {
			return
		}
		s, err := ServiceSpecFromDocker(d)
		if err != nil {
			var ue *UnsupportedFieldsError
			if !errors.As(err, &ue) || len(ue.Fields) == 0 || err.Error() == "" {
				t.Fatalf("not an *UnsupportedFieldsError: %v", err)
			}
			return
		}
		_ = s.Validate()
		back, err := ServiceSpecFromDocker(ServiceSpecToDocker(s))
		if err != nil {
			t.Fatalf("a converted spec does not convert back: %v", err)
		}
		a, _ := json.Marshal(s)
		b, _ := json.Marshal(back)
		if string(a) != string(b) {
			t.Fatalf("the round trip changed the spec:\n%s\n%s", a, b)
		}
		_ = ServiceToDocker(&api.Service{Spec: s, PreviousSpec: &s, UpdateStatus: &api.UpdateStatus{}})
	})
}

// Any request to any endpoint answers without a panic and without a 500:
// a success, or Docker's error JSON with a message; and never the data of
// a secret (the fake backend hands it out; the handler must not).
func FuzzHandler(f *testing.F) {
	for _, s := range []struct {
		method      byte
		path, query string
		body        string
	}{
		{0, "networks", `filters={"dangling":{"true":true},"type":{"custom":true}}`, ""},
		{1, "networks/create", "", `{"Name":"n","Driver":"overlay","IPAM":{"Config":[{"Subnet":"10.9.0.0/24","Gateway":"10.9.0.1"}]},"Options":{"encrypted":""}}`},
		{1, "networks/create", "", `{"Name":"n","CheckDuplicate":true,"EnableIPv6":true,"IPAM":{"Config":[{"Subnet":"fd00::/64"},{}]}}`},
		{0, "networks/front", "scope=local&verbose=1", ""},
		{2, "networks/net1", "", ""},
		{1, "secrets/create", "", `{"Name":"pw","Data":"eA==","Labels":{"a":"b"}}`},
		{0, "secrets", `filters={"names":{"p":true}}`, ""},
		{0, "secrets/pw", "", ""},
		{1, "secrets/sec1/update", "version=3", `{"Name":"pw","Data":"aHVudGVyMi1mdXp6"}`},
		{1, "configs/create", "", `{"Name":"c","Data":"eA==","Templating":{"Name":"golang"}}`},
		{0, "configs", `filters={"label":{"a":true}}`, ""},
		{1, "configs/cfg1/update", "version=x", `{}`},
		{2, "configs/app.conf", "", ""},
		{1, "services/create", "", `{"Name":"s","TaskTemplate":{"ContainerSpec":{"Image":"x","Secrets":[{"SecretName":"pw"}]},"Networks":[{"Target":"front"}]}}`},
		{0, "services", `status=true&filters={"label":{"com.docker.stack.namespace=st":true}}`, ""},
		{0, "tasks", `filters={"label":{"com.docker.stack.namespace":true},"service":{"web":true}}`, ""},
		{0, "events", `filters={"type":{"network":true}}`, ""},
		{0, "services/web/logs", "", ""},
		{1, "containers/create", "", "{}"},
		{0, "info", "", ""},
		{0, "swarm", "", ""},
		{1, "nodes/node1/update", "version=2", `{"Role":"manager","Availability":"drain"}`},
	} {
		f.Add(s.method, s.path, s.query, []byte(s.body))
	}
	methods := []string{http.MethodGet, http.MethodPost, http.MethodDelete, http.MethodHead, http.MethodPut}
	h := &Handler{Backend: memBackend{}}
	// A cancelled context: the event stream ends at once.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	f.Fuzz(func(t *testing.T, m byte, path, query string, body []byte) {
		req := (&http.Request{
			Method: methods[int(m)%len(methods)], URL: &url.URL{Path: "/v1.50/" + path, RawQuery: query},
			Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(bytes.NewReader(body)),
			Host: "docker",
		}).WithContext(ctx)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		out := w.Body.String()
		if w.Code >= 500 && w.Code != http.StatusNotImplemented {
			t.Fatalf("%s %s?%s: %d %s", req.Method, req.URL.Path, query, w.Code, out)
		}
		if hasFakeSecret(out) {
			t.Fatalf("%s %s?%s shows a secret's data: %s", req.Method, req.URL.Path, query, out)
		}
		if w.Code >= 400 {
			var e struct{ Message string }
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Message == "" {
				t.Fatalf("%s %s?%s: %d not Docker's error JSON: %q", req.Method, req.URL.Path, query, w.Code, out)
			}
		}
	})
}

// Any network create request converts without a panic, to a spec or to
// an *UnsupportedFieldsError naming fields.
func FuzzNetworkSpecFromDocker(f *testing.F) {
	f.Add([]byte(`{"Name":"n","Driver":"overlay","IPAM":{"Driver":"default","Config":[{"Subnet":"10.9.0.0/24","IPRange":"10.9.0.0/25","Gateway":"10.9.0.1"}]},"Options":{"encrypted":"true","mtu":"1"}}`))
	f.Add([]byte(`{"Name":"n","EnableIPv4":false,"EnableIPv6":true,"ConfigFrom":{"Network":"x"},"IPAM":{"Config":[{"Gateway":"10.0.0.1"},{}]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var d NetworkCreateRequest
		if json.Unmarshal(data, &d) != nil {
			return
		}
		s, err := NetworkSpecFromDocker(d.CreateRequest)
		if err != nil {
			var ue *UnsupportedFieldsError
			if !errors.As(err, &ue) || len(ue.Fields) == 0 {
				t.Fatalf("not an *UnsupportedFieldsError: %v", err)
			}
			return
		}
		if s.Driver != "overlay" {
			t.Fatalf("driver %q", s.Driver)
		}
		_ = s.Validate()
		_ = NetworkToDocker(&api.Network{Spec: s, IPAM: s.IPAM})
	})
}
