package swarm

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/go-json-experiment/json"

	"github.com/shoalproject/shoal/swarm/api"
)

// A worker's report with text the store's JSON refuses (a long message
// cut inside a character, bytes that are not UTF-8, a year past 9999)
// is made storable instead of failing the node's whole batch for ever.
func TestStatusReportsAreMadeStorable(t *testing.T) {
	st := api.TaskStatus{State: api.TaskRunning,
		Message:     "a" + strings.Repeat("é", maxStatusText), // 2 bytes each after one: the cut falls inside one
		Err:         "exit \xff\xfe",
		ContainerID: "c\xc3",
		Ports:       []api.PortConfig{{Name: "p\xff", Protocol: api.TCP, TargetPort: 80, PublishedPort: 8080, PublishMode: api.PublishHost}},
		Timestamp:   time.Date(12000, 1, 1, 0, 0, 0, 0, time.UTC)}
	if err := checkStatus("t1", &st); err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]string{"message": st.Message, "err": st.Err, "container": st.ContainerID, "port name": st.Ports[0].Name} {
		if !utf8.ValidString(s) {
			t.Errorf("%s %q is not valid UTF-8", name, s)
		}
	}
	if len(st.Message) > maxStatusText+len("…") {
		t.Errorf("message of %d bytes, want at most %d", len(st.Message), maxStatusText+len("…"))
	}
	if _, err := json.Marshal(&st); err != nil {
		t.Fatalf("the store cannot encode the report: %v", err)
	}
	// A container ID that only grows past its bound once made valid is
	// refused, not stored at twice the bound; so are unknown port kinds.
	for name, bad := range map[string]api.TaskStatus{
		"container ID": {State: api.TaskRunning, ContainerID: strings.Repeat("a\xff", 64)},
		"protocol":     {State: api.TaskRunning, Ports: []api.PortConfig{{Protocol: "tcp\xff"}}},
		"publish mode": {State: api.TaskRunning, Ports: []api.PortConfig{{PublishMode: "everywhere"}}},
	} {
		if err := checkStatus("t1", &bad); !errors.Is(err, api.ErrInvalidSpec) {
			t.Errorf("a report with a bad %s: %v, want it refused", name, err)
		}
	}
}
