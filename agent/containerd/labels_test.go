package containerd_test

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	ctrd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/agent/containerd"
)

// A task's own labels cannot pass for the labels the executor sets
// (shoal.*): they would change the service its logs are told to be from,
// the signal an agent restarted after it stops it with, or which task a
// container is taken for. Reserved labels from the spec are dropped; the
// others stay.
func TestReservedLabelsCannotBeOverridden(t *testing.T) {
	e, d := setupDaemon(t)
	ctx := context.Background()
	task := appTask("labelled", "signals")
	task.Spec.StopSignal = "SIGUSR1"
	task.Spec.Labels = map[string]string{
		"shoal.service.id":  "victim",
		"shoal.stop-signal": "9",
		"shoal.task.id":     "other",
		"shoal.future":      "x",
		"app":               "web",
	}
	if err := e.Prepare(ctx, task); err != nil {
		t.Fatal(err)
	}
	if err := e.Start(ctx, task.ID); err != nil {
		t.Fatal(err)
	}
	waitLog(t, e, task.ID, "waiting for a signal")

	client, err := ctrd.New(d.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctr, err := client.LoadContainer(namespaces.WithNamespace(ctx, e.Namespace), task.ID)
	if err != nil {
		t.Fatal(err)
	}
	labels, err := ctr.Labels(namespaces.WithNamespace(ctx, e.Namespace))
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{
		"shoal.service.id":  "svc",
		"shoal.stop-signal": "10", // SIGUSR1
		"shoal.task.id":     "labelled",
		"app":               "web",
	} {
		if labels[k] != want {
			t.Errorf("label %s = %q, want %q", k, labels[k], want)
		}
	}
	if v, ok := labels["shoal.future"]; ok {
		t.Errorf("a reserved label from the spec kept: shoal.future=%q", v)
	}
	var services []string
	if err := e.Logs(ctx, task.ID, agent.LogOptions{}, func(l agent.LogLine) error { services = append(services, l.ServiceID); return nil }); err != nil {
		t.Fatal(err)
	}
	for _, s := range services {
		if s != "svc" {
			t.Fatalf("log lines tagged with service %q, want svc", s)
		}
	}

	// An agent restarted after it stops the task with the task's own stop
	// signal (a minute of grace: only the signal can end it in time).
	e.Close()
	e2 := &containerd.Executor{Address: e.Address, Namespace: e.Namespace, StateDir: e.StateDir, ImageDir: e.ImageDir}
	if err := e2.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	if _, err := e2.Adopt(ctx); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := e2.Shutdown(ctx, task.ID, time.Minute); err != nil {
		t.Fatal(err)
	}
	exit, err := e2.Wait(ctx, task.ID)
	if err != nil {
		t.Fatal(err)
	}
	if exit.Code != 0 || !strings.Contains(logs(t, e2, task.ID, 0), "got SIGUSR1") {
		t.Fatalf("stopped after a restart: exit %+v after %v, log %q; want SIGUSR1 (not %v)", exit, time.Since(t0), logs(t, e2, task.ID, 0), syscall.SIGKILL)
	}
	e2.Remove(ctx, task.ID)
}
