package swarm

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoalproject/shoal/swarm/api"
)

// The leader killed with SIGKILL in the middle of a pass that creates a
// big service in steps: some steps are committed, the rest are not. The
// manager restarted from the same dir reads every committed task back
// (the records a pass hands over to the store must decode from disk), and
// the next pass completes the service: every slot exactly once, each
// task assigned, and no task committed before the kill replaced.
func TestPassKilledBetweenSteps(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: child manager processes on disk")
	}
	// Fewer replicas than the ingress network's addresses (a /24: the
	// published port puts every task on it).
	const replicas, step, killAt = 240, 10, 10
	dir := t.TempDir()
	// First life: create the service; the pass says each step it reaches,
	// and the test kills it in the middle.
	create := passCrashChild(t, dir, "create", replicas, step)
	out := bufio.NewScanner(create.stdout)
	reached := false
	for out.Scan() {
		if out.Text() == fmt.Sprint("step ", killAt) {
			reached = true
			break
		}
	}
	if !reached {
		t.Fatalf("the creating manager never reached step %d (read error %v)", killAt, out.Err())
	}
	create.kill(t)

	// Second life, from the same dir.
	check := passCrashChild(t, dir, "check", replicas, 0)
	var res passCrashResult
	if err := json.NewDecoder(check.stdout).Decode(&res); err != nil {
		t.Fatalf("the restarted manager's result: %v", err)
	}
	check.kill(t)
	if res.Err != "" {
		t.Fatalf("restarted manager: %s", res.Err)
	}
	t.Logf("after the kill at step %d of %d: %d tasks read back at the restart, %d in the end", killAt, replicas/step, len(res.Before), res.Tasks)
	if len(res.Before) >= replicas {
		t.Fatalf("all %d tasks were committed before the kill: the kill did not land between steps", len(res.Before))
	}
	if res.Tasks != replicas || len(res.Slots) != replicas || res.Unassigned != 0 {
		t.Fatalf("after the restart: %d tasks, %d distinct slots, %d unassigned; want %d, %d, 0 (duplicates: %v)",
			res.Tasks, len(res.Slots), res.Unassigned, replicas, replicas, res.Duplicates)
	}
	for s := uint64(1); s <= replicas; s++ {
		if !res.Slots[s] {
			t.Fatalf("slot %d missing after the restart", s)
		}
	}
	for _, id := range res.Before {
		if !res.Final[id] {
			t.Fatalf("task %s, committed before the kill, is gone after the restart", id)
		}
	}
}

// passCrashResult is what the restarted child reports.
type passCrashResult struct {
	Err        string          `json:"err,omitempty"`
	Before     []string        `json:"before"` // task IDs read right after the restart
	Tasks      int             `json:"tasks"`
	Slots      map[uint64]bool `json:"slots"`
	Final      map[string]bool `json:"final"`
	Unassigned int             `json:"unassigned"`
	Duplicates []uint64        `json:"duplicates,omitempty"`
}

type passCrashProc struct {
	cmd    *exec.Cmd
	stdout *bufio.Reader
}

// passCrashChild starts the test binary as a manager on dir (see
// RunPassCrashChild).
func passCrashChild(t *testing.T, dir, phase string, replicas, step int) *passCrashProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	cmd.Env = append(os.Environ(), "SHOAL_TEST_PASS_CRASH="+dir, "SHOAL_TEST_PASS_PHASE="+phase,
		fmt.Sprint("SHOAL_TEST_PASS_REPLICAS=", replicas), fmt.Sprint("SHOAL_TEST_PASS_STEP=", step))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &passCrashProc{cmd: cmd, stdout: bufio.NewReader(out)}
	t.Cleanup(func() { p.kill(t) })
	return p
}

// kill ends the child with SIGKILL (a crash, not a shutdown).
func (p *passCrashProc) kill(t *testing.T) {
	if p.cmd.ProcessState != nil {
		return
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !strings.Contains(err.Error(), "finished") {
		t.Errorf("kill: %v", err)
	}
	p.cmd.Wait()
}

// RunPassCrashChild runs the child of TestPassKilledBetweenSteps when the
// environment names one (it returns false otherwise): phase "create"
// starts a manager on the dir, registers 30 nodes and creates the
// service, printing "step N" before each step of the pass after the
// first; phase "check" restarts it from the dir and prints a
// passCrashResult once the service's tasks are all assigned.
func RunPassCrashChild() bool {
	dir := os.Getenv("SHOAL_TEST_PASS_CRASH")
	if dir == "" {
		return false
	}
	var replicas, step int
	fmt.Sscan(os.Getenv("SHOAL_TEST_PASS_REPLICAS"), &replicas)
	fmt.Sscan(os.Getenv("SHOAL_TEST_PASS_STEP"), &step)
	ctx := context.Background()
	// Nodes never heartbeat here: an hour's period keeps them up.
	m := &Manager{Dir: dir, HeartbeatPeriod: time.Hour, passStepSize: step}
	if os.Getenv("SHOAL_TEST_PASS_PHASE") == "create" {
		m.stepHook = func(i int) {
			fmt.Println("step", i)
			time.Sleep(20 * time.Millisecond)
		}
		if err := passCrashCreate(ctx, m, replicas); err != nil {
			fmt.Fprintln(os.Stderr, "pass crash child:", err)
			os.Exit(1)
		}
		select {} // until killed
	}
	res := passCrashCheck(ctx, m, replicas)
	json.NewEncoder(os.Stdout).Encode(res)
	select {} // until killed
}

func passCrashCreate(ctx context.Context, m *Manager, replicas int) error {
	if err := m.Start(ctx); err != nil {
		return err
	}
	<-m.Ready()
	for i := range 30 {
		desc := api.NodeDescription{Hostname: fmt.Sprint("node", i), Resources: api.Resources{NanoCPUs: 16e9, MemoryBytes: 64 << 30}}
		if _, err := m.Register(ctx, fmt.Sprintf("node%02d", i), desc); err != nil {
			return err
		}
	}
	_, err := m.CreateService(ctx, api.ServiceSpec{Annotations: api.Annotations{Name: "big"}, Mode: api.Replicated(uint64(replicas)),
		TaskTemplate: api.TaskSpec{Image: "example/web:1"},
		// A published port: the first pass writes the service (its
		// endpoint) in the same batch as tasks, an uncompressed table
		// beside compressed ones.
		EndpointSpec: &api.EndpointSpec{Ports: []api.PortConfig{{TargetPort: 80, PublishedPort: 8080}}}})
	return err
}

func passCrashCheck(ctx context.Context, m *Manager, replicas int) (res passCrashResult) {
	if err := m.Start(ctx); err != nil {
		return passCrashResult{Err: "start from the dir: " + err.Error()}
	}
	<-m.Ready()
	svc, err := m.Service("big")
	if err != nil {
		return passCrashResult{Err: "the service after the restart: " + err.Error()}
	}
	first := true
	deadline := time.Now().Add(time.Minute)
	for {
		tasks, err := m.Tasks(svc.ID)
		if err != nil {
			return passCrashResult{Err: "tasks after the restart: " + err.Error()}
		}
		if first {
			for _, t := range tasks {
				res.Before = append(res.Before, t.ID)
			}
			first = false
		}
		res.Tasks, res.Unassigned, res.Duplicates = len(tasks), 0, nil
		res.Slots, res.Final = map[uint64]bool{}, map[string]bool{}
		for _, t := range tasks {
			if res.Slots[t.Slot] {
				res.Duplicates = append(res.Duplicates, t.Slot)
			}
			res.Slots[t.Slot], res.Final[t.ID] = true, true
			if t.NodeID == "" || t.Status.State < api.TaskAssigned {
				res.Unassigned++
			}
		}
		if (res.Tasks >= replicas && res.Unassigned == 0) || time.Now().After(deadline) {
			return res
		}
		time.Sleep(50 * time.Millisecond)
	}
}
