package containerd

import (
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

func unixSignalName(sig syscall.Signal) string { return strings.ToUpper(unix.SignalName(sig)) }
