package containerd

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// tmpfsFlags are the mount flags of every tmpfs the executor makes (secrets,
// exec output): nothing on it can be run, be a device or gain privileges.
const tmpfsFlags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC

// mountTmpfs mounts a fresh tmpfs of at most size bytes, readable by root
// only, at dir (made if missing). Whatever was mounted at dir before is
// detached first, so that a retried call leaves one mount, not a stack of
// them. The tmpfs is mounted noswap where the kernel knows the option (Linux
// 6.4 and later), so that what it holds never reaches a swap device; older
// kernels get it without.
func mountTmpfs(dir string, size int64) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := unmountAll(dir); err != nil {
		return err
	}
	data := fmt.Sprintf("mode=0700,size=%d", size)
	err := unix.Mount("tmpfs", dir, "tmpfs", tmpfsFlags, data+",noswap")
	if errors.Is(err, unix.EINVAL) {
		err = unix.Mount("tmpfs", dir, "tmpfs", tmpfsFlags, data)
	}
	return err
}

// unmountAll detaches every mount stacked at dir, and those below it.
// A dir that is not a mount point is left as it is.
func unmountAll(dir string) error {
	for _, m := range mountsUnder(dir) {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("unmount %s: %w", m, err)
		}
	}
	return nil
}

// mountsUnder lists the mount points at or below dir, deepest and latest
// first (the order to unmount them), with one entry per stacked mount.
func mountsUnder(dir string) []string {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return nil
	}
	var out []string
	lines := strings.Split(string(b), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		f := strings.Fields(lines[i])
		if len(f) < 2 {
			continue
		}
		// /proc/self/mounts escapes spaces and such as octal (\040).
		p := unescapeMount(f[1])
		if p == dir || strings.HasPrefix(p, dir+"/") {
			out = append(out, p)
		}
	}
	return out
}

// unescapeMount undoes the octal escapes of a /proc/self/mounts field.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			var n int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &n); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// removeTmpfs unmounts dir (every mount there and below) and deletes it.
func removeTmpfs(dir string) error {
	if err := unmountAll(dir); err != nil {
		return err
	}
	return os.RemoveAll(dir)
}
