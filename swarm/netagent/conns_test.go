package netagent

import (
	"net/netip"
	"strings"
	"testing"
)

// Lines as a kernel writes them: a listener on 0.0.0.0:8080 and on [::]:80
// (dual stack), a client on 10.0.1.20 established to 8080, one half-closed
// by its client to [::]:80 from ::ffff:10.0.1.21, a probe from loopback, a
// connection the task opened itself (to 10.0.2.10:5432, not a port it
// listens on), one being opened, one in TIME_WAIT, and two the task
// closed: one with 4 KiB of its answer still to send, one with none.
const (
	procTCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1059 1 000000002f8e12e2 100 0 0 10 0
   1: 0B01000A:1F90 1401000A:B4AF 01 00000000:00000000 00:00000000 00000000     0        0 2001 1 000000001c80d830 20 4 30 10 -1
   2: 0100007F:1F90 0100007F:C0CA 01 00000000:00000000 00:00000000 00000000     0        0 2002 1 000000001c80d830 20 4 30 10 -1
   3: 0B01000A:9C40 0A02000A:1538 01 00000000:00000000 00:00000000 00000000     0        0 2003 1 000000001c80d830 20 4 30 10 -1
   4: 0B01000A:1F90 1601000A:C001 03 00000000:00000000 00:00000000 00000000     0        0 0 1 000000001c80d830 20 4 30 10 -1
   5: 0B01000A:1F90 1701000A:C002 06 00000000:00000000 03:00000FC2 00000000     0        0 0 3 000000001c80d830
   6: 0B01000A:1F90 1801000A:C003 04 00001000:00000000 01:00000020 00000000     0        0 0 1 000000001c80d830 20 4 30 10 -1
   7: 0B01000A:1F90 1901000A:C004 04 00000000:00000000 00:00000000 00000000     0        0 0 1 000000001c80d830 20 4 30 10 -1
`
	procTCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3001 1 0000000000000000 100 0 0 10 0
   1: 0000000000000000FFFF00000B01000A:0050 0000000000000000FFFF00001501000A:D431 08 00000000:00000000 00:00000000 00000000     0        0 3002 1 0000000000000000 20 4 30 10 -1
   2: 00000000000000000000000001000000:0050 00000000000000000000000001000000:D432 01 00000000:00000000 00:00000000 00000000     0        0 3003 1 0000000000000000 20 4 30 10 -1
`
)

func TestCountClientConns(t *testing.T) {
	var socks []tcpSocket
	for _, table := range []string{procTCP, procTCP6} {
		s, err := parseTCPTable(strings.NewReader(table))
		if err != nil {
			t.Fatal(err)
		}
		socks = append(socks, s...)
	}
	if len(socks) != 11 {
		t.Fatalf("%d sockets read, want 11", len(socks))
	}
	if got, want := socks[1].remote, netip.MustParseAddrPort("10.0.1.20:46255"); got != want {
		t.Errorf("remote of line 1: %v, want %v", got, want)
	}
	if got, want := socks[9].remote, netip.MustParseAddrPort("[::ffff:10.0.1.21]:54321"); got != want {
		t.Errorf("remote of the v6 line: %v, want %v", got, want)
	}
	if got, want := socks[10].local.Addr(), netip.MustParseAddr("::1"); got != want {
		t.Errorf("local of the v6 loopback line: %v, want %v", got, want)
	}
	// The established client, the one being opened, the half-closed one,
	// the one closed with data to send.
	if n := countClientConns(socks); n != 4 {
		t.Errorf("client connections: %d, want 4", n)
	}
}

func TestParseTCPTableRefusesGarbage(t *testing.T) {
	for _, line := range []string{
		"   0: 00000000:1F90 00000000:0000",      // no state
		"   0: 0000000:1F90 00000000:0000 0A",    // 7 hex digits
		"   0: 00000000-1F90 00000000:0000 0A",   // no port
		"   0: 00000000:1F90 00000000:0000 XYZ",  // state
		"   0: 0000000G:1F90 00000000:0000 0A",   // not hex
		"   0: 00000000:1FFFFF 00000000:0000 0A", // port too large
	} {
		if _, err := parseTCPTable(strings.NewReader("header\n" + line + "\n")); err == nil {
			t.Errorf("%q: read without an error", line)
		}
	}
}
