package shoallab

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/shoalproject/shoal/internal/containerdtest"
	"github.com/shoalproject/shoal/internal/nettest"
)

// State is what a lab left running is made of (a lab with Options.Dir and
// Options.NetnsPrefix), saved so that another process can find it and
// remove it all with Teardown: the processes by PID (with their start
// time, so that a reused PID is never taken for one of them), the
// containerd socket, the namespaces and the directory.
type State struct {
	Dir         string
	NetnsPrefix string
	Hosts       int
	Containerd  Proc
	// ContainerdAddress is the private containerd's socket.
	ContainerdAddress string
	// Shoalds are the hosts' shoald processes, by host index (PID 0: none
	// started).
	Shoalds []Proc
	// Made is when the lab was made.
	Made time.Time
}

// Proc is a process the lab started.
type Proc struct {
	PID int
	// Start is the process's start time in clock ticks since boot
	// (/proc/PID/stat field 22).
	Start uint64
}

// ErrNoState is returned by LoadState when no lab was saved in the
// directory.
var ErrNoState = errors.New("shoallab: no lab state")

// stateFile is the state's file name in the lab's directory.
const stateFile = "lab-state.json"

// State describes the lab as it runs now.
func (l *Lab) State() State {
	st := State{Dir: l.Dir, NetnsPrefix: l.opts.NetnsPrefix, Hosts: len(l.Hosts), Made: time.Now()}
	if old, err := LoadState(l.Dir); err == nil {
		st.Made = old.Made
	}
	if l.Containerd != nil {
		st.Containerd = ProcOf(l.Containerd.PID())
		st.ContainerdAddress = l.Containerd.Address
	}
	for _, h := range l.Hosts {
		st.Shoalds = append(st.Shoalds, ProcOf(h.PID()))
	}
	return st
}

// SaveState writes the lab's state into its directory (again after each
// process it starts), for LoadState.
func (l *Lab) SaveState() error {
	raw, err := json.MarshalIndent(l.State(), "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(l.Dir, stateFile+".tmp")
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(l.Dir, stateFile))
}

// LoadState reads the state a lab saved in dir (ErrNoState when none).
func LoadState(dir string) (State, error) {
	raw, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return State{}, ErrNoState
	}
	if err != nil {
		return State{}, err
	}
	var st State
	if err := json.Unmarshal(raw, &st); err != nil {
		return State{}, fmt.Errorf("shoallab: %s: %v (remove the lab by hand: its namespaces and processes)", filepath.Join(dir, stateFile), err)
	}
	if st.Dir != dir {
		return State{}, fmt.Errorf("shoallab: %s describes a lab in %s, not %s", filepath.Join(dir, stateFile), st.Dir, dir)
	}
	return st, nil
}

// ProcOf is the running process pid (PID 0 for pid <= 0).
func ProcOf(pid int) Proc {
	if pid <= 0 {
		return Proc{}
	}
	return Proc{PID: pid, Start: startTime(pid)}
}

// startTime is a process's start time (0 when it is gone).
func startTime(pid int) uint64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces: count from its end.
	s := string(raw)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0
	}
	v, _ := strconv.ParseUint(f[19], 10, 64)
	return v
}

// Alive reports whether the process still runs (the same one: a PID
// reused by another process is not).
func (p Proc) Alive() bool {
	return p.PID > 0 && p.Start != 0 && startTime(p.PID) == p.Start
}

// RSS is the process's resident memory in bytes (0 when it is gone).
func (p Proc) RSS() int64 {
	if !p.Alive() {
		return 0
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.PID))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

// stop sends sig, waits up to wait for the process to exit, then kills
// it. It reports whether the process was running.
func (p Proc) stop(sig syscall.Signal, wait time.Duration) bool {
	if !p.Alive() {
		return false
	}
	syscall.Kill(p.PID, sig)
	for deadline := time.Now().Add(wait); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if !p.Alive() {
			return true
		}
	}
	syscall.Kill(p.PID, syscall.SIGKILL)
	for range 100 {
		if !p.Alive() {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// Started lists the processes the lab started: containerd and the
// shoalds.
func (st State) Started() []Proc {
	var out []Proc
	for _, p := range append([]Proc{st.Containerd}, st.Shoalds...) {
		if p.PID > 0 {
			out = append(out, p)
		}
	}
	return out
}

// Running lists the lab's processes that still run.
func (st State) Running() []Proc {
	var out []Proc
	for _, p := range st.Started() {
		if p.Alive() {
			out = append(out, p)
		}
	}
	return out
}

// Teardown removes the lab: the shoald processes (SIGTERM, then SIGKILL),
// the containers (through containerd), containerd, any of the lab's
// shims or daemons left (a process of shoald, containerd or a shim whose
// command line names the lab's directory), the mounts under the
// directory, the namespaces, and the directory. logf, when set, receives
// progress lines. It then checks that nothing is left (Leftovers).
func (st State) Teardown(logf func(format string, args ...any)) error {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if st.Dir == "" || !filepath.IsAbs(st.Dir) || filepath.Clean(st.Dir) == "/" {
		return fmt.Errorf("shoallab: teardown: bad lab directory %q", st.Dir)
	}
	var errs []error
	n := 0
	for _, p := range st.Shoalds {
		if p.Alive() {
			n++
		}
	}
	logf("stopping %d shoald processes", n)
	done := make(chan struct{})
	for _, p := range st.Shoalds {
		go func() { p.stop(syscall.SIGTERM, 15*time.Second); done <- struct{}{} }()
	}
	for range st.Shoalds {
		<-done
	}
	if st.Containerd.Alive() && st.ContainerdAddress != "" {
		logf("removing the containers")
		errs = append(errs, (&containerdtest.Daemon{Address: st.ContainerdAddress}).RemoveAll())
		logf("stopping containerd (pid %d)", st.Containerd.PID)
		st.Containerd.stop(syscall.SIGTERM, 10*time.Second)
	}
	for _, p := range st.strays() {
		logf("killing a process left behind: pid %d", p.PID)
		p.stop(syscall.SIGKILL, 0)
	}
	logf("unmounting, deleting the namespaces %s-*, removing %s", st.NetnsPrefix, st.Dir)
	UnmountUnder(st.Dir)
	if st.NetnsPrefix != "" {
		errs = append(errs, nettest.Attach(st.NetnsPrefix, st.Hosts).Close())
		for _, name := range nettest.Namespaces(st.NetnsPrefix) {
			errs = append(errs, nettest.DeleteNamespace(name))
		}
	}
	errs = append(errs, os.RemoveAll(st.Dir))
	if left := st.Leftovers(); len(left) > 0 {
		errs = append(errs, fmt.Errorf("shoallab: left after teardown: %s", strings.Join(left, "; ")))
	}
	return errors.Join(errs...)
}

// labBinaries are the programs a lab runs (the daemons and the shims
// containerd starts for the containers).
var labBinaries = []string{"shoald", "containerd", "containerd-shim-runc-v2", "nsenter"}

// strays are the processes of the lab's programs whose command line names
// the lab's directory: only the lab starts those.
func (st State) strays() []Proc {
	var out []Proc
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if !slices.Contains(labBinaries, filepath.Base(strings.TrimSuffix(exe, " (deleted)"))) {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		for _, arg := range strings.Split(string(cmdline), "\x00") {
			if arg == st.Dir || strings.HasPrefix(arg, st.Dir+"/") {
				out = append(out, ProcOf(pid))
				break
			}
		}
	}
	return out
}

// Leftovers lists what of the lab is still there: processes, mounts under
// its directory, namespaces, the directory itself.
func (st State) Leftovers() []string {
	var out []string
	seen := map[int]bool{}
	for _, p := range append(st.Running(), st.strays()...) {
		if !seen[p.PID] {
			seen[p.PID] = true
			out = append(out, fmt.Sprintf("process %d", p.PID))
		}
	}
	for _, m := range mountsUnder(st.Dir) {
		out = append(out, "mount "+m)
	}
	if st.NetnsPrefix != "" {
		for _, name := range nettest.Namespaces(st.NetnsPrefix) {
			out = append(out, "namespace "+name)
		}
	}
	if _, err := os.Stat(st.Dir); err == nil {
		out = append(out, "directory "+st.Dir)
	}
	return out
}
