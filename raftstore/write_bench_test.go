package raftstore

import (
	"context"
	"crypto/rand"
	"fmt"
	"testing"
	"time"
)

// BenchmarkOneWriter commits single-object transactions one at a time on
// a 3-member cluster (in-memory transport, on disk, sealed, a compressed
// table with two secondary indexes, as raftbench's tasks), after 5,000
// objects are in. With -benchmem its allocs/op and B/op are what one
// committed write allocates across the three members: the garbage that
// sets how often the collector runs at one writer.
//
//	go test -run '^$' -bench OneWriter -benchmem -benchtime 3000x ./raftstore/
func BenchmarkOneWriter(b *testing.B) {
	kek := make([]byte, KeySize)
	rand.Read(kek)
	net := NewMemNetwork()
	var boot []Server
	for i := range 3 {
		id := fmt.Sprintf("m%d", i)
		boot = append(boot, Server{ID: id, Address: id, Voter: true})
	}
	var stores []*Store
	for _, srv := range boot {
		s := &Store{ID: srv.ID, Dir: b.TempDir(), Schema: &Schema{Tables: []Table{{Name: "items", New: func() Object { return &item{} }, Compress: true,
			Indexes: map[string]IndexFunc{
				"group": func(o Object) []string { return []string{o.(*item).Group} },
				"tag":   func(o Object) []string { return o.(*item).Tags },
			}}}},
			Transport: net.Transport(srv.ID), Bootstrap: boot, KeyEncryptionKey: kek}
		if err := s.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		stores = append(stores, s)
	}
	ctx := context.Background()
	put := func(s *Store, i int) {
		it := &item{ID: fmt.Sprintf("task%09d", i), Group: fmt.Sprintf("svc%04d", i%100), Tags: []string{fmt.Sprintf("node%05d", i%5000)}, Value: i}
		if err := s.Update(ctx, func(tx *Tx) error { return tx.Create("items", it) }); err != nil {
			b.Fatal(err)
		}
	}
	var leader *Store
	for leader == nil {
		for _, s := range stores {
			if s.IsLeader() {
				leader = s
			}
		}
		time.Sleep(time.Millisecond)
	}
	for i := range 5000 {
		put(leader, i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		put(leader, 5000+i)
	}
}
