package raftstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shoalproject/shoal/internal/testca"
)

const marker = "PLAINTEXT-MARKER-7f3a"

func diskStore(t *testing.T, dir string, kek []byte) *Store {
	t.Helper()
	s := &Store{ID: "d", Dir: dir, Schema: testSchema(), Transport: NewMemNetwork().Transport("d"),
		Bootstrap: []Server{{ID: "d", Address: "d", Voter: true}}, KeyEncryptionKey: kek}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	eventually(t, "leader", s.IsLeader)
	return s
}

func grepDir(t *testing.T, dir, needle string) []string {
	var hits []string
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(needle)) {
				hits = append(hits, p)
			}
		}
		return nil
	})
	return hits
}

func TestEncryptionAtRestLeavesNoPlaintext(t *testing.T) {
	dir := t.TempDir()
	kek := make([]byte, KeySize)
	rand.Read(kek)
	s := diskStore(t, dir, kek)
	ctx := context.Background()
	for i := range 50 {
		if err := s.Update(ctx, func(tx *Tx) error {
			return tx.Create("items", &item{ID: fmt.Sprintf("%s-%d", marker, i), Group: marker})
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	// Rotate the data key with no downtime: old and new data both readable.
	if _, err := s.RotateDataKey(); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(ctx, func(tx *Tx) error { return tx.Create("items", &item{ID: marker + "-after"}) }); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if hits := grepDir(t, dir, marker); len(hits) > 0 {
		t.Fatalf("plaintext object bytes on disk in %v", hits)
	}
	// Same KEK: everything back.
	s2 := diskStore(t, dir, kek)
	eventually(t, "restore", func() bool { return countItems(s2) == 51 })
	s2.Close()
	// Wrong KEK: a clear error.
	bad := make([]byte, KeySize)
	err := (&Store{ID: "d", Dir: dir, Schema: testSchema(), Transport: NewMemNetwork().Transport("d"), KeyEncryptionKey: bad}).Start(ctx)
	if !errors.Is(err, ErrBadKey) {
		t.Fatalf("wrong KEK: %v", err)
	}
	// No KEK on an encrypted dir: a clear error, not garbage.
	err = (&Store{ID: "d", Dir: dir, Schema: testSchema(), Transport: NewMemNetwork().Transport("d")}).Start(ctx)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), filepath.Join(dir, "wal")) || !strings.Contains(err.Error(), "no key-encryption key") {
		t.Fatalf("no KEK on encrypted data: %v", err)
	}
}

func TestPlaintextWithoutKEKIsVisible(t *testing.T) {
	// The counter-test: the grep above can find plaintext when it is there.
	dir := t.TempDir()
	s := diskStore(t, dir, nil)
	s.Update(context.Background(), func(tx *Tx) error { return tx.Create("items", &item{ID: marker}) })
	s.Close()
	if len(grepDir(t, dir, marker)) == 0 {
		t.Fatal("marker not found in an unencrypted data dir: the grep cannot see")
	}
}

func TestRewrapKeys(t *testing.T) {
	dir := t.TempDir()
	kek, kek2 := make([]byte, KeySize), make([]byte, KeySize)
	rand.Read(kek)
	rand.Read(kek2)
	s := diskStore(t, dir, kek)
	s.Update(context.Background(), func(tx *Tx) error { return tx.Create("items", &item{ID: "x"}) })
	if err := s.RewrapKeys(kek2); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2 := diskStore(t, dir, kek2)
	eventually(t, "restore with new KEK", func() bool { return countItems(s2) == 1 })
}

func TestCorruptDataDirGivesClearError(t *testing.T) {
	ctx := context.Background()
	// segments returns the log's segment files, oldest first.
	segments := func(dir string) []string {
		m, _ := filepath.Glob(filepath.Join(dir, "wal", "*.seg"))
		if len(m) == 0 {
			panic("no log segment in " + dir)
		}
		return m
	}
	// records returns the offsets of a segment's records.
	records := func(p string) []int64 {
		b, _ := os.ReadFile(p)
		var offs []int64
		for off := int64(segHeaderLen); off+recHeaderLen <= int64(len(b)); {
			n := int64(binary.LittleEndian.Uint32(b[off:]))
			if n == 0 {
				break
			}
			offs = append(offs, off)
			off += recordSize(int(n))
		}
		return offs
	}
	cases := map[string]struct {
		damage func(dir string)
		want   string // in the error
	}{
		"truncated segment": {func(dir string) {
			p := segments(dir)[0]
			fi, _ := os.Stat(p)
			os.Truncate(p, fi.Size()/2)
		}, "truncated"},
		"garbage segment": {func(dir string) {
			p := segments(dir)[0]
			fi, _ := os.Stat(p)
			os.WriteFile(p, bytes.Repeat([]byte{0xAB}, int(fi.Size())), 0o600)
		}, "bad magic"},
		// A flipped byte in an entry that was synced, with entries synced
		// after it: damage, not a torn tail, so it must not be cut off.
		"damaged synced entry": {func(dir string) {
			p := segments(dir)[0]
			offs := records(p)
			f, _ := os.OpenFile(p, os.O_RDWR, 0)
			defer f.Close()
			b := make([]byte, 1)
			at := offs[len(offs)/2] + recHeaderLen + 3
			f.ReadAt(b, at)
			f.WriteAt([]byte{b[0] ^ 0x40}, at)
		}, "entries written after it had been synced"},
		"garbage stable file": {func(dir string) {
			os.WriteFile(filepath.Join(dir, "wal", "stable"), bytes.Repeat([]byte{0x5A}, 8192), 0o600)
		}, "stable"},
		"altered key file": {func(dir string) {
			os.WriteFile(filepath.Join(dir, "keys.json"), []byte(`{"format":1,"check":"AAAA"`), 0o600)
		}, "keys.json"},
		"corrupt snapshot": {func(dir string) {
			m, _ := filepath.Glob(filepath.Join(dir, "snapshots", "*", "state.bin"))
			for _, p := range m {
				b, _ := os.ReadFile(p)
				b[len(b)/2] ^= 0xFF
				os.WriteFile(p, b, 0o600)
			}
			// Drop the log so the snapshot is the only copy of the data.
			os.RemoveAll(filepath.Join(dir, "wal"))
		}, "snapshot"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			kek := make([]byte, KeySize)
			s := diskStore(t, dir, kek)
			for i := range 20 {
				s.Update(ctx, func(tx *Tx) error { return tx.Create("items", &item{ID: fmt.Sprint(i)}) })
			}
			s.Snapshot(ctx)
			s.Close()
			c.damage(dir)
			s2 := &Store{ID: "d", Dir: dir, Schema: testSchema(), Transport: NewMemNetwork().Transport("d"), KeyEncryptionKey: kek}
			err := s2.Start(ctx)
			if err == nil {
				s2.Close()
				t.Fatal("started on a damaged data dir")
			}
			if !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error does not name the file and say %q: %v", c.want, err)
			}
			t.Log(err)
		})
	}
}

// TestTLSClusterFailover runs three members over mutual TLS on loopback.
func TestTLSClusterFailover(t *testing.T) {
	ca, err := testca.New()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	type member struct {
		s    *Store
		addr string
	}
	var members []*member
	var boot []Server
	var lns []net.Listener
	for i := range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		boot = append(boot, Server{ID: fmt.Sprintf("t%d", i), Address: ln.Addr().String(), Voter: true})
	}
	for i := range 3 {
		cfg, err := ca.Config(fmt.Sprintf("t%d", i))
		if err != nil {
			t.Fatal(err)
		}
		s := &Store{ID: boot[i].ID, Dir: t.TempDir(), Schema: testSchema(), Bootstrap: boot,
			Transport: NewNetworkTransport(NewTLSStreamLayer(lns[i], cfg), nil)}
		if err := s.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		members = append(members, &member{s: s, addr: boot[i].Address})
	}
	leader := func() *Store {
		var l *Store
		eventually(t, "leader", func() bool {
			for _, m := range members {
				if m.s.IsLeader() {
					l = m.s
					return true
				}
			}
			return false
		})
		return l
	}
	l := leader()
	for i := range 20 {
		if err := l.Update(ctx, func(tx *Tx) error { return tx.Create("items", &item{ID: fmt.Sprint(i)}) }); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	var alive []*member
	for _, m := range members {
		if m.s != l {
			alive = append(alive, m)
		}
	}
	members = alive
	start := time.Now()
	nl := leader()
	t.Logf("new leader after %v", time.Since(start))
	if err := nl.Update(ctx, func(tx *Tx) error { return tx.Create("items", &item{ID: "after"}) }); err != nil {
		t.Fatal(err)
	}
	for _, m := range members {
		eventually(t, "replication", func() bool { return countItems(m.s) == 21 })
	}
	// A peer whose certificate comes from another CA is refused, even
	// though it trusts the members' CA; the same RPC with a certificate of
	// the cluster's CA is answered (the control: the check can fail).
	good, err := ca.Config("peer")
	if err != nil {
		t.Fatal(err)
	}
	other, err := testca.New()
	if err != nil {
		t.Fatal(err)
	}
	bad, err := other.Config("intruder")
	if err != nil {
		t.Fatal(err)
	}
	bad.RootCAs = good.RootCAs
	rpc := func(conf *tls.Config) error {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		tr := NewNetworkTransport(NewTLSStreamLayer(ln, conf), nil)
		defer tr.Close()
		var resp raft.AppendEntriesResponse
		// A stale term: a member answers (refusing it) and changes nothing.
		return tr.AppendEntries(raft.ServerID("t0"), raft.ServerAddress(members[0].addr),
			&raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax}, Term: 0}, &resp)
	}
	if err := rpc(good); err != nil {
		t.Fatalf("a peer with the cluster CA's certificate got no answer: %v", err)
	}
	if err := rpc(bad); err == nil {
		t.Fatal("a peer with another CA's certificate got an answer from a member")
	}
}

// Retired data keys go once nothing on disk is sealed with them: not while
// log entries still are, and after a snapshot and compaction have replaced
// those entries. Everything stays readable after a restart.
func TestRetiredDataKeysArePruned(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	kek := make([]byte, KeySize)
	kek[0] = 7
	start := func() *Store {
		s := &Store{ID: "d", Dir: dir, Schema: testSchema(), Transport: NewMemNetwork().Transport("d"),
			Bootstrap: []Server{{ID: "d", Address: "d", Voter: true}}, KeyEncryptionKey: kek, TrailingLogs: 1}
		if err := s.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		eventually(t, "leader", s.IsLeader)
		return s
	}
	s := start()
	write := func(prefix string) {
		for i := range 10 {
			if err := s.Update(ctx, func(tx *Tx) error { return tx.Create("items", &item{ID: fmt.Sprint(prefix, i)}) }); err != nil {
				t.Fatal(err)
			}
		}
	}
	write("a")
	first := s.keyring.CurrentKeyID()
	s.RotateDataKey()
	last, _ := s.RotateDataKey()
	write("b")
	if pruned, err := s.PruneDataKeys(); err != nil || len(pruned) != 0 {
		t.Fatalf("keys pruned while log entries use them: %v %v", pruned, err)
	}
	if err := s.Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	pruned, err := s.PruneDataKeys()
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprint([]uint32{first, first + 1}); fmt.Sprint(pruned) != want {
		// The automatic prune after the snapshot may have run first.
		var kf keyFile
		raw, _ := os.ReadFile(filepath.Join(dir, "keys.json"))
		json.Unmarshal(raw, &kf)
		if len(kf.Keys) != 1 || kf.Keys[0].ID != last {
			t.Fatalf("pruned %v, key file holds %+v; want only key %d left", pruned, kf.Keys, last)
		}
	}
	s.Close()
	s = start()
	eventually(t, "restore after pruning", func() bool { return countItems(s) == 20 })
	if got := s.keyring.CurrentKeyID(); got != last {
		t.Fatalf("current key %d after restart, want %d", got, last)
	}
}
