package raftstore

import (
	"testing"
	"time"
)

type emptyMode struct{}

type codecObj struct {
	ID      string        `json:"id"`
	Version uint64        `json:"version"`
	Wait    time.Duration `json:"wait"`
	Mode    *emptyMode    `json:"mode,omitempty"`
	None    *emptyMode    `json:"none,omitempty"`
}

func (o *codecObj) ObjectID() string          { return o.ID }
func (o *codecObj) ObjectVersion() uint64     { return o.Version }
func (o *codecObj) SetObjectVersion(v uint64) { o.Version = v }

// Object models written for encoding/json store as they would there.
func TestJSONCodecKeepsEncodingJSONBehaviour(t *testing.T) {
	s := &Schema{Tables: []Table{{Name: "objs", New: func() Object { return &codecObj{} }}}}
	if err := s.init(); err != nil {
		t.Fatal(err)
	}
	c := jsonCodec{s}
	b, err := c.Marshal("objs", &codecObj{ID: "a", Wait: 1500 * time.Millisecond, Mode: &emptyMode{}})
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"id":"a","version":0,"wait":1500000000,"mode":{}}` {
		t.Fatalf("encoded %s", b)
	}
	o, err := c.Unmarshal("objs", b)
	if err != nil {
		t.Fatal(err)
	}
	got := o.(*codecObj)
	if got.Wait != 1500*time.Millisecond || got.Mode == nil || got.None != nil {
		t.Fatalf("decoded %+v", got)
	}
}
