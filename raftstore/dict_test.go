package raftstore

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func compressedSchema() *Schema {
	s := testSchema()
	s.Tables[0].Compress = true
	return s
}

func bigItem(i int) *item {
	return &item{ID: fmt.Sprintf("c%04d", i), Group: fmt.Sprintf("group-%d", i%7), Tags: []string{"zone=east", "rack=r1", fmt.Sprint("n", i)},
		Value: i * 1000}
}

// A compressed table reads back what was written through every path: Update,
// Batch, watch events, a restart that replays the log, and a member that
// catches up by snapshot; and the stored bytes are compressed.
func TestCompressedTableRoundTrips(t *testing.T) {
	ctx := context.Background()
	tweak := func(s *Store) { s.Schema = compressedSchema(); s.SnapshotThreshold = 64; s.TrailingLogs = 8 }
	c := newCluster(t, 3, true, tweak)
	l := c.leader()
	w, err := l.Watch(ctx, l.AppliedIndex(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	want := map[string]*item{}
	for i := range 40 {
		it := bigItem(i)
		if err := l.Update(ctx, func(tx *Tx) error { return tx.Create("items", it) }); err != nil {
			t.Fatal(err)
		}
		want[it.ID] = it
	}
	if _, err := l.Batch(ctx, func(b *Batch) error {
		for i := 40; i < 400; i++ {
			it := bigItem(i)
			want[it.ID] = it
			if err := b.Create("items", it); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for range 40 {
		select {
		case ev := <-w.Events():
			if got := ev.Object.(*item); !reflect.DeepEqual(got, want[ev.ID]) || got.Version != ev.Index {
				t.Fatalf("event object %+v, want %+v", got, want[ev.ID])
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no event")
		}
	}
	check := func(s *Store) {
		t.Helper()
		eventually(t, "all objects on "+s.ID, func() bool { return countItems(s) == len(want) })
		s.View(func(tx *ReadTx) error {
			for id, it := range want {
				got, err := tx.Get("items", id)
				if err == nil {
					// Batch does not set versions on the objects it was given.
					c := *got.(*item)
					c.Version = it.Version
					got = &c
				}
				if err != nil || !reflect.DeepEqual(got, it) {
					t.Fatalf("%s: %s read back as %+v (%v), want %+v", s.ID, id, got, err, it)
				}
				r := tx.st.get("items", id)
				raw, _ := s.Schema.Codec.Marshal("items", it)
				if r.dict == nil || len(r.data()) >= len(raw) {
					t.Fatalf("%s: %s stored in %d bytes (dictionary %v), raw %d", s.ID, id, len(r.data()), r.dict != nil, len(raw))
				}
			}
			return nil
		})
	}
	for _, s := range c.stores {
		check(s)
	}
	// A member that missed everything catches up from a snapshot, which
	// must carry the dictionary.
	lagger := c.ids[0]
	if c.leader().ID == lagger {
		lagger = c.ids[1]
	}
	c.kill(lagger)
	for i := 400; i < 500; i++ {
		it := bigItem(i)
		want[it.ID] = it
		if err := c.put(it); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.leader().Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	check(c.start(lagger, nil, tweak))
	// Every member restarts from its own snapshot and log.
	for _, id := range c.ids {
		c.kill(id)
	}
	for _, id := range c.ids {
		c.start(id, nil, tweak)
	}
	c.leader()
	for _, s := range c.stores {
		check(s)
	}
}

// Objects of a table without Compress are stored as encoded.
func TestUncompressedTableStaysRaw(t *testing.T) {
	s := single(t)
	if err := s.Update(context.Background(), func(tx *Tx) error { return tx.Create("items", bigItem(1)) }); err != nil {
		t.Fatal(err)
	}
	s.View(func(tx *ReadTx) error {
		if r := tx.st.get("items", "c0001"); r.dict != nil || !bytes.Contains(r.data(), []byte("zone=east")) {
			t.Fatalf("record %+v", r)
		}
		return nil
	})
}

// Log entries and snapshots written before compression (formats 1 and
// SHOALSS2) still apply and restore.
func TestFormatsBeforeCompressionStillRead(t *testing.T) {
	f, err := newFSM(testSchemaInit(t), newEventRing(16), discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	data := []byte(`{"id":"old","version":0,"group":"g","Tags":null,"value":7}`)
	// Format 1: no compression byte.
	entry := []byte{entryFormatV1, byte(entryTx), 0, 0, 0, 1, byte(opCreate)}
	entry = appendString(entry, "items")
	entry = appendString(entry, "old")
	entry = binary.AppendUvarint(entry, 0)
	entry = binary.AppendUvarint(entry, uint64(len(data)))
	entry = append(entry, data...)
	entry = appendKeys(entry, [][]string{{"g"}, nil})
	if res := f.Apply(&raft.Log{Index: 5, Type: raft.LogCommand, Data: entry}); res != nil {
		t.Fatalf("format 1 entry: %v", res)
	}
	tx := f.view()
	got, err := tx.Get("items", "old")
	if err != nil || got.(*item).Value != 7 || got.ObjectVersion() != 5 {
		t.Fatalf("format 1 entry applied as %+v, %v", got, err)
	}
	// SHOALSS2: records without a compression byte, no dictionaries.
	snap := append([]byte(snapshotMagicV2), 9, 1)
	snap = appendString(snap, "items")
	snap = appendString(snap, "old")
	snap = binary.AppendUvarint(snap, 5)
	snap = binary.AppendUvarint(snap, uint64(len(data)))
	snap = append(snap, data...)
	snap = appendKeys(snap, [][]string{{"g"}, nil})
	snap = append(snap, 0)
	st, index, err := readSnapshot(f.schema, newDictSet(), bufio.NewReader(bytes.NewReader(snap)))
	if err != nil || index != 9 || st.get("items", "old") == nil {
		t.Fatalf("SHOALSS2 snapshot: index %d, %v", index, err)
	}
}

// An entry naming a dictionary no member was given is refused, not
// applied with garbage.
func TestUnknownDictionaryIsRefused(t *testing.T) {
	f, err := newFSM(testSchemaInit(t), newEventRing(16), discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	entry := appendOp(newEntry(entryTx, 64), &op{kind: opCreate, table: "items", id: "x", dictID: 12345, data: []byte("zz")})
	setCount(entry, 1)
	res := f.Apply(&raft.Log{Index: 3, Type: raft.LogCommand, Data: entry})
	if err, ok := res.(error); !ok || !strings.Contains(err.Error(), "unknown dictionary") {
		t.Fatalf("entry with an unknown dictionary: %v", res)
	}
	tx := f.view()
	if _, err := tx.Get("items", "x"); err == nil {
		t.Fatal("applied")
	}
}

func testSchemaInit(t *testing.T) *Schema {
	s := testSchema()
	if err := s.init(); err != nil {
		t.Fatal(err)
	}
	return s
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestKeyListReadsEncodedKeys(t *testing.T) {
	enc := string(appendKeys(nil, [][]string{{"a", "bb"}, nil, {"ccc"}}))
	for i, want := range [][]string{{"a", "bb"}, nil, {"ccc"}, nil} {
		if got := keyList(enc, i, nil); !reflect.DeepEqual(got, want) {
			t.Fatalf("index %d: %q, want %q", i, got, want)
		}
	}
	// Malformed sets never panic.
	for cut := range len(enc) {
		keyList(enc[:cut], 2, nil)
	}
	keyList("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 0, nil)
}

func TestDictionaryCodec(t *testing.T) {
	ref := []byte(`{"id":"task000000999","createdAt":"2026-11-29T19:36:29.491965354Z","serviceID":"svc0099","nodeID":"node00999","state":"running"}`)
	d := newDict("t", ref)
	cases := [][]byte{
		[]byte(`{"id":"task000012345","createdAt":"2026-11-29T19:40:01.000000001Z","serviceID":"svc0045","nodeID":"node02345","state":"running"}`),
		ref,
		[]byte(`completely different content with nothing in common at all, none whatsoever`),
		bytes.Repeat([]byte("x"), 1000),
		{},
		[]byte("abc"),
	}
	rnd := []byte{}
	for i := range 3000 {
		rnd = append(rnd, byte(i*7919>>3), ref[i%len(ref)])
	}
	cases = append(cases, rnd)
	for i, in := range cases {
		c := d.compress(in)
		if c == nil {
			continue // not smaller: stored as is
		}
		if len(c) >= len(in) {
			t.Fatalf("case %d: %d bytes compressed to %d", i, len(in), len(c))
		}
		out, err := d.decompress(c)
		if err != nil || !bytes.Equal(out, in) {
			t.Fatalf("case %d: round trip: %v", i, err)
		}
		// Every truncation and single-byte change decodes to an error or
		// to some bytes, never a panic.
		for cut := range len(c) {
			d.decompress(c[:cut])
		}
		for j := range c {
			m := slices.Clone(c)
			m[j] ^= 0xA5
			d.decompress(m)
		}
	}
	if c := d.compress(cases[0]); c == nil || len(c) > len(cases[0])/3 {
		t.Fatalf("an object like the dictionary compressed to %d of %d bytes", len(c), len(cases[0]))
	}
	if _, err := d.decompress([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}); err == nil {
		t.Fatal("a huge claimed length was accepted")
	}
	if newDict("t", []byte("short")) != nil {
		t.Fatal("a 5-byte dictionary")
	}
}
