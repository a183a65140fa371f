package raftstore

import (
	"bytes"
	"fmt"
	"sort"

	"github.com/go-json-experiment/json"
	jsonv1 "github.com/go-json-experiment/json/v1"
)

// Object is a value kept in the store. Implementations are usually structs
// embedding a small meta struct; the store assigns the version (the Raft index
// of the object's last change) when a change commits.
//
// Objects returned by reads are shared with the store and must be treated as
// read-only: copy one before changing it and handing it to Tx.Update.
type Object interface {
	ObjectID() string
	ObjectVersion() uint64
	SetObjectVersion(v uint64)
}

// IndexFunc returns the keys an object is found under in a secondary index.
// Empty strings are skipped; an object with no keys is not in the index.
type IndexFunc func(Object) []string

// Table describes one kind of object.
type Table struct {
	// Name is the table's name, unique in a Schema.
	Name string
	// New returns an empty object of the table's type, for decoding.
	New func() Object
	// Indexes are the secondary indexes by name. The primary index, by ID,
	// always exists and is called IndexID.
	Indexes map[string]IndexFunc
	// Unique names indexes of Indexes whose keys no two objects may share
	// (service names, say). Every member checks it when a change applies,
	// so two writers that each saw a key free cannot both take it: the
	// second gets a *ConflictError naming the key.
	Unique []string
	// Compress stores the table's objects compressed, in memory, in the log
	// and in snapshots, against a dictionary: the first object written to
	// the table. Similar objects (tasks) shrink several times. The
	// dictionary keeps that first object's bytes for as long as the store
	// lives, even after the object is deleted: leave Compress off for
	// tables of secrets.
	Compress bool

	indexNames []string // sorted: the order index keys travel in log entries
	unique     []bool   // by position in indexNames
}

// indexKeys computes an object's keys for every secondary index, in
// indexNames order.
func (t *Table) indexKeys(obj Object) [][]string {
	if len(t.indexNames) == 0 {
		return nil
	}
	keys := make([][]string, len(t.indexNames))
	for i, name := range t.indexNames {
		for _, k := range t.Indexes[name](obj) {
			if k != "" {
				keys[i] = append(keys[i], k)
			}
		}
	}
	return keys
}

// IndexID is the name of every table's primary index.
const IndexID = "id"

// Codec turns objects into bytes for the Raft log and snapshots, and back.
type Codec interface {
	Marshal(table string, obj Object) ([]byte, error)
	Unmarshal(table string, data []byte) (Object, error)
}

// Schema is the set of tables a store holds. It must be the same on every
// member of a cluster.
type Schema struct {
	Tables []Table
	// Codec encodes objects; nil means JSON through each Table's New (with
	// the json v2 implementation: about twice as fast to decode as
	// encoding/json, and decoding is on every member's apply path).
	Codec Codec

	byName map[string]*Table
}

func (s *Schema) init() error {
	if s == nil || len(s.Tables) == 0 {
		return fmt.Errorf("%w: schema has no tables", ErrInvalidConfig)
	}
	s.byName = make(map[string]*Table, len(s.Tables))
	for i := range s.Tables {
		t := &s.Tables[i]
		if t.Name == "" {
			return fmt.Errorf("%w: schema table %d has no name", ErrInvalidConfig, i)
		}
		if _, dup := s.byName[t.Name]; dup {
			return fmt.Errorf("%w: schema table %q appears twice", ErrInvalidConfig, t.Name)
		}
		if t.New == nil && s.Codec == nil {
			return fmt.Errorf("%w: schema table %q needs New (or the schema a Codec)", ErrInvalidConfig, t.Name)
		}
		if _, bad := t.Indexes[IndexID]; bad {
			return fmt.Errorf("%w: schema table %q: index name %q is reserved for the primary index", ErrInvalidConfig, t.Name, IndexID)
		}
		t.indexNames = t.indexNames[:0]
		for name := range t.Indexes {
			t.indexNames = append(t.indexNames, name)
		}
		sort.Strings(t.indexNames)
		t.unique = make([]bool, len(t.indexNames))
		for _, u := range t.Unique {
			i := sort.SearchStrings(t.indexNames, u)
			if i == len(t.indexNames) || t.indexNames[i] != u {
				return fmt.Errorf("%w: schema table %q: unique index %q is not one of its indexes", ErrInvalidConfig, t.Name, u)
			}
			t.unique[i] = true
		}
		s.byName[t.Name] = t
	}
	if s.Codec == nil {
		s.Codec = jsonCodec{s}
	}
	return nil
}

func (s *Schema) table(name string) (*Table, error) {
	t, ok := s.byName[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrNoTable, name)
	}
	return t, nil
}

func (s *Schema) tableNames() []string {
	names := make([]string, 0, len(s.byName))
	for n := range s.byName {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

type jsonCodec struct{ s *Schema }

// jsonOptions keep two encoding/json behaviours that object models written
// for it rely on: a time.Duration is a number of nanoseconds (json v2
// refuses to guess a format), and `omitempty` omits only nil pointers, not
// pointers to empty structs (json v2 would drop a mode such as
// Global: &GlobalService{}, and it would come back nil).
var jsonOptions = json.JoinOptions(jsonv1.FormatDurationAsNano(true), jsonv1.OmitEmptyWithLegacySemantics(true))

func (c jsonCodec) Marshal(_ string, obj Object) ([]byte, error) {
	return json.Marshal(obj, jsonOptions)
}

// appendMarshaler is a Codec that can also encode into a buffer the
// caller reuses (the built-in JSON codec does): a Batch of 100,000 tasks
// then makes no copy of each encoding to throw away.
type appendMarshaler interface {
	marshalInto(buf *bytes.Buffer, table string, obj Object) error
}

func (c jsonCodec) marshalInto(buf *bytes.Buffer, _ string, obj Object) error {
	// A streaming encoder writes into buf's free room directly.
	return json.MarshalWrite(buf, obj, jsonOptions)
}

func (c jsonCodec) Unmarshal(table string, data []byte) (Object, error) {
	t, err := c.s.table(table)
	if err != nil {
		return nil, err
	}
	obj := t.New()
	if err := json.Unmarshal(data, obj, jsonOptions); err != nil {
		return nil, fmt.Errorf("raftstore: decode %s object: %w", table, err)
	}
	return obj, nil
}
