package containerd_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/internal/testimages"
	"github.com/shoalproject/shoal/swarm/api"
)

func TestReservationsInTheCgroup(t *testing.T) {
	e := setup(t)
	task := appTask("reserved", "sleep")
	task.Spec.Resources = &api.ResourceRequirements{Reservations: &api.Resources{NanoCPUs: 5e8, MemoryBytes: 32 << 20}}
	stop := runUntilRunning(t, e, task)
	defer func() { stop(); e.Remove(context.Background(), "reserved") }()
	in, _ := e.Inspect(context.Background(), "reserved")
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		// cgroup v2: cpu.weight is derived from the shares; memory.low is the reservation.
		if got := readCgroup(t, in.PID, "memory", "memory.soft_limit_in_bytes", "memory.low"); got != "33554432" {
			t.Fatalf("memory.low %q", got)
		}
		return
	}
	if got := readCgroup(t, in.PID, "cpu", "cpu.shares", "cpu.weight"); got != "512" {
		t.Fatalf("cpu.shares %q, want 512 for half a CPU", got)
	}
	if got := readCgroup(t, in.PID, "memory", "memory.soft_limit_in_bytes", "memory.low"); got != "33554432" {
		t.Fatalf("memory soft limit %q", got)
	}
}

func TestVolumesNamedPersistAnonymousGo(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	writer := appTask("writer", "write", "/data/f", "hello")
	writer.Spec.Mounts = []api.Mount{{Type: api.MountVolume, Source: "shared", Target: "/data"}, {Type: api.MountVolume, Target: "/scratch"}}
	if st := (&agent.Runner{Executor: e}).Run(ctx, writer); st.State != api.TaskComplete {
		t.Fatalf("writer %+v", st)
	}
	anon, _ := filepath.Glob(filepath.Join(e.StateDir, "volumes", "anon-writer", "*"))
	if len(anon) != 1 {
		t.Fatalf("anonymous volume dirs %v", anon)
	}
	e.Remove(ctx, "writer")
	if _, err := os.Stat(filepath.Join(e.StateDir, "volumes", "anon-writer")); !os.IsNotExist(err) {
		t.Fatal("anonymous volume left after the task was removed")
	}
	reader := appTask("reader", "check", "/data/f")
	reader.Spec.Mounts = []api.Mount{{Type: api.MountVolume, Source: "shared", Target: "/data", ReadOnly: true}}
	if st := (&agent.Runner{Executor: e}).Run(ctx, reader); st.State != api.TaskComplete {
		t.Fatalf("named volume lost its data: %+v", st)
	}
	e.Remove(ctx, "reader")
}

func TestPullFromRegistry(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	srv := httptest.NewServer(registry.New())
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	img, err := tarball.ImageFromPath(filepath.Join(imageDir, "app.tar"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(host+"/shoal/app:1", name.Insecure)
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	task := appTask("pulled", "exit", "0")
	task.Spec.Image = host + "/shoal/app:1"
	// Pulling is off by default: rejected, and the reason says so.
	if st := (&agent.Runner{Executor: e}).Run(ctx, task); st.State != api.TaskRejected || !strings.Contains(st.Err, "pulling from registries is off") {
		t.Fatalf("without Pull: %+v", st)
	}
	e.Pull, e.InsecureRegistries = true, []string{host}
	if st := (&agent.Runner{Executor: e}).Run(ctx, task); st.State != api.TaskComplete {
		t.Fatalf("pulled task: %+v", st)
	}
	e.Remove(ctx, "pulled")
}

func TestInitProcess(t *testing.T) {
	e := setup(t)
	if _, err := os.Stat("/usr/bin/tini-static"); err != nil {
		t.Skip("init test needs tini-static: apt-get install tini (scripts/test.sh does)")
	}
	yes := true
	task := appTask("init", "sleep")
	task.Spec.Init = &yes
	stop := runUntilRunning(t, e, task)
	// Once the program has started, PID 1 of the task is the init. (Read
	// before that, the command line can still be runc's, or empty.)
	waitLog(t, e, "init", "sleeping")
	in, _ := e.Inspect(context.Background(), "init")
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", in.PID))
	if err != nil || !strings.HasPrefix(string(cmdline), "/sbin/shoal-init\x00--\x00/app\x00sleep") {
		t.Fatalf("PID 1 of the task runs %q (%v)", cmdline, err)
	}
	// The init passes SIGTERM on: the program shuts down cleanly.
	if st := stop(); st.State != api.TaskShutdown || st.ExitCode != 0 {
		t.Fatalf("stop through init: %+v", st)
	}
	e.Remove(context.Background(), "init")
}

func TestProcessSpecFromTask(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	task := appTask("spec")
	task.Spec.Command = []string{"/app"}
	task.Spec.Args = []string{"env"}
	task.Spec.Env = []string{"MODE=test"}
	task.Spec.User = "1000"
	task.Spec.Dir = "/tmp"
	task.Spec.Hostname = "web-1"
	task.Spec.ReadOnly = true
	if st := (&agent.Runner{Executor: e}).Run(ctx, task); st.State != api.TaskComplete {
		t.Fatalf("%+v", st)
	}
	out := logs(t, e, "spec", 0)
	for _, want := range []string{"MODE=test", "TASK_ID=spec", "SERVICE_ID=svc", "uid=1000 cwd=/tmp hostname=web-1", "rootfs read-only"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	e.Remove(ctx, "spec")
	// Without a hostname of its own, a task's is its ID, cut to 12
	// characters as Docker cuts container IDs.
	long := appTask("0123456789abcdefghij", "env")
	if st := (&agent.Runner{Executor: e}).Run(ctx, long); st.State != api.TaskComplete {
		t.Fatalf("%+v", st)
	}
	if out := logs(t, e, long.ID, 0); !strings.Contains(out, "hostname=0123456789ab\n") {
		t.Errorf("hostname of a task with a long ID, want 0123456789ab, in:\n%s", out)
	}
	e.Remove(ctx, long.ID)
}

// A new volume starts with what the image has at its target, as in Docker;
// a volume with data of its own, and a NoCopy one, are left as they are.
func TestVolumesFilledFromTheImage(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	// run checks, inside the task, whether the image's file is in the volume.
	run := func(id, volume string, noCopy, wantSeed bool) {
		t.Helper()
		task := appTask(id, "check", testimages.SeedFile)
		task.Spec.Mounts = []api.Mount{{Type: api.MountVolume, Source: volume, Target: "/srv", NoCopy: noCopy}}
		st := (&agent.Runner{Executor: e}).Run(ctx, task)
		e.Remove(ctx, id)
		if want := map[bool]api.TaskState{true: api.TaskComplete, false: api.TaskFailed}[wantSeed]; st.State != want {
			t.Fatalf("%s: %+v, want %s", id, st, want)
		}
	}
	data := func(volume string) string { return filepath.Join(e.StateDir, "volumes", volume, "_data") }
	run("fresh", "seeded", false, true)
	if b, err := os.ReadFile(filepath.Join(data("seeded"), "seed.txt")); err != nil || string(b) != testimages.SeedContent {
		t.Fatalf("new volume not filled from the image: %q %v", b, err)
	}
	// Data of its own wins.
	os.MkdirAll(data("own"), 0o755)
	os.WriteFile(filepath.Join(data("own"), "mine.txt"), []byte("mine"), 0o644)
	run("own", "own", false, false)
	if _, err := os.Stat(filepath.Join(data("own"), "seed.txt")); !os.IsNotExist(err) {
		t.Fatal("a volume with data was filled from the image")
	}
	run("nocopy", "empty", true, false)
	if entries, _ := os.ReadDir(data("empty")); len(entries) != 0 {
		t.Fatalf("NoCopy volume filled: %v", entries)
	}
}
