package raftstore

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// syncRing runs the log's fdatasync through io_uring, so that the goroutine
// waiting for the disk is parked in Go's network poller instead of sitting
// in a system call.
//
// Why: a goroutine in a blocking system call keeps its P (Go's right to run
// code) until the runtime's monitor takes the P back, which it does only
// after the call has lasted one of its ticks (20 µs to 10 ms). A write on a
// three-member cluster keeps three fdatasyncs of 0.3 to 0.6 ms going at once
// (leader and followers), so on two CPUs both Ps were held by syncs for much
// of each write, and the goroutines that carry the write on (a follower's
// answer read from the network, the leader's replication and apply
// goroutines) waited for a P: a runtime trace of one writer showed 15 to
// 40 µs median and up to 1 ms at p90 per hand-over. Parked on an eventfd,
// the syncing goroutine gives its P up at once; the kernel's io-wq worker
// does the fdatasync, and the completion wakes the goroutine through the
// poller. The durability is fdatasync's (IORING_OP_FSYNC with
// IORING_FSYNC_DATASYNC is the same call, run by the kernel).
//
// A syncRing serves one request at a time; the WAL holds its sync lock
// around each use.
type syncRing struct {
	fd  int
	efd *os.File // eventfd the kernel signals on each completion

	mem    []byte // the rings (one mapping: IORING_FEAT_SINGLE_MMAP)
	sqeMem []byte

	sqTail, sqMask, sqArray unsafe.Pointer
	cqHead, cqTail, cqMask  unsafe.Pointer
	cqes                    unsafe.Pointer
	sqes                    unsafe.Pointer
}

const (
	ioringOpNop           = 0
	ioringOpFsync         = 3
	ioringOpRead          = 22
	ioringFsyncDatasync   = 1
	ioringFeatSingleMmap  = 1
	ioringRegisterEventfd = 4
	ioringOffSQRing       = 0
	ioringOffSQEs         = 0x10000000
	sqeSize               = 64
	cqeSize               = 16
	ringEntries           = 4
)

// ioUringParams is struct io_uring_params.
type ioUringParams struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFD uint32
	resv                                                                   [3]uint32
	sqOff                                                                  struct {
		head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
		userAddr                                                        uint64
	}
	cqOff struct {
		head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
		userAddr                                                        uint64
	}
}

// errNoRing says the kernel offers no usable io_uring (too old, or turned
// off by kernel.io_uring_disabled or a seccomp filter); the log then calls
// fdatasync itself.
var errNoRing = errors.New("raftstore: io_uring unavailable")

// newSyncRing sets a ring up and checks it end to end with a no-op.
func newSyncRing() (_ *syncRing, err error) {
	var p ioUringParams
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, ringEntries, uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return nil, fmt.Errorf("%w: setup: %v", errNoRing, errno)
	}
	r := &syncRing{fd: int(fd)}
	defer func() {
		if err != nil {
			r.close()
		}
	}()
	if p.features&ioringFeatSingleMmap == 0 {
		return nil, fmt.Errorf("%w: kernel lacks IORING_FEAT_SINGLE_MMAP", errNoRing)
	}
	size := max(p.sqOff.array+p.sqEntries*4, p.cqOff.cqes+p.cqEntries*cqeSize)
	if r.mem, err = unix.Mmap(r.fd, ioringOffSQRing, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		return nil, fmt.Errorf("%w: map rings: %v", errNoRing, err)
	}
	if r.sqeMem, err = unix.Mmap(r.fd, ioringOffSQEs, int(p.sqEntries*sqeSize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		return nil, fmt.Errorf("%w: map entries: %v", errNoRing, err)
	}
	at := func(off uint32) unsafe.Pointer { return unsafe.Pointer(&r.mem[off]) }
	r.sqTail, r.sqMask, r.sqArray = at(p.sqOff.tail), at(p.sqOff.ringMask), at(p.sqOff.array)
	r.cqHead, r.cqTail, r.cqMask, r.cqes = at(p.cqOff.head), at(p.cqOff.tail), at(p.cqOff.ringMask), at(p.cqOff.cqes)
	r.sqes = unsafe.Pointer(&r.sqeMem[0])
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("%w: eventfd: %v", errNoRing, err)
	}
	// A non-blocking descriptor is read through the poller: Read parks
	// the goroutine, not the thread.
	r.efd = os.NewFile(uintptr(efd), "io_uring eventfd")
	if _, _, errno := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), ioringRegisterEventfd, uintptr(unsafe.Pointer(&efd)), 1, 0, 0); errno != 0 {
		return nil, fmt.Errorf("%w: register eventfd: %v", errNoRing, errno)
	}
	if res, err := r.do(ioringOpNop, -1, 0, nil); err != nil || res != 0 {
		return nil, fmt.Errorf("%w: no-op: %d %v", errNoRing, res, err)
	}
	return r, nil
}

// fdatasync makes f's data durable, as unix.Fdatasync.
func (r *syncRing) fdatasync(f *os.File) error {
	res, err := r.do(ioringOpFsync, int(f.Fd()), ioringFsyncDatasync, nil)
	if err != nil {
		return err
	}
	if res < 0 {
		return unix.Errno(-res)
	}
	return nil
}

// do submits one operation and waits, parked, for its result (the
// operation's return value, a negated errno on failure). buf is the buffer
// of a read (tests), nil otherwise. One call at a time.
func (r *syncRing) do(op uint8, fd int, opFlags uint32, buf []byte) (int32, error) {
	tail := atomic.LoadUint32((*uint32)(r.sqTail))
	idx := tail & *(*uint32)(r.sqMask)
	sqe := (*[sqeSize]byte)(unsafe.Add(r.sqes, uintptr(idx)*sqeSize))
	clear(sqe[:])
	sqe[0] = op
	*(*int32)(unsafe.Pointer(&sqe[4])) = int32(fd)
	if buf != nil {
		*(*int64)(unsafe.Pointer(&sqe[8])) = -1 // the file's position (a pipe has none)
		*(*uint64)(unsafe.Pointer(&sqe[16])) = uint64(uintptr(unsafe.Pointer(&buf[0])))
		*(*uint32)(unsafe.Pointer(&sqe[24])) = uint32(len(buf))
	}
	*(*uint32)(unsafe.Pointer(&sqe[28])) = opFlags
	*(*uint32)(unsafe.Add(r.sqArray, uintptr(idx)*4)) = idx
	atomic.StoreUint32((*uint32)(r.sqTail), tail+1)
	// Submit only (no waiting in the kernel): blocking operations such as
	// fsync go to the kernel's worker threads, so this returns at once.
	n, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), 1, 0, 0, 0, 0)
	if errno != 0 || n != 1 {
		return 0, fmt.Errorf("raftstore: io_uring submit: %d %v", n, errno)
	}
	var b [8]byte
	for {
		head := atomic.LoadUint32((*uint32)(r.cqHead))
		if head != atomic.LoadUint32((*uint32)(r.cqTail)) {
			cqe := unsafe.Add(r.cqes, uintptr(head&*(*uint32)(r.cqMask))*cqeSize)
			res := *(*int32)(unsafe.Add(cqe, 8))
			atomic.StoreUint32((*uint32)(r.cqHead), head+1)
			return res, nil
		}
		if _, err := r.efd.Read(b[:]); err != nil {
			return 0, fmt.Errorf("raftstore: io_uring wait: %w", err)
		}
	}
}

func (r *syncRing) close() {
	if r.efd != nil {
		r.efd.Close()
	}
	if r.sqeMem != nil {
		unix.Munmap(r.sqeMem)
	}
	if r.mem != nil {
		unix.Munmap(r.mem)
	}
	unix.Close(r.fd)
}
