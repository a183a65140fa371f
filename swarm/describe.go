package swarm

import (
	"bufio"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/shoalproject/shoal/swarm/api"
)

// DetectDescription describes this machine as a node reports itself:
// hostname, CPUs, memory, OS and architecture, and Shoal's version as
// the engine's. Fields set in override win.
func DetectDescription(override api.NodeDescription) api.NodeDescription {
	d := override
	if d.Hostname == "" {
		d.Hostname, _ = os.Hostname()
	}
	if d.Platform.OS == "" {
		d.Platform.OS = runtime.GOOS
	}
	if d.Platform.Architecture == "" {
		d.Platform.Architecture = runtime.GOARCH
	}
	if d.Resources.NanoCPUs == 0 {
		d.Resources.NanoCPUs = int64(runtime.NumCPU()) * 1e9
	}
	if d.Resources.MemoryBytes == 0 {
		d.Resources.MemoryBytes = memTotal()
	}
	if d.Engine.Version == "" {
		d.Engine.Version = Version()
	}
	return d
}

// memTotal is the machine's memory from /proc/meminfo (0 when unknown).
func memTotal() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kb, err := strconv.ParseInt(fields[1], 10, 64)
			if err == nil {
				return kb << 10
			}
		}
	}
	return 0
}
