package netagent

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// A stopping task's linger (swarm.Worker.DrainDelay) is there for the
// requests already under way when no node sends it new connections any
// more. A fixed linger is a guess: too short for a slow request on a loaded
// node (its client is cut off when the task stops), too long for a task
// nobody talks to. ClientConnections lets the worker end the linger once
// the task's clients are done, so that the linger can be long.

// TCP states as /proc/net/tcp writes them (include/net/tcp_states.h).
const (
	tcpEstablished = 0x01
	tcpSynRecv     = 0x03
	tcpFinWait1    = 0x04
	tcpCloseWait   = 0x08
	tcpLastAck     = 0x09
	tcpListen      = 0x0a
	tcpClosing     = 0x0b
)

// ClientConnections counts the TCP connections that clients have open to
// a task: those to a port the task listens on, from an address other than
// loopback (a probe inside the task does not hold its stop), that are
// being opened, open, or closed by the client only (the task may still be
// answering), or closed by the task with data still to send (the end of
// an answer). A task the agent has no namespace for has none. UDP is not
// counted: it has no connections to tell.
func (a *Agent) ClientConnections(ctx context.Context, taskID string) (int, error) {
	if err := checkTaskID(taskID); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	path := a.NetNSPath(taskID)
	if !isNetNS(path) {
		return 0, nil
	}
	var tables [2][]byte
	err := inNetNS(path, func() error {
		// thread-self: the table of the namespace this thread is in
		// (/proc/self follows the process's main thread).
		for i, name := range []string{"/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"} {
			b, err := os.ReadFile(name)
			if err != nil && !(i == 1 && os.IsNotExist(err)) { // no IPv6 in the kernel
				return err
			}
			tables[i] = b
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("netagent: task %s: reading its connections: %w", taskID, err)
	}
	var socks []tcpSocket
	for _, t := range tables {
		s, err := parseTCPTable(strings.NewReader(string(t)))
		if err != nil {
			return 0, fmt.Errorf("netagent: task %s: reading its connections: %w", taskID, err)
		}
		socks = append(socks, s...)
	}
	return countClientConns(socks), nil
}

// tcpSocket is what countClientConns needs of a line of /proc/net/tcp.
type tcpSocket struct {
	local, remote netip.AddrPort
	state         uint8
	// unsent is the send queue's length: data not yet acknowledged.
	unsent uint64
}

// countClientConns counts the connections of clients among a namespace's
// sockets (see ClientConnections).
func countClientConns(socks []tcpSocket) int {
	listening := map[uint16]bool{}
	for _, s := range socks {
		if s.state == tcpListen {
			listening[s.local.Port()] = true
		}
	}
	n := 0
	for _, s := range socks {
		switch s.state {
		case tcpEstablished, tcpSynRecv, tcpCloseWait:
		case tcpFinWait1, tcpLastAck, tcpClosing:
			if s.unsent == 0 {
				continue
			}
		default:
			continue
		}
		if listening[s.local.Port()] && !s.remote.Addr().Unmap().IsLoopback() {
			n++
		}
	}
	return n
}

// parseTCPTable reads /proc/net/tcp or /proc/net/tcp6. A line it cannot
// read is an error: a count from half a table would end a linger early.
func parseTCPTable(r io.Reader) ([]tcpSocket, error) {
	var out []tcpSocket
	sc := bufio.NewScanner(r)
	first := true
	for sc.Scan() {
		if first { // the header
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if len(f) < 5 {
			return nil, fmt.Errorf("short line %q", sc.Text())
		}
		local, err := parseProcAddr(f[1])
		if err != nil {
			return nil, err
		}
		remote, err := parseProcAddr(f[2])
		if err != nil {
			return nil, err
		}
		st, err := strconv.ParseUint(f[3], 16, 8)
		if err != nil {
			return nil, fmt.Errorf("state %q: %w", f[3], err)
		}
		tx, _, ok := strings.Cut(f[4], ":")
		unsent, err := strconv.ParseUint(tx, 16, 64)
		if !ok || err != nil {
			return nil, fmt.Errorf("queues %q: want tx:rx in hex", f[4])
		}
		out = append(out, tcpSocket{local: local, remote: remote, state: uint8(st), unsent: unsent})
	}
	return out, sc.Err()
}

// parseProcAddr reads an address as /proc/net/tcp{,6} writes it: the
// address as 32-bit words in hex, each the number that the word's bytes
// make in host order, a colon, the port in hex.
func parseProcAddr(s string) (netip.AddrPort, error) {
	hexAddr, hexPort, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("address %q: no port", s)
	}
	port, err := strconv.ParseUint(hexPort, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q: %w", s, err)
	}
	if len(hexAddr) != 8 && len(hexAddr) != 32 {
		return netip.AddrPort{}, fmt.Errorf("address %q: want 8 or 32 hex digits", s)
	}
	b := make([]byte, len(hexAddr)/2)
	for i := 0; i < len(hexAddr); i += 8 {
		w, err := strconv.ParseUint(hexAddr[i:i+8], 16, 32)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("address %q: %w", s, err)
		}
		binary.NativeEndian.PutUint32(b[i/2:], uint32(w))
	}
	addr, _ := netip.AddrFromSlice(b)
	return netip.AddrPortFrom(addr, uint16(port)), nil
}
