package swarm

import (
	"strings"
	"testing"

	"github.com/shoalproject/shoal/swarm/api"
)

func TestDetectDescriptionFillsWhatIsNotGiven(t *testing.T) {
	d := DetectDescription(api.NodeDescription{})
	if d.Hostname == "" || d.Platform.OS == "" || d.Resources.NanoCPUs <= 0 {
		t.Fatalf("detected: %+v", d)
	}
	if d.Engine.Version != Version() || !strings.HasPrefix(d.Engine.Version, "dev") && !strings.HasPrefix(d.Engine.Version, "v") {
		t.Fatalf("engine version %q, want Shoal's version %q", d.Engine.Version, Version())
	}
	given := api.NodeDescription{Hostname: "h1", Engine: api.Engine{Version: "custom 1.0"}}
	if got := DetectDescription(given); got.Hostname != "h1" || got.Engine.Version != "custom 1.0" {
		t.Fatalf("an override was replaced: %+v", got)
	}
}
