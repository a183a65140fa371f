package netmesh

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// nsExec runs programs (nft, sysctl writes) in a network namespace given by
// its path; empty means the caller's namespace.
type nsExec string

// nft runs an nft script.
func (ns nsExec) nft(ctx context.Context, script string) error {
	cmd := ns.command(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("netmesh: nft: %v: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// sysctl sets a per-namespace kernel setting, when it exists.
func (ns nsExec) sysctl(ctx context.Context, key, value string) error {
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	if ns == "" {
		return os.WriteFile(path, []byte(value), 0o644)
	}
	cmd := ns.command(ctx, "sh", "-c", fmt.Sprintf("test -e %s && echo %s > %s || test ! -e %s", path, value, path, path))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("netmesh: sysctl %s: %v: %s", key, err, out)
	}
	return nil
}

func (ns nsExec) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	if ns == "" {
		return exec.CommandContext(ctx, name, args...)
	}
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + string(ns), name}, args...)...)
}
