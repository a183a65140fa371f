package swarm

import (
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
		Message:     strings.Repeat("é", maxStatusText), // 2 bytes each: the cut falls inside one
		Err:         "exit \xff\xfe",
		ContainerID: "c\xc3",
		Timestamp:   time.Date(12000, 1, 1, 0, 0, 0, 0, time.UTC)}
	if err := checkStatus("t1", &st); err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]string{"message": st.Message, "err": st.Err, "container": st.ContainerID} {
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
}
