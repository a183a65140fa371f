package containerd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	ctrd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"

	"github.com/shoalproject/shoal/agent"
)

// ExecOutputLimit bounds what the shim may write of one exec's output (a
// health check, say): the output goes to a tmpfs of this size, so a command
// that prints without end fills memory up to it, never the node's disk.
// Exec returns the first agent.MaxExecOutput bytes. A command that writes
// more than the limit blocks (nothing reads its output any more) until its
// context ends; Exec then says the output went over the limit.
const ExecOutputLimit = 1 << 20

// Exec runs cmd in the task's container with the task's environment.
func (e *Executor) Exec(ctx context.Context, id string, cmd []string) (int, []byte, error) {
	en, err := e.get(id)
	if err != nil {
		return -1, nil, err
	}
	if en.task == nil || len(cmd) == 0 {
		return -1, nil, fmt.Errorf("exec in %s: task not started or empty command", id)
	}
	nctx := e.ns(context.WithoutCancel(ctx))
	spec, err := en.container.Spec(nctx)
	if err != nil {
		return -1, nil, err
	}
	pspec := *spec.Process
	pspec.Args = cmd
	pspec.Terminal = false
	e.mu.Lock()
	e.execSeq++
	execID := fmt.Sprintf("exec-%d-%s", e.execSeq, randomSuffix())
	e.mu.Unlock()
	// The shim writes the output to a file, not to FIFOs this process
	// reads: an agent killed in the middle of an exec (a health check
	// runs every few seconds) must not leave the shim blocked on a FIFO
	// nobody opens, unable to stop or delete the container afterwards.
	// The file is on a tmpfs of its own, so its size is bounded even when
	// the agent is not there to watch it; Connect removes what a killed
	// agent left.
	dir := filepath.Join(e.execDir(), execID)
	if err := mountTmpfs(dir, ExecOutputLimit); err != nil {
		return -1, nil, fmt.Errorf("exec in %s: tmpfs for the output: %w", id, err)
	}
	defer removeTmpfs(dir)
	outPath := filepath.Join(dir, "out")
	proc, err := en.task.Exec(nctx, execID, &pspec, cio.LogFile(outPath))
	if err != nil {
		return -1, nil, err
	}
	defer proc.Delete(nctx, ctrd.WithProcessKill)
	statusC, err := proc.Wait(nctx)
	if err != nil {
		return -1, nil, err
	}
	if err := proc.Start(nctx); err != nil {
		return -1, nil, err
	}
	select {
	case st := <-statusC:
		code, _, err := st.Result()
		// The exit can come before the shim has copied all the output
		// into the file; deleting the process waits for that copy.
		proc.Delete(nctx)
		return int(code), readCapped(outPath, agent.MaxExecOutput), err
	case <-ctx.Done():
		proc.Kill(nctx, syscall.SIGKILL)
		<-statusC
		proc.Delete(nctx)
		err := ctx.Err()
		if fi, serr := os.Stat(outPath); serr == nil && fi.Size() >= ExecOutputLimit-64<<10 {
			err = fmt.Errorf("exec in %s: output over %d bytes (the command blocked once the limit was reached): %w", id, ExecOutputLimit, err)
		}
		return -1, readCapped(outPath, agent.MaxExecOutput), err
	}
}

func (e *Executor) execDir() string { return filepath.Join(e.StateDir, "exec") }

// cleanExecDir removes the output of execs that an agent killed in their
// middle left behind (their tmpfs mounts too), and makes the directory.
func (e *Executor) cleanExecDir() error {
	if err := removeTmpfs(e.execDir()); err != nil {
		return fmt.Errorf("containerd executor: removing old exec output: %w", err)
	}
	return os.MkdirAll(e.execDir(), 0o700)
}

// readCapped reads at most max bytes of a file (nil if it cannot).
func readCapped(path string, max int) []byte {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(f, int64(max)))
	return b
}

// randomSuffix tells apart the exec IDs of agents that ran before this
// one (their counters started at 1 too).
func randomSuffix() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}
