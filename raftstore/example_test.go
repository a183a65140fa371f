package raftstore_test

import (
	"context"
	"fmt"

	"github.com/shoalproject/shoal/raftstore"
)

type note struct {
	ID      string `json:"id"`
	Version uint64 `json:"version"`
	Author  string `json:"author"`
	Text    string `json:"text"`
}

func (n *note) ObjectID() string          { return n.ID }
func (n *note) ObjectVersion() uint64     { return n.Version }
func (n *note) SetObjectVersion(v uint64) { n.Version = v }

func Example() {
	ctx := context.Background()
	schema := &raftstore.Schema{Tables: []raftstore.Table{{
		Name: "notes",
		New:  func() raftstore.Object { return &note{} },
		Indexes: map[string]raftstore.IndexFunc{
			"author": func(o raftstore.Object) []string { return []string{o.(*note).Author} },
		},
	}}}
	s := &raftstore.Store{ID: "m1", Schema: schema, Transport: raftstore.NewMemNetwork().Transport("m1"),
		Bootstrap: []raftstore.Server{{ID: "m1", Address: "m1", Voter: true}}}
	if err := s.Start(ctx); err != nil {
		panic(err)
	}
	defer s.Close()
	<-s.Ready()

	first := &note{ID: "n1", Author: "ada", Text: "hello"}
	if err := s.Update(ctx, func(tx *raftstore.Tx) error { return tx.Create("notes", first) }); err != nil {
		panic(err)
	}
	// A change based on an old version is refused.
	stale := *first
	stale.Version--
	err := s.Update(ctx, func(tx *raftstore.Tx) error { return tx.Update("notes", &stale) })
	fmt.Println(err != nil)

	s.View(func(tx *raftstore.ReadTx) error {
		byAda, _ := tx.Find("notes", "author", "ada")
		fmt.Println(len(byAda), byAda[0].(*note).Text)
		return nil
	})
	// Output:
	// true
	// 1 hello
}
