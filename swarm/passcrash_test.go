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
	// First life: create the service. At step killAt of its pass the
	// child waits until the steps before have applied, says which tasks
	// are committed, and stops there until the kill.
	create := passCrashChild(t, dir, "create", replicas, step, killAt)
	var committed passCrashResult
	create.read(t, func(line []byte) bool { return json.Unmarshal(line, &committed) == nil })
	create.kill(t)
	if committed.Err != "" {
		t.Fatalf("the creating manager: %s", committed.Err)
	}
	if n := len(committed.Before); n == 0 || n >= replicas {
		t.Fatalf("%d tasks committed at step %d: want some, not all %d", n, killAt, replicas)
	}

	// Second life, from the same dir.
	check := passCrashChild(t, dir, "check", replicas, 0, 0)
	var res passCrashResult
	check.read(t, func(line []byte) bool { return json.Unmarshal(line, &res) == nil })
	check.kill(t)
	if res.Err != "" {
		t.Fatalf("restarted manager: %s", res.Err)
	}
	t.Logf("killed at step %d of %d with %d tasks committed; %d after the restart", killAt, replicas/step, len(committed.Before), res.Tasks)
	if res.Tasks != replicas || len(res.Slots) != replicas || res.Unassigned != 0 {
		t.Fatalf("after the restart: %d tasks, %d distinct slots, %d unassigned; want %d, %d, 0 (duplicates: %v)",
			res.Tasks, len(res.Slots), res.Unassigned, replicas, replicas, res.Duplicates)
	}
	for s := uint64(1); s <= replicas; s++ {
		if !res.Slots[s] {
			t.Fatalf("slot %d missing after the restart", s)
		}
	}
	for _, id := range committed.Before {
		if !res.Final[id] {
			t.Fatalf("task %s, committed before the kill, is gone after the restart", id)
		}
	}
}

// passCrashResult is what a child reports: the first life the tasks
// committed when it stopped (Before), the second what it ended with.
type passCrashResult struct {
	Err        string          `json:"err,omitempty"`
	Before     []string        `json:"before,omitempty"`
	Tasks      int             `json:"tasks"`
	Slots      map[uint64]bool `json:"slots"`
	Final      map[string]bool `json:"final"`
	Unassigned int             `json:"unassigned"`
	Duplicates []uint64        `json:"duplicates,omitempty"`
}

type passCrashProc struct {
	cmd   *exec.Cmd
	lines chan []byte // the child's stdout, a line at a time; closed at EOF
}

// passCrashChild starts the test binary as a manager on dir (see
// RunPassCrashChild). It dies with the test process (Pdeathsig).
func passCrashChild(t *testing.T, dir, phase string, replicas, step, stopAt int) *passCrashProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	cmd.Env = append(os.Environ(), "SHOAL_TEST_PASS_CRASH="+dir, "SHOAL_TEST_PASS_PHASE="+phase,
		fmt.Sprint("SHOAL_TEST_PASS_REPLICAS=", replicas), fmt.Sprint("SHOAL_TEST_PASS_STEP=", step),
		fmt.Sprint("SHOAL_TEST_PASS_STOP_AT=", stopAt))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &passCrashProc{cmd: cmd, lines: make(chan []byte, 16)}
	t.Cleanup(func() { p.kill(t) })
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(out)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			p.lines <- append([]byte(nil), sc.Bytes()...)
		}
	}()
	return p
}

// read waits, a minute at most, for the first line of the child's output
// that take accepts.
func (p *passCrashProc) read(t *testing.T, take func(line []byte) bool) {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				t.Fatal("the child manager ended without its report")
			}
			if take(line) {
				return
			}
		case <-timeout:
			p.kill(t)
			t.Fatal("no report from the child manager in a minute")
		}
	}
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
// service; at step STOP_AT of the pass it waits until the steps before
// have applied, prints the committed tasks (a passCrashResult) and stops
// there. Phase "check" restarts it from the dir and prints a
// passCrashResult once the service's tasks are all assigned (or after a
// minute). Either then waits to be killed, five minutes at most.
func RunPassCrashChild() bool {
	dir := os.Getenv("SHOAL_TEST_PASS_CRASH")
	if dir == "" {
		return false
	}
	var replicas, step, stopAt int
	fmt.Sscan(os.Getenv("SHOAL_TEST_PASS_REPLICAS"), &replicas)
	fmt.Sscan(os.Getenv("SHOAL_TEST_PASS_STEP"), &step)
	fmt.Sscan(os.Getenv("SHOAL_TEST_PASS_STOP_AT"), &stopAt)
	ctx := context.Background()
	report := func(res passCrashResult) {
		json.NewEncoder(os.Stdout).Encode(res)
		time.Sleep(5 * time.Minute) // until killed: the test has its report
		os.Exit(1)
	}
	// Nodes never heartbeat here: an hour's period keeps them up.
	m := &Manager{Dir: dir, HeartbeatPeriod: time.Hour, passStepSize: step}
	if os.Getenv("SHOAL_TEST_PASS_PHASE") == "create" {
		m.stepHook = func(i int) {
			if i == stopAt {
				report(passCrashCommitted(m, stopAt*step))
			}
		}
		if err := passCrashCreate(ctx, m, replicas); err != nil {
			report(passCrashResult{Err: err.Error()})
		}
		time.Sleep(time.Minute) // the pass reaches the hook meanwhile
		report(passCrashResult{Err: fmt.Sprintf("the pass never reached step %d", stopAt)})
	}
	report(passCrashCheck(ctx, m, replicas))
	return true
}

// passCrashCommitted waits until want tasks are in the store (steps cut
// apply while the pass goes on) and returns their IDs.
func passCrashCommitted(m *Manager, want int) passCrashResult {
	deadline := time.Now().Add(30 * time.Second)
	for {
		svc, err := m.Service("big")
		if err != nil {
			return passCrashResult{Err: "the service in the store: " + err.Error()}
		}
		tasks, err := m.Tasks(svc.ID)
		if err != nil {
			return passCrashResult{Err: err.Error()}
		}
		if len(tasks) >= want || time.Now().After(deadline) {
			var res passCrashResult
			for _, t := range tasks {
				res.Before = append(res.Before, t.ID)
			}
			return res
		}
		time.Sleep(10 * time.Millisecond)
	}
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
	deadline := time.Now().Add(time.Minute)
	for {
		tasks, err := m.Tasks(svc.ID)
		if err != nil {
			return passCrashResult{Err: "tasks after the restart: " + err.Error()}
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
