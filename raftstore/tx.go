package raftstore

import (
	"errors"
	"fmt"
)

// ReadTx is a consistent, read-only view of the store at one Raft index.
// It never blocks writers; reads see nothing committed after it was opened.
type ReadTx struct {
	schema *Schema
	st     *state
	index  uint64
}

// Index is the Raft index of the last change this view contains. Watching from
// it delivers exactly the changes made after the view.
func (tx *ReadTx) Index() uint64 { return tx.index }

// Get returns the object with the given ID, or ErrNotFound.
func (tx *ReadTx) Get(table, id string) (Object, error) {
	if _, err := tx.schema.table(table); err != nil {
		return nil, err
	}
	r := tx.st.get(table, id)
	if r == nil {
		return nil, fmt.Errorf("%w: %s/%s", ErrNotFound, table, id)
	}
	return r.object(tx.schema.Codec, table)
}

// List returns every object of a table, ordered by ID.
func (tx *ReadTx) List(table string) ([]Object, error) {
	return tx.query(table, IndexID, false, "")
}

// Find returns the objects whose index has the key value, ordered by ID
// within the key. Index IndexID finds by ID.
func (tx *ReadTx) Find(table, index, value string) ([]Object, error) {
	return tx.query(table, index, false, value)
}

// FindPrefix returns the objects with an index key starting with prefix
// (for example IDs by prefix, as `docker service ps a1b` does).
func (tx *ReadTx) FindPrefix(table, index, prefix string) ([]Object, error) {
	return tx.query(table, index, true, prefix)
}

// Count returns the number of objects in a table.
func (tx *ReadTx) Count(table string) (int, error) {
	if _, err := tx.schema.table(table); err != nil {
		return 0, err
	}
	return tx.st.tables[table].byID.Len(), nil
}

func (tx *ReadTx) query(table, index string, prefix bool, value string) ([]Object, error) {
	t, err := tx.schema.table(table)
	if err != nil {
		return nil, err
	}
	if index != IndexID {
		if _, ok := t.Indexes[index]; !ok {
			return nil, fmt.Errorf("%w: %s.%s", ErrNoIndex, table, index)
		}
	}
	var out []Object
	tx.st.scan(table, index, value, prefix, func(r *record) bool {
		var o Object
		if o, err = r.object(tx.schema.Codec, table); err != nil {
			return false
		}
		out = append(out, o)
		return true
	})
	return out, err
}

// Tx is a read-write transaction. Reads see the store as it was when the
// transaction began plus the transaction's own changes. The changes commit
// together as one Raft log entry when the function given to Store.Update
// returns nil, and only if no object they are based on changed meanwhile.
type Tx struct {
	ReadTx
	pending map[key]*op
	order   []key
}

type key struct{ table, id string }

// Get returns the object with the given ID as this transaction sees it.
func (tx *Tx) Get(table, id string) (Object, error) {
	if p, ok := tx.pending[key{table, id}]; ok && p != nil {
		if p.kind == opDelete {
			return nil, fmt.Errorf("%w: %s/%s", ErrNotFound, table, id)
		}
		return p.obj, nil
	}
	return tx.ReadTx.Get(table, id)
}

// List returns every object of a table as this transaction sees it.
func (tx *Tx) List(table string) ([]Object, error) { return tx.overlay(table, IndexID, false, "") }

// Find is ReadTx.Find as this transaction sees the store.
func (tx *Tx) Find(table, index, value string) ([]Object, error) {
	return tx.overlay(table, index, false, value)
}

// FindPrefix is ReadTx.FindPrefix as this transaction sees the store.
func (tx *Tx) FindPrefix(table, index, prefix string) ([]Object, error) {
	return tx.overlay(table, index, true, prefix)
}

// Count returns the number of objects in a table as this transaction sees it.
func (tx *Tx) Count(table string) (int, error) {
	objs, err := tx.List(table)
	return len(objs), err
}

func (tx *Tx) overlay(table, index string, prefix bool, value string) ([]Object, error) {
	base, err := tx.ReadTx.query(table, index, prefix, value)
	if err != nil || len(tx.pending) == 0 {
		return base, err
	}
	out := base[:0:0]
	for _, o := range base {
		if _, changed := tx.pending[key{table, o.ObjectID()}]; !changed {
			out = append(out, o)
		}
	}
	t, _ := tx.schema.table(table)
	for _, k := range tx.order {
		p := tx.pending[k]
		if p == nil || k.table != table || p.kind == opDelete {
			continue
		}
		if matches(t, index, prefix, value, p.obj) {
			out = append(out, p.obj)
		}
	}
	return out, nil
}

func matches(t *Table, index string, prefix bool, value string, obj Object) bool {
	var keys []string
	if index == IndexID {
		keys = []string{obj.ObjectID()}
		if !prefix && value == "" {
			return true
		}
	} else {
		keys = t.Indexes[index](obj)
	}
	for _, k := range keys {
		if k == value || (prefix && len(k) >= len(value) && k[:len(value)] == value) {
			return true
		}
	}
	return false
}

// Create adds a new object. It fails with ErrExists if the ID is taken.
func (tx *Tx) Create(table string, obj Object) error {
	if err := tx.check(table, obj); err != nil {
		return err
	}
	if _, err := tx.Get(table, obj.ObjectID()); err == nil {
		return fmt.Errorf("%w: %s/%s", ErrExists, table, obj.ObjectID())
	}
	k := key{table, obj.ObjectID()}
	if p := tx.pending[k]; p != nil && p.kind == opDelete {
		// Deleted then created again in one transaction: a replacement.
		p.kind, p.obj = opUpdate, obj
		return nil
	}
	tx.put(k, &op{kind: opCreate, table: table, id: obj.ObjectID(), obj: obj})
	return nil
}

// Update replaces an object. obj's version must be the version this
// transaction sees (the one it was read at), or a *ConflictError is returned.
func (tx *Tx) Update(table string, obj Object) error {
	if err := tx.check(table, obj); err != nil {
		return err
	}
	k := key{table, obj.ObjectID()}
	if p := tx.pending[k]; p != nil && p.kind != opDelete {
		// Changed twice in one transaction: keep the first change's base.
		p.obj = obj
		return nil
	}
	cur, err := tx.ReadTx.Get(table, obj.ObjectID())
	if err != nil {
		return err
	}
	if p := tx.pending[k]; p != nil && p.kind == opDelete {
		return fmt.Errorf("%w: %s/%s (deleted in this transaction)", ErrNotFound, table, obj.ObjectID())
	}
	if cur.ObjectVersion() != obj.ObjectVersion() {
		return &ConflictError{Table: table, ID: obj.ObjectID(), Expected: obj.ObjectVersion(), Actual: cur.ObjectVersion()}
	}
	tx.put(k, &op{kind: opUpdate, table: table, id: obj.ObjectID(), expect: cur.ObjectVersion(), obj: obj})
	return nil
}

// Delete removes an object; ErrNotFound if there is none.
func (tx *Tx) Delete(table, id string) error {
	if _, err := tx.schema.table(table); err != nil {
		return err
	}
	k := key{table, id}
	if p, ok := tx.pending[k]; ok {
		switch {
		case p == nil || p.kind == opDelete:
			return fmt.Errorf("%w: %s/%s", ErrNotFound, table, id)
		case p.kind == opCreate:
			tx.pending[k] = nil // created and deleted: no change at all
			return nil
		}
		p.kind, p.obj = opDelete, nil
		return nil
	}
	cur, err := tx.ReadTx.Get(table, id)
	if err != nil {
		return err
	}
	tx.put(k, &op{kind: opDelete, table: table, id: id, expect: cur.ObjectVersion()})
	return nil
}

func (tx *Tx) put(k key, o *op) {
	if tx.pending == nil {
		tx.pending = map[key]*op{}
	}
	if _, seen := tx.pending[k]; !seen {
		tx.order = append(tx.order, k)
	}
	tx.pending[k] = o
}

func (tx *Tx) check(table string, obj Object) error {
	if _, err := tx.schema.table(table); err != nil {
		return err
	}
	if obj == nil || obj.ObjectID() == "" {
		return errors.New("raftstore: object has no ID")
	}
	return nil
}

// ops returns the transaction's changes in the order they were first made.
func (tx *Tx) ops() []*op {
	out := make([]*op, 0, len(tx.pending))
	for _, k := range tx.order {
		if p := tx.pending[k]; p != nil {
			out = append(out, p)
		}
	}
	return out
}
