package raftstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"
)

// A member runs in a child process: Recover and a second Start on its dir
// are refused with a DirLockedError naming the dir and the child, and the
// dir is untouched. Killed with SIGKILL, the child leaves the lock free
// (the kernel drops it): Recover then goes through.
func TestDirLockRefusesASecondOpenerUntilTheHolderDies(t *testing.T) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		s := &Store{ID: "c", Dir: dir, Schema: testSchema(), Transport: NewMemNetwork().Transport("c"),
			Bootstrap: []Server{{ID: "c", Address: "c", Voter: true}}}
		if err := s.Start(context.Background()); err != nil {
			fmt.Fprintln(os.Stderr, "lock child:", err)
			os.Exit(2)
		}
		for !s.IsLeader() {
			time.Sleep(5 * time.Millisecond)
		}
		if err := s.Update(context.Background(), func(tx *Tx) error { return tx.Create("items", &item{ID: "x"}) }); err != nil {
			fmt.Fprintln(os.Stderr, "lock child:", err)
			os.Exit(2)
		}
		fmt.Println("running")
		time.Sleep(2 * time.Minute) // the parent kills it long before
		os.Exit(3)
	}
	if testing.Short() {
		t.Skip("kills a child process")
	}
	ctx := context.Background()
	dir := t.TempDir()
	cmd, lines := crashChild(t, "TestDirLockRefusesASecondOpenerUntilTheHolderDies", dir)
	if !lines.Scan() || lines.Text() != "running" {
		t.Fatalf("child: %q", lines.Text())
	}
	self := []Server{{ID: "c", Address: "c", Voter: true}}
	_, err := (&Store{ID: "c", Dir: dir, Schema: testSchema()}).Recover(ctx, self)
	var le *DirLockedError
	if !errors.As(err, &le) || !errors.Is(err, ErrDirLocked) || le.Dir != dir || le.PID != cmd.Process.Pid {
		t.Fatalf("Recover under a running member: %v, want a DirLockedError for %s held by %d", err, dir, cmd.Process.Pid)
	}
	second := &Store{ID: "c", Dir: dir, Schema: testSchema(), Transport: NewMemNetwork().Transport("c")}
	if err := second.Start(ctx); !errors.Is(err, ErrDirLocked) {
		second.Close()
		t.Fatalf("a second Start on a running member's dir: %v, want ErrDirLocked", err)
	}
	t.Log(err)

	kill9(t, cmd)
	r := &Store{ID: "c", Dir: dir, Schema: testSchema()}
	before, err := r.Recover(ctx, self)
	if err != nil || len(before) != 1 {
		t.Fatalf("Recover after the holder was killed: %v (before %+v)", err, before)
	}
	// Recover let go of the lock: a Start after it runs, and holds it.
	s := &Store{ID: "c", Dir: dir, Schema: testSchema(), Transport: NewMemNetwork().Transport("c")}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	eventually(t, "the recovered member leads", s.IsLeader)
	if n := countItems(s); n != 1 {
		t.Fatalf("%d items after recovery, want 1", n)
	}
	if _, err := (&Store{ID: "c", Dir: dir, Schema: testSchema()}).Recover(ctx, self); !errors.As(err, &le) || le.PID != os.Getpid() {
		t.Fatalf("Recover under a member of this process: %v", err)
	}
}
