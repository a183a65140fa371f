package scheduler

import (
	"errors"
	"testing"
)

// The one table of Shoal's constraint grammar (the API validates specs
// with ParseConstraint too).
func TestConstraintGrammar(t *testing.T) {
	node := &Node{ID: "abc", Hostname: "h1", Role: "manager", OS: "linux", Arch: "x86_64",
		Labels: map[string]string{"zone": "East", "Rack": "r1"}, EngineLabels: map[string]string{"disk": "ssd"}}
	for _, c := range []struct {
		in    string
		ok    bool
		match bool
	}{
		{"node.id==abc", true, true},
		{"node.hostname!=h1", true, false},
		{"node.role==manager", true, true},
		{"node.role==Manager", true, true}, // values without regard to case
		{"NODE.ROLE==manager", true, true}, // keys too
		{"node.role!=worker", true, true},
		{"node.platform.os==linux", true, true},
		{"node.platform.arch==amd64", true, true}, // x86_64 is amd64
		{"node.platform.arch!=arm64", true, true},
		{"node.labels.zone == east", true, true}, // spaces around the operator
		{"node.labels.Rack==r1", true, true},     // label names keep their case
		{"node.labels.rack==r1", true, false},
		{"node.labels.missing!=x", true, true}, // a missing label is never equal
		{"node.labels.missing==x", true, false},
		{"engine.labels.disk==ssd", true, true},
		{"", false, false},
		{"node.id", false, false},
		{"node.id=abc", false, false},
		{"node.labels.==x", false, false},
		{"node.labels.zone==", false, false},
		{"foo==bar", false, false},
		{"node.id==a==b", false, false},
		{"node.id==a!=b", false, false},
		{"node.role==king", false, false},
		{"node.labels.a b==x", false, false},
		{"node.labels.a=b==x", false, false},
	} {
		con, err := ParseConstraint(c.in)
		if (err == nil) != c.ok {
			t.Errorf("%q: err %v, want ok=%v", c.in, err, c.ok)
			continue
		}
		if err != nil {
			if !errors.Is(err, ErrBadConstraint) {
				t.Errorf("%q: %v does not wrap ErrBadConstraint", c.in, err)
			}
			continue
		}
		if got := con.Match(node); got != c.match {
			t.Errorf("%q on the node: %v, want %v", c.in, got, c.match)
		}
	}
}
