package raftstore

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// fakeHungSnapshotTransport is a unit-test fake: a transport whose
// snapshot installs hang (a peer that went off mid-transfer, seen from a
// transport with no timeout) until the test ends; the rest passes through.
type fakeHungSnapshotTransport struct {
	raft.Transport
	entered chan struct{}
	release chan struct{}
}

func (f *fakeHungSnapshotTransport) InstallSnapshot(id raft.ServerID, target raft.ServerAddress, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader) error {
	select {
	case f.entered <- struct{}{}:
	default:
	}
	io.CopyN(io.Discard, data, 1) // it started reading the snapshot
	<-f.release
	return fmt.Errorf("fake: snapshot install abandoned")
}

// A leader sends a snapshot to a new member whose install hangs: Close
// returns at once instead of waiting for the install (raft's Shutdown
// waits for its replication goroutines).
func TestCloseDuringASnapshotInstallReturnsPromptly(t *testing.T) {
	ctx := context.Background()
	net := NewMemNetwork()
	fake := &fakeHungSnapshotTransport{Transport: net.Transport("m0"), entered: make(chan struct{}, 1), release: make(chan struct{})}
	defer close(fake.release)
	s := &Store{ID: "m0", Dir: t.TempDir(), Schema: testSchema(), Transport: fake, Bootstrap: []Server{{ID: "m0", Address: "m0", Voter: true}},
		SnapshotThreshold: 8, TrailingLogs: 2,
		HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond, LeaderLeaseTimeout: 100 * time.Millisecond}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a leader", s.IsLeader)
	for i := range 20 {
		if err := s.Update(ctx, func(tx *Tx) error { return tx.Create("items", &item{ID: fmt.Sprint(i)}) }); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	peer := &Store{ID: "m1", Schema: testSchema(), Transport: net.Transport("m1")}
	if err := peer.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	if err := s.AddNonvoter(ctx, "m1", "m1"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-fake.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no snapshot install began")
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close waits for a hung snapshot install")
	}
}
