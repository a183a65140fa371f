package procstat

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Dead reports whether the process pid is gone or a zombie (dead, not yet
// reaped by its parent).
func Dead(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// "pid (comm) state ...": the state follows the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] == 'Z' || b[i+2] == 'X'
}

// KillPIDFile sends SIGKILL to the process whose PID the file holds and
// returns once it is dead: the fence of the tests and bench programs of
// two-node mode, whose managers are processes of one machine. A process
// already gone counts as killed.
func KillPIDFile(ctx context.Context, file string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return fmt.Errorf("procstat: %s holds no PID", file)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	for !Dead(pid) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("procstat: process %d still alive after SIGKILL: %w", pid, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}
