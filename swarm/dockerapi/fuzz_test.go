package dockerapi

import (
	"encoding/json"
	"errors"
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
