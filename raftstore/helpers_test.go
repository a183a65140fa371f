package raftstore

import (
	"context"
	"errors"
	"fmt"
	"github.com/hashicorp/raft"
	"testing"
	"time"
)

// item is the test object.
type item struct {
	ID      string `json:"id"`
	Version uint64 `json:"version"`
	Group   string `json:"group"`
	Tags    []string
	Value   int `json:"value"`
}

func (i *item) ObjectID() string          { return i.ID }
func (i *item) ObjectVersion() uint64     { return i.Version }
func (i *item) SetObjectVersion(v uint64) { i.Version = v }

func (i *item) copy() *item { c := *i; return &c }

func testSchema() *Schema {
	return &Schema{Tables: []Table{
		{Name: "items", New: func() Object { return &item{} }, Indexes: map[string]IndexFunc{
			"group": func(o Object) []string { return []string{o.(*item).Group} },
			"tag":   func(o Object) []string { return o.(*item).Tags },
		}},
		{Name: "other", New: func() Object { return &item{} }},
	}}
}

type cluster struct {
	t      *testing.T
	net    *MemNetwork
	stores map[string]*Store
	dirs   map[string]string
	ids    []string
}

// newCluster starts n in-memory-transport members; dirs empty means memory only.
func newCluster(t *testing.T, n int, onDisk bool, tweak func(*Store)) *cluster {
	t.Helper()
	c := &cluster{t: t, net: NewMemNetwork(), stores: map[string]*Store{}, dirs: map[string]string{}}
	var boot []Server
	for i := range n {
		id := fmt.Sprintf("m%d", i)
		c.ids = append(c.ids, id)
		boot = append(boot, Server{ID: id, Address: id, Voter: true})
		if onDisk {
			c.dirs[id] = t.TempDir()
		}
	}
	for _, id := range c.ids {
		c.start(id, boot, tweak)
	}
	t.Cleanup(func() {
		for _, s := range c.stores {
			s.Close()
		}
	})
	return c
}

func (c *cluster) start(id string, boot []Server, tweak func(*Store)) *Store {
	c.t.Helper()
	s := &Store{ID: id, Dir: c.dirs[id], Schema: testSchema(), Transport: c.net.Transport(id), Bootstrap: boot,
		HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond, LeaderLeaseTimeout: 100 * time.Millisecond}
	if tweak != nil {
		tweak(s)
	}
	if err := s.Start(context.Background()); err != nil {
		c.t.Fatalf("start %s: %v", id, err)
	}
	c.stores[id] = s
	return s
}

// kill stops a member with a graceful Close: members of one process
// cannot be killed one at a time. The tests that claim a crash run the
// member in a child process and SIGKILL it (crash_test.go,
// recover_crash_test.go, dirlock_test.go).
func (c *cluster) kill(id string) {
	c.stores[id].Close()
	delete(c.stores, id)
}

// leader waits for a leader among the given (default: all running) members.
func (c *cluster) leader(among ...string) *Store {
	c.t.Helper()
	if len(among) == 0 {
		for id := range c.stores {
			among = append(among, id)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, id := range among {
			if s := c.stores[id]; s != nil && s.IsLeader() {
				return s
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.t.Fatalf("no leader among %v", among)
	return nil
}

// put writes an item through the leader, retrying while leadership moves.
func (c *cluster) put(it *item) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	retried := false
	for {
		err := c.leader().Update(ctx, func(tx *Tx) error { return tx.Create("items", it.copy()) })
		var ce *ConflictError
		if retried && errors.As(err, &ce) && ce.Expected == 0 {
			// ErrNoQuorum says the change may still commit: an earlier
			// attempt did (a loaded machine can move leadership mid-write).
			return nil
		}
		if !errors.Is(err, ErrNotLeader) && !errors.Is(err, ErrNoQuorum) {
			return err
		}
		retried = true
		if ctx.Err() != nil {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func countItems(s *Store) int {
	n := 0
	s.View(func(tx *ReadTx) error { n, _ = tx.Count("items"); return nil })
	return n
}

func raftAddr(s string) raft.ServerAddress { return raft.ServerAddress(s) }
