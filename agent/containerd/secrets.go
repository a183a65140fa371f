package containerd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/shoalproject/shoal/swarm/api"
)

// secretFiles writes a task's secrets and configs into a tmpfs of its own
// (memory only: never the node's disk, nor swap where the kernel supports
// noswap) and returns the read-only bind mounts
// that put them in the container: secrets at /run/secrets/NAME, configs at
// their target (default /NAME). The tmpfs goes away with the task.
func (e *Executor) secretFiles(ctx context.Context, t *api.Task) ([]specs.Mount, error) {
	s := t.Spec
	if len(s.Secrets) == 0 && len(s.Configs) == 0 {
		return nil, nil
	}
	if e.Secrets == nil {
		return nil, errors.New("task uses secrets or configs but the executor has no SecretSource")
	}
	type file struct {
		data   []byte
		target string
		ft     api.FileTarget
	}
	var files []file
	var total int64
	for _, ref := range s.Secrets {
		data, err := e.Secrets.SecretData(ctx, ref)
		if err != nil {
			return nil, fmt.Errorf("secret %s: %w", ref.SecretName, err)
		}
		name := ref.File.Name
		if name == "" {
			name = ref.SecretName
		}
		target := name
		if !path.IsAbs(target) {
			target = path.Join("/run/secrets", name)
		}
		files = append(files, file{data, target, ref.File})
		total += int64(len(data))
	}
	for _, ref := range s.Configs {
		data, err := e.Secrets.ConfigData(ctx, ref)
		if err != nil {
			return nil, fmt.Errorf("config %s: %w", ref.ConfigName, err)
		}
		target := ref.File.Name
		if target == "" {
			target = "/" + ref.ConfigName
		}
		if !path.IsAbs(target) {
			target = "/" + target
		}
		files = append(files, file{data, target, ref.File})
		total += int64(len(data))
	}
	// A tmpfs that a killed agent left for this task is replaced, not
	// stacked under a second one (mountTmpfs detaches it).
	dir := e.secretDir(t.ID)
	size := total + int64(len(files))*4096 + 64<<10
	if err := mountTmpfs(dir, size); err != nil {
		return nil, fmt.Errorf("mount tmpfs for secrets of %s: %w", t.ID, err)
	}
	var mounts []specs.Mount
	for i, f := range files {
		p := filepath.Join(dir, strconv.Itoa(i))
		mode := os.FileMode(0o444)
		if f.ft.Mode != 0 {
			mode = os.FileMode(f.ft.Mode)
		}
		if err := os.WriteFile(p, f.data, mode); err != nil {
			e.removeSecrets(t.ID)
			return nil, err
		}
		os.Chmod(p, mode) // WriteFile's mode is filtered by the umask
		uid, gid := atoiOr(f.ft.UID, 0), atoiOr(f.ft.GID, 0)
		if err := os.Chown(p, uid, gid); err != nil {
			e.removeSecrets(t.ID)
			return nil, err
		}
		mounts = append(mounts, specs.Mount{Type: "bind", Source: p, Destination: f.target, Options: []string{"bind", "ro", "nosuid", "nodev", "noexec"}})
	}
	return mounts, nil
}

func (e *Executor) secretDir(id string) string { return filepath.Join(e.StateDir, "secrets", id) }

// removeSecrets unmounts and deletes a task's secret tmpfs, if any.
func (e *Executor) removeSecrets(id string) error {
	if err := removeTmpfs(e.secretDir(id)); err != nil {
		return fmt.Errorf("remove secrets of %s: %w", id, err)
	}
	return nil
}

func atoiOr(s string, def int) int {
	if n, err := strconv.Atoi(strings.TrimSpace(s)); err == nil && n >= 0 {
		return n
	}
	return def
}
