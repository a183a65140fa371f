package raftstore

import (
	"fmt"

	memdb "github.com/hashicorp/go-memdb"
)

// record is what the in-memory database holds for one object.
type record struct {
	table string
	id    string
	obj   Object
}

// idIndexer indexes records by object ID; it also answers prefix lookups.
type idIndexer struct{}

func (idIndexer) FromObject(raw any) (bool, []byte, error) {
	r := raw.(*record)
	return true, append([]byte(r.id), 0), nil
}

func (idIndexer) FromArgs(args ...any) ([]byte, error) {
	s, err := oneString(args)
	if err != nil {
		return nil, err
	}
	return append([]byte(s), 0), nil
}

func (idIndexer) PrefixFromArgs(args ...any) ([]byte, error) {
	s, err := oneString(args)
	return []byte(s), err
}

// funcIndexer adapts an IndexFunc to memdb's multi-value indexer.
type funcIndexer struct{ fn IndexFunc }

func (f funcIndexer) FromObject(raw any) (bool, [][]byte, error) {
	keys := f.fn(raw.(*record).obj)
	out := make([][]byte, 0, len(keys))
	for _, k := range keys {
		if k != "" {
			out = append(out, append([]byte(k), 0))
		}
	}
	return len(out) > 0, out, nil
}

func (funcIndexer) FromArgs(args ...any) ([]byte, error) {
	s, err := oneString(args)
	if err != nil {
		return nil, err
	}
	return append([]byte(s), 0), nil
}

func (funcIndexer) PrefixFromArgs(args ...any) ([]byte, error) {
	s, err := oneString(args)
	return []byte(s), err
}

func oneString(args []any) (string, error) {
	if len(args) != 1 {
		return "", fmt.Errorf("raftstore: index lookup takes one value, got %d", len(args))
	}
	s, ok := args[0].(string)
	if !ok {
		return "", fmt.Errorf("raftstore: index lookup value must be a string, got %T", args[0])
	}
	return s, nil
}

func newMemDB(s *Schema) (*memdb.MemDB, error) {
	ms := &memdb.DBSchema{Tables: map[string]*memdb.TableSchema{}}
	for _, t := range s.Tables {
		ts := &memdb.TableSchema{Name: t.Name, Indexes: map[string]*memdb.IndexSchema{
			IndexID: {Name: IndexID, Unique: true, Indexer: idIndexer{}},
		}}
		for name, fn := range t.Indexes {
			ts.Indexes[name] = &memdb.IndexSchema{Name: name, AllowMissing: true, Indexer: funcIndexer{fn}}
		}
		ms.Tables[t.Name] = ts
	}
	return memdb.NewMemDB(ms)
}

func getRecord(txn *memdb.Txn, table, id string) (*record, error) {
	raw, err := txn.First(table, IndexID, id)
	if err != nil {
		return nil, err
	}
	if raw == nil {
		return nil, nil
	}
	return raw.(*record), nil
}
