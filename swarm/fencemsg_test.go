package swarm

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/syncbuf"
	"github.com/shoalproject/shoal/raftstore"
)

// A fence command fails and prints what only the operator should read:
// the manager's log has it; the read-only error that write refusals carry
// and the cluster's warnings say only that the fence failed.
func TestFenceCommandOutputStaysInTheLog(t *testing.T) {
	const output = "ipmitool: BMC 192.0.2.99 user admin: password rejected"
	var log syncbuf.Buffer
	m := &Manager{ID: "m0", Logger: slog.New(slog.NewTextHandler(&log, nil)),
		TwoNode: &TwoNode{Fencer: &CommandFencer{Path: "sh", Args: []string{"-c", "echo '" + output + "' >&2; exit 1"}}}}
	peer := Peer{ID: "m1", Addr: "192.0.2.2:2377"}
	err := m.fencePeer(context.Background(), nil, peer, raftstore.LastLeader{ID: "m1"}, turnPeerLed)
	if err == nil || !strings.Contains(err.Error(), output) {
		t.Fatalf("fence attempt: %v, want the command's output in it", err)
	}
	m.fenceFailed(peer, err, time.Second) // what the guard does with it

	ro := m.readOnly()
	if ro == nil || strings.Contains(ro.Error(), "password") || !strings.Contains(ro.Error(), "fencing failed (the details are in this manager's log)") {
		t.Fatalf("read-only error shown to clients: %v", ro)
	}
	warnings := m.quorumWarnings(nil, nil)
	if len(warnings) != 1 || strings.Contains(warnings[0], "password") || !strings.Contains(warnings[0], "fencing failed") {
		t.Fatalf("cluster warnings %q", warnings)
	}
	if !strings.Contains(log.String(), "password rejected") {
		t.Fatalf("the manager's log lacks the fence command's output: %s", log.String())
	}
}
