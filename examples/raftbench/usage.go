package main

import (
	"runtime/metrics"
	"syscall"
	"time"
)

// rusage is the part of getrusage(2) that -cpu prints: CPU time and context
// switches of the whole process (the three members together), with the Go
// heap's allocations and collections over the same span (what a write
// costs the garbage collector).
type rusage struct {
	user, sys     time.Duration
	nvcsw, nivcsw int64
	allocBytes    uint64
	allocObjects  uint64
	gcCycles      uint64
}

// heapMetrics are read from runtime/metrics, which, unlike
// runtime.ReadMemStats, does not stop the world mid-run.
var heapMetrics = []string{"/gc/heap/allocs:bytes", "/gc/heap/allocs:objects", "/gc/cycles/total:gc-cycles"}

func usage() rusage {
	var u rusage
	s := make([]metrics.Sample, len(heapMetrics))
	for i, name := range heapMetrics {
		s[i].Name = name
	}
	metrics.Read(s)
	u.allocBytes, u.allocObjects, u.gcCycles = s[0].Value.Uint64(), s[1].Value.Uint64(), s[2].Value.Uint64()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return u
	}
	u.user, u.sys, u.nvcsw, u.nivcsw = time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano()), ru.Nvcsw, ru.Nivcsw
	return u
}

func (a rusage) sub(b rusage) rusage {
	return rusage{user: a.user - b.user, sys: a.sys - b.sys, nvcsw: a.nvcsw - b.nvcsw, nivcsw: a.nivcsw - b.nivcsw,
		allocBytes: a.allocBytes - b.allocBytes, allocObjects: a.allocObjects - b.allocObjects, gcCycles: a.gcCycles - b.gcCycles}
}
