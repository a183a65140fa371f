package raftstore

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// WALSegmentBytes sizes the log's segment files and WALCacheBytes the
// entries kept in memory, for members that need less (an arbiter); their
// zero values keep the defaults.
func TestWALSizes(t *testing.T) {
	for _, c := range []struct {
		seg          int64
		cache        int
		wantSeg      int64
		wantRecently int
	}{
		{0, 0, defaultSegBytes, recentMaxBytes},
		{1 << 20, 64 << 10, 1 << 20, 64 << 10},
	} {
		cl := newCluster(t, 1, true, func(s *Store) { s.WALSegmentBytes, s.WALCacheBytes = c.seg, c.cache })
		s := cl.leader()
		for i := range 200 {
			if err := cl.put(&item{ID: fmt.Sprint("i", i), Group: string(make([]byte, 16<<10))}); err != nil {
				t.Fatal(err)
			}
		}
		segs, err := filepath.Glob(filepath.Join(cl.dirs["m0"], "wal", "*"+segSuffix))
		if err != nil || len(segs) == 0 {
			t.Fatalf("segments %v, %v", segs, err)
		}
		for _, p := range segs {
			if fi, err := os.Stat(p); err != nil || fi.Size() != c.wantSeg {
				t.Errorf("segment %s: %v, %v; want %d bytes", p, fi.Size(), err, c.wantSeg)
			}
		}
		if c.seg > 0 && len(segs) < 3 {
			t.Errorf("%d segments of %d bytes for 3.2 MiB of entries", len(segs), c.seg)
		}
		s.logs.mu.RLock()
		got, max := s.logs.recentBytes, s.logs.recentMax
		s.logs.mu.RUnlock()
		if max != c.wantRecently || got > max {
			t.Errorf("recent entries: %d bytes, bound %d; want the bound %d", got, max, c.wantRecently)
		}
	}
}
