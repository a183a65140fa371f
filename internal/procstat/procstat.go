// Package procstat reads process memory figures from /proc for the bench
// programs.
package procstat

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// RSSKB is a process's resident set in KiB (VmRSS), 0 if unknown.
func RSSKB(pid int) int64 { return field(pid, "VmRSS:") }

// PeakRSSKB is a process's highest resident set in KiB (VmHWM).
func PeakRSSKB(pid int) int64 { return field(pid, "VmHWM:") }

func field(pid int, name string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, name) {
			f := strings.Fields(line)
			if len(f) < 2 {
				return 0
			}
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return 0
}
