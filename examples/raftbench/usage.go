package main

import (
	"syscall"
	"time"
)

// rusage is the part of getrusage(2) that -cpu prints: CPU time and context
// switches of the whole process (the three members together).
type rusage struct {
	user, sys     time.Duration
	nvcsw, nivcsw int64
}

func usage() rusage {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return rusage{}
	}
	return rusage{user: time.Duration(ru.Utime.Nano()), sys: time.Duration(ru.Stime.Nano()), nvcsw: ru.Nvcsw, nivcsw: ru.Nivcsw}
}

func (a rusage) sub(b rusage) rusage {
	return rusage{user: a.user - b.user, sys: a.sys - b.sys, nvcsw: a.nvcsw - b.nvcsw, nivcsw: a.nivcsw - b.nivcsw}
}
