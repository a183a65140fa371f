package procstat

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Descendants are the PIDs of the live processes below pid (children,
// their children ...), read from /proc: what a containerd shim still holds
// (the task's processes) when it has to be killed.
func Descendants(pid int) []int {
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, ok := parent(p); ok {
			children[pp] = append(children[pp], p)
		}
	}
	var out []int
	queue := children[pid]
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		out = append(out, p)
		queue = append(queue, children[p]...)
	}
	return out
}

// parent is the parent PID of a live process, from /proc/PID/stat
// ("pid (comm) state ppid ...", comm may hold spaces and parentheses).
func parent(pid int) (int, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 || f[0] == "Z" || f[0] == "X" {
		return 0, false
	}
	pp, err := strconv.Atoi(f[1])
	return pp, err == nil
}
