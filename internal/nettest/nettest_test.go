package nettest_test

import (
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/nettest"
)

// listen opens a TCP echo server inside a host.
func listen(t *testing.T, h *nettest.Host) string {
	t.Helper()
	var ln net.Listener
	if err := h.Do(func() (err error) { ln, err = net.Listen("tcp", h.Addr.String()+":7000"); return }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

// reach checks that from can talk to addr. Its timeout outlasts a lost
// first SYN and an ARP entry still retrying from a partition (a host
// re-resolves a peer it failed to reach on its next probe, up to a second
// later).
func reach(from *nettest.Host, addr string) error { return reachWithin(from, addr, 5*time.Second) }

// reachWithin is reach with its own timeout: a bounded attempt, for checks
// that traffic is dropped.
func reachWithin(from *nettest.Host, addr string, timeout time.Duration) error {
	return from.Do(func() error {
		c, err := net.DialTimeout("tcp", addr, timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Second))
		if _, err := c.Write([]byte("hi")); err != nil {
			return err
		}
		_, err = io.ReadFull(c, make([]byte, 2))
		return err
	})
}

func TestLabHostsReachEachOtherAndPartition(t *testing.T) {
	lab := nettest.New(t, 3)
	h0, h1, h2 := lab.Hosts[0], lab.Hosts[1], lab.Hosts[2]
	a1, a2 := listen(t, h1), listen(t, h2)
	if err := reach(h0, a1); err != nil {
		t.Fatalf("h0 -> h1: %v", err)
	}
	// The host's own namespace cannot see the lab's addresses.
	if c, err := net.DialTimeout("tcp", a1, 300*time.Millisecond); err == nil {
		c.Close()
		t.Fatal("the lab is reachable from outside it")
	}
	if err := lab.Partition([]*nettest.Host{h0}, []*nettest.Host{h1}); err != nil {
		t.Fatal(err)
	}
	if err := reachWithin(h0, a1, 500*time.Millisecond); err == nil {
		t.Fatal("h0 reached h1 across a partition")
	}
	if err := reach(h0, a2); err != nil {
		t.Fatalf("h0 -> h2 during h0|h1 partition: %v", err)
	}
	if err := lab.Isolate(h2); err != nil {
		t.Fatal(err)
	}
	if err := reachWithin(h0, a2, 500*time.Millisecond); err == nil {
		t.Fatal("reached an isolated host")
	}
	if err := lab.Heal(); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{a1, a2} {
		if err := reach(h0, a); err != nil {
			t.Fatalf("after heal: %v", err)
		}
	}
}

func TestLabCleansUp(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	lab, err := nettest.NewLab(2)
	if err != nil {
		t.Fatal(err)
	}
	cmd, err := lab.Hosts[0].Start(t.Context(), "sleep", "60")
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.Close(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{lab.Wire, lab.Hosts[0].Name, lab.Hosts[1].Name} {
		if _, err := os.Stat("/var/run/netns/" + name); !os.IsNotExist(err) {
			t.Fatalf("namespace %s left: %v", name, err)
		}
	}
	if cmd.ProcessState == nil {
		t.Fatal("process in the lab not stopped")
	}
}
