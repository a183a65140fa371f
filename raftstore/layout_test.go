package raftstore

import (
	"testing"
	"unsafe"
)

// The memory per object (BenchmarkMemoryPerObject) rests on these sizes
// on 64-bit machines: a field added to a record or an index entry is a
// cost paid once per object or per index key, and must be meant.
func TestRecordAndIndexEntrySizes(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("sizes are for 64-bit machines")
	}
	if n := unsafe.Sizeof(record{}); n != 48 {
		t.Errorf("a record is %d bytes, want 48", n)
	}
	if n := unsafe.Sizeof(idxEntry{}); n != 16 {
		t.Errorf("an index entry is %d bytes, want 16", n)
	}
}
