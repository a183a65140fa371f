package nettest

import (
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Capture records the frames that cross the wire (every host's link, in
// both directions) while fn runs, as tcpdump on the wire would. Frames are
// cut at 64 KiB; offloaded segments show as one large frame.
func (l *Lab) Capture(fn func() error) (frames [][]byte, err error) {
	var fd int
	if err := Do(l.Wire, func() (err error) {
		// Bound to no interface: the bridge's own taps miss frames it
		// forwards between ports, the ports' taps see them all.
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		return err
	}); err != nil {
		return nil, fmt.Errorf("nettest: capture socket: %w", err)
	}
	defer unix.Close(fd)
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 32<<20)
	tv := unix.NsecToTimeval(int64(50 * time.Millisecond))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return nil, err
	}
	var (
		mu   sync.Mutex
		stop bool
		done = make(chan struct{})
	)
	go func() {
		defer close(done)
		buf := make([]byte, 64<<10)
		for {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			mu.Lock()
			if n > 0 && err == nil {
				frames = append(frames, append([]byte(nil), buf[:n]...))
			}
			end := stop && err != nil // drained: a timeout after stop
			mu.Unlock()
			if end || (err != nil && err != unix.EAGAIN && err != unix.EINTR) {
				return
			}
		}
	}()
	ferr := fn()
	mu.Lock()
	stop = true
	mu.Unlock()
	<-done
	return frames, ferr
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
