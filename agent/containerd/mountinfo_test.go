package containerd_test

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

type specsMount = specs.Mount

// mountInfo is one line of /proc/PID/mountinfo.
type mountInfo struct {
	point  string
	opts   []string // per-mount options: ro, nosuid, ...
	fsType string
	super  []string // the filesystem's options: size=..., mode=...
}

// mountAt reports what is mounted at path in the mount namespace of pid (the
// top mount, where several are stacked), as the kernel sees it.
func mountAt(t *testing.T, pid int, path string) (mountInfo, bool) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		t.Fatal(err)
	}
	var found mountInfo
	ok := false
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		// ID PARENT MAJ:MIN ROOT POINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPER
		pre, post, cut := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !cut || len(f) < 6 || len(g) < 3 || f[4] != path {
			continue
		}
		found = mountInfo{point: f[4], opts: strings.Split(f[5], ","), fsType: g[0], super: strings.Split(g[2], ",")}
		ok = true
	}
	return found, ok
}

func containsAll(have []string, want ...string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}
