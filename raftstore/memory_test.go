package raftstore

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"testing"
)

// BenchmarkMemoryPerObject prints the live heap a member holds per object
// (after GC, with everything the member keeps: records, indexes, the watch
// ring, the log's cache of recent entries), for objects shaped like the
// managers' tasks: a compressed table with two secondary indexes, written
// one object per transaction as control API calls do, on disk with
// encryption at rest. IDs come in order (as raftbench's) or at random (as
// swarm's). Run it with -benchtime=1x:
//
//	go test -run '^$' -bench MemoryPerObject -benchtime 1x ./raftstore/
func BenchmarkMemoryPerObject(b *testing.B) {
	for _, order := range []string{"sequential", "random"} {
		b.Run(order, func(b *testing.B) {
			const n = 20000
			kek := make([]byte, KeySize)
			rand.Read(kek)
			schema := &Schema{Tables: []Table{{Name: "items", New: func() Object { return &item{} }, Compress: true,
				Indexes: map[string]IndexFunc{
					"group": func(o Object) []string { return []string{o.(*item).Group} },
					"tag":   func(o Object) []string { return o.(*item).Tags },
				}}}}
			s := &Store{ID: "m", Dir: b.TempDir(), Schema: schema, Transport: NewMemNetwork().Transport("m"),
				Bootstrap: []Server{{ID: "m", Address: "m", Voter: true}}, KeyEncryptionKey: kek}
			if err := s.Start(context.Background()); err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			<-s.Ready()
			ctx := context.Background()
			id := func(i int) string {
				if order == "random" {
					return fmt.Sprintf("%025x", rand.Text()[:25])
				}
				return fmt.Sprintf("task%09d", i)
			}
			put := func(from, to int) {
				for i := from; i < to; i++ {
					it := &item{ID: id(i), Group: fmt.Sprintf("svc%04d", i%100), Tags: []string{fmt.Sprintf("node%05d", i%5000)}, Value: i}
					if err := s.Update(ctx, func(tx *Tx) error { return tx.Create("items", it) }); err != nil {
						b.Fatal(err)
					}
				}
			}
			// Warm up past the ring's and the log cache's first sizes, then
			// count what n more objects cost.
			put(0, 2000)
			before := liveHeap()
			put(2000, 2000+n)
			after := liveHeap()
			b.ReportMetric(float64(after-before)/n, "B/object")
			if p := os.Getenv("SHOAL_HEAPPROFILE"); p != "" {
				f, _ := os.Create(p + "." + order)
				pprof.Lookup("heap").WriteTo(f, 0)
				f.Close()
			}
		})
	}
}

func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
