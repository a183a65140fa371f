package raftstore

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// The recoveries (RecoverAlone on a running member, Recover offline) are
// killed with SIGKILL at their critical points: before anything is
// rewritten (raft stopped), right after the snapshot with the one-voter
// configuration is written (the log not cut yet), and right after the log
// is cut. The member restarted from the same dir is
// in one configuration or the other (finishing the recovery again where
// it is the old one), leads alone and has every write it acknowledged.

const recoverStageEnv = "SHOAL_RECOVER_CRASH_STAGE"

// pausingLog stops the process's recovery at stage: it prints "paused"
// and waits for the parent's SIGKILL.
type pausingLog struct {
	raft.LogStore
	stage string
}

func (l pausingLog) DeleteRange(min, max uint64) error {
	if l.stage == "snapshot-written" {
		l.pause()
	}
	err := l.LogStore.DeleteRange(min, max)
	if l.stage == "log-cut" {
		l.pause()
	}
	return err
}

func (l pausingLog) pause() {
	fmt.Println("paused", l.stage)
	time.Sleep(2 * time.Minute) // the parent kills it long before
	os.Exit(3)
}

// recoverCrashChild runs two members (m0 on dir, m1 in memory), writes
// and acknowledges items, stops m1 and recovers m0 alone, pausing at the
// stage in the environment. offline: both stop and m0 is recovered with
// Recover; otherwise m0 runs RecoverAlone.
func recoverCrashChild(dir string, offline bool) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "recover crash child:", err)
		os.Exit(2)
	}
	ctx := context.Background()
	net := NewMemNetwork()
	two := []Server{{ID: "m0", Address: "m0", Voter: true}, {ID: "m1", Address: "m1", Voter: true}}
	member := func(id, dir string) *Store {
		s := &Store{ID: id, Dir: dir, Schema: testSchema(), Transport: net.Transport(id), Bootstrap: two, SnapshotThreshold: 8, TrailingLogs: 4,
			HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond, LeaderLeaseTimeout: 100 * time.Millisecond}
		if err := s.Start(ctx); err != nil {
			fail(err)
		}
		return s
	}
	m0, m1 := member("m0", dir), member("m1", "")
	for i := 0; i < 40; {
		lead := m0
		if m1.IsLeader() {
			lead = m1
		}
		id := fmt.Sprint("i", i)
		err := lead.Update(ctx, func(tx *Tx) error { return tx.Create("items", &item{ID: id}) })
		if err != nil {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		fmt.Println("ack", id)
		if i++; i == 20 {
			// The recovery replays a snapshot and the log after it.
			if err := m0.Snapshot(ctx); err != nil {
				fail(err)
			}
		}
	}
	m1.Close() // the peer is off (fenced)
	recoveryLog = func(l raft.LogStore) raft.LogStore {
		p := pausingLog{LogStore: l, stage: os.Getenv(recoverStageEnv)}
		if p.stage == "raft-stopped" { // nothing rewritten yet
			p.pause()
		}
		return p
	}
	if offline {
		m0.Close()
		if _, err := (&Store{ID: "m0", Dir: dir, Schema: testSchema()}).Recover(ctx, []Server{{ID: "m0", Address: "m0", Voter: true}}); err != nil {
			fail(err)
		}
	} else {
		for m0.IsLeader() { // a leader needs no recovery; it steps down after its lease
			time.Sleep(10 * time.Millisecond)
		}
		if err := m0.RecoverAlone(ctx); err != nil {
			fail(err)
		}
	}
	fail(fmt.Errorf("recovered without pausing at %q", os.Getenv(recoverStageEnv)))
}

func TestKillDuringRecoverAloneLeavesOneConfiguration(t *testing.T) {
	testKillDuringRecovery(t, "TestKillDuringRecoverAloneLeavesOneConfiguration", false)
}

func TestKillDuringRecoverLeavesOneConfiguration(t *testing.T) {
	testKillDuringRecovery(t, "TestKillDuringRecoverLeavesOneConfiguration", true)
}

func testKillDuringRecovery(t *testing.T, name string, offline bool) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		recoverCrashChild(dir, offline)
		return
	}
	if testing.Short() {
		t.Skip("kills child processes")
	}
	ctx := context.Background()
	for _, stage := range []string{"raft-stopped", "snapshot-written", "log-cut"} {
		dir := t.TempDir()
		cmd, lines := crashChild(t, name, dir, recoverStageEnv+"="+stage)
		var acked []string
		paused := false
		for lines.Scan() {
			if id, ok := strings.CutPrefix(lines.Text(), "ack "); ok {
				acked = append(acked, id)
			}
			if paused = lines.Text() == "paused "+stage; paused {
				break
			}
		}
		if !paused || len(acked) != 40 {
			t.Fatalf("%s: the child did not pause (%d writes acknowledged)", stage, len(acked))
		}
		kill9(t, cmd)

		s := &Store{ID: "m0", Dir: dir, Schema: testSchema(), Transport: NewMemNetwork().Transport("m0"),
			HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond, LeaderLeaseTimeout: 100 * time.Millisecond}
		if err := s.Start(ctx); err != nil {
			t.Fatalf("%s: restart after kill -9: %v", stage, err)
		}
		voters := votersOf(t, s)
		switch {
		case len(voters) == 1 && voters["m0"]:
			t.Logf("%s: restarted in the new configuration (m0 alone)", stage)
		case len(voters) == 2 && voters["m0"] && voters["m1"]:
			// The old one: the recovery is done again.
			t.Logf("%s: restarted in the old configuration; recovering again", stage)
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := s.RecoverAlone(rctx)
			cancel()
			if err != nil {
				t.Fatalf("%s: recovering again: %v", stage, err)
			}
		default:
			t.Fatalf("%s: restarted with voters %v: neither the old configuration nor the new", stage, voters)
		}
		eventually(t, stage+": m0 leads alone", s.IsLeader)
		if err := s.Barrier(ctx); err != nil {
			t.Fatal(err)
		}
		var missing []string
		s.View(func(tx *ReadTx) error {
			for _, id := range acked {
				if _, err := tx.Get("items", id); err != nil {
					missing = append(missing, id)
				}
			}
			return nil
		})
		if len(missing) > 0 {
			t.Fatalf("%s: %d acknowledged writes lost, e.g. %v", stage, len(missing), missing[:min(5, len(missing))])
		}
		if err := s.Update(ctx, func(tx *Tx) error { return tx.Create("items", &item{ID: "after"}) }); err != nil {
			t.Fatalf("%s: a write after the restart: %v", stage, err)
		}
		if v := votersOf(t, s); len(v) != 1 || !v["m0"] {
			t.Fatalf("%s: voters %v after the restart", stage, v)
		}
		s.Close()
	}
}
