package main

import (
	"bytes"
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/waitfor"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// Two managers and no arbiter; one dies for good (kill -9, never back):
// the other has no quorum and refuses writes. `shoald recover
// --force-new-cluster` refuses while its shoald runs and without --yes;
// with the shoald stopped it makes the survivor the only voter, and
// `shoald run` starts it with its services, takes writes and runs the
// dead manager's tasks.
func TestRecoverForceNewClusterEndToEnd(t *testing.T) {
	lab := newLab(t, 2)
	ctx := context.Background()
	m0, m1 := lab.Hosts[0], lab.Hosts[1]
	twoManagers(t, lab, m0, m1)
	c := clientVia(t, m0, m0, m0)
	const replicas = 4
	svc, err := c.CreateService(ctx, webService("web", replicas))
	if err != nil {
		t.Fatal(err)
	}
	waitfor.Within(t, 2*time.Minute, "4 running on both managers", func() bool {
		by, n, err := running(ctx, c, svc.ID)
		return err == nil && n == replicas && len(by) == 2
	})

	// m1 dies for good: m0 alone has no quorum.
	if err := m1.Stop(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var refusal error
	waitfor.Within(t, time.Minute, "the survivor to refuse writes for want of a quorum", func() bool {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		_, refusal = c.ScaleService(cctx, "web", replicas+1)
		return refusal != nil && strings.Contains(refusal.Error(), "quorum")
	})
	t.Logf("without quorum: %v", refusal)

	recoverCmd := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(ctx, append([]string{"recover", "--data-dir", m0.DataDir}, args...), &out, &out)
		return out.String(), err
	}
	if _, err := recoverCmd("--force-new-cluster", "--yes"); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("recover while shoald runs on the data dir: %v, want a refusal", err)
	}
	if err := m0.Stop(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, err := recoverCmd("--force-new-cluster"); err == nil || !strings.Contains(err.Error(), "--yes") {
		t.Fatalf("recover without --yes: %v, want a refusal", err)
	}
	if _, err := recoverCmd("--yes"); err == nil || !strings.Contains(err.Error(), "--force-new-cluster") {
		t.Fatalf("recover without --force-new-cluster: %v, want a refusal", err)
	}
	out, err := recoverCmd("--force-new-cluster", "--yes")
	if err != nil {
		t.Fatalf("recover: %v\n%s", err, out)
	}
	t.Logf("shoald recover:\n%s", out)
	if !strings.Contains(out, m0.NodeID()) || !strings.Contains(out, m1.NodeID()+"  ") || !strings.Contains(out, "(removed)") {
		t.Errorf("recover does not say what it did:\n%s", out)
	}

	// The one-voter cluster: its services are there, it takes writes and
	// runs the dead manager's tasks.
	if err := lab.Run(m0); err != nil {
		t.Fatal(err)
	}
	waitfor.Within(t, time.Minute, "a write accepted by the recovered manager", func() bool {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		_, err := c.ScaleService(cctx, "web", replicas+1)
		return err == nil
	})
	waitfor.Within(t, 2*time.Minute, "5 running, none on the dead manager", func() bool {
		by, n, err := running(ctx, c, svc.ID)
		return err == nil && n == replicas+1 && len(by[m1.NodeID()]) == 0 && len(by[m0.NodeID()]) == replicas+1
	}, func() string { return describe(ctx, c) })
	svcs, err := c.Services(ctx, swarm.Filter{})
	if err != nil || len(svcs) != 1 || svcs[0].ID != svc.ID {
		t.Fatalf("services after recovery: %v %v", svcs, err)
	}
	n, err := c.Node(ctx, m1.NodeID())
	if err != nil {
		t.Fatal(err)
	}
	if n.Status.State == api.NodeReady {
		t.Errorf("the dead manager is ready in node ls")
	}
}
