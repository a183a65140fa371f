// Package raftstore is a replicated, transactional, watchable object store:
// the state every Shoal manager keeps, on hashicorp/raft with a segment
// write-ahead log of its own (WAL).
//
// Objects live in tables with a primary index (ID) and secondary indexes.
// A write is a transaction that commits as one Raft log entry, all or
// nothing, with optimistic concurrency on object versions (the Raft index of
// an object's last change). Batch packs tens of thousands of independent
// changes into few entries. Watch streams committed changes in order and can
// resume from an index; a watcher that falls too far behind is told to
// resync rather than silently missing changes. With a key-encryption key,
// log entries and snapshots are sealed at rest (AES-256-GCM data keys).
// A table marked Compress keeps its objects compressed against a per-table
// dictionary (similar objects such as tasks shrink several times).
//
// The package imports nothing else of Shoal: any type with ObjectID,
// ObjectVersion and SetObjectVersion can be stored.
//
//	net := raftstore.NewMemNetwork() // or NewNetworkTransport(NewTLSStreamLayer(ln, tlsConfig), logger)
//	s := &raftstore.Store{
//		ID: "m1", Dir: "/var/lib/app/raft", Schema: schema, Transport: net.Transport("m1"),
//		Bootstrap: []raftstore.Server{{ID: "m1", Address: "m1", Voter: true}},
//	}
//	if err := s.Start(ctx); err != nil { ... }
//	<-s.Ready()
//	err := s.Update(ctx, func(tx *raftstore.Tx) error {
//		return tx.Create("services", svc)
//	})
package raftstore
