package raftstore

import (
	"context"
	"sort"
	"sync"
	"sync/atomic"
	"unsafe"
)

// EventKind says what happened to an object.
type EventKind uint8

// Event kinds.
const (
	Created EventKind = iota + 1
	Updated
	Deleted
)

func (k EventKind) String() string {
	switch k {
	case Created:
		return "create"
	case Updated:
		return "update"
	case Deleted:
		return "delete"
	}
	return "unknown"
}

// Event is one committed change. Object is the new value (nil on delete);
// Old is the value before (nil on create). Both are shared and read-only.
type Event struct {
	Index  uint64
	Kind   EventKind
	Table  string
	ID     string
	Object Object
	Old    Object

	rec, oldRec *record // decoded into Object and Old by the watcher, not the FSM
}

// eventRing keeps the most recent events for watchers. The FSM only appends
// and never waits for a watcher; a watcher that falls off the end is told to
// resync instead of silently missing events.
//
// A slot is 32 bytes (an Event is 96): the ID is the record's and the table
// a number, so the default 131,072 events take 4 MiB per member, not 12.
// The buffer starts small and doubles up to its capacity as events come.
//
// The record a slot names as the new value is the state's own (until a
// later change replaces it); the one it names as the old value is kept for
// the watchers alone. Those old values are bounded by bytes too (maxBytes),
// so that large objects changed often (service specs, say) cannot make the
// ring hold gigabytes: past the bound the oldest events go, as past the
// count.
type eventRing struct {
	mu       sync.Mutex
	buf      []ringEvent
	capacity int
	maxBytes int               // bound on oldBytes; 0: none (set before use)
	oldBytes int               // size of the old values held (recordBytes)
	tables   []string          // table names by number
	tableNum map[string]uint16 // and back
	start    uint64            // sequence number of the oldest kept event
	next     uint64            // sequence number the next event gets
	floor    uint64            // events with Index <= floor may be missing (evicted, or before a restore)
	notify   chan struct{}
	closed   chan struct{}
}

type ringEvent struct {
	index       uint64
	rec, oldRec *record
	table       uint16
	kind        EventKind
}

func newEventRing(capacity int, tables ...string) *eventRing {
	r := &eventRing{buf: make([]ringEvent, min(capacity, 1024)), capacity: capacity, tableNum: map[string]uint16{},
		notify: make(chan struct{}), closed: make(chan struct{})}
	for _, t := range tables {
		r.tableNum[t] = uint16(len(r.tables))
		r.tables = append(r.tables, t)
	}
	return r
}

func (r *eventRing) append(evs []Event) {
	if len(evs) == 0 {
		return
	}
	r.mu.Lock()
	for _, ev := range evs {
		size := uint64(len(r.buf))
		if r.next-r.start == size && len(r.buf) < r.capacity {
			r.grow()
			size = uint64(len(r.buf))
		}
		if r.next-r.start == size {
			r.evictOldest()
		}
		num, ok := r.tableNum[ev.Table]
		if !ok {
			num = uint16(len(r.tables))
			r.tableNum[ev.Table] = num
			r.tables = append(r.tables, ev.Table)
		}
		r.buf[r.next%size] = ringEvent{index: ev.Index, rec: ev.rec, oldRec: ev.oldRec, table: num, kind: ev.Kind}
		r.next++
		r.oldBytes += recordBytes(ev.oldRec)
		for r.maxBytes > 0 && r.oldBytes > r.maxBytes && r.next-r.start > 1 {
			r.evictOldest()
		}
	}
	close(r.notify)
	r.notify = make(chan struct{})
	r.mu.Unlock()
}

// evictOldest drops the oldest event; watchers that still need it resync.
func (r *eventRing) evictOldest() {
	old := &r.buf[r.start%uint64(len(r.buf))]
	r.floor = max(r.floor, old.index)
	r.oldBytes -= recordBytes(old.oldRec)
	*old = ringEvent{}
	r.start++
}

// recordBytes is about what a record holds in memory (not counting a
// decoded object, whose size is unknown).
func recordBytes(rec *record) int {
	if rec == nil {
		return 0
	}
	return int(unsafe.Sizeof(*rec)) + int(rec.identN) + int(rec.dataN)
}

// grow doubles the buffer (up to capacity), keeping each event at its
// sequence number modulo the new size.
func (r *eventRing) grow() {
	nb := make([]ringEvent, min(2*len(r.buf), r.capacity))
	for seq := r.start; seq < r.next; seq++ {
		nb[seq%uint64(len(nb))] = r.buf[seq%uint64(len(r.buf))]
	}
	r.buf = nb
}

// event rebuilds the Event of a slot.
func (r *eventRing) event(e *ringEvent) Event {
	ev := Event{Index: e.index, Kind: e.kind, Table: r.tables[e.table], rec: e.rec, oldRec: e.oldRec}
	if e.rec != nil {
		ev.ID = e.rec.id()
	} else if e.oldRec != nil {
		ev.ID = e.oldRec.id()
	}
	return ev
}

// reset drops every kept event: the state was replaced up to index.
func (r *eventRing) reset(index uint64) {
	r.mu.Lock()
	clear(r.buf)
	r.oldBytes = 0
	// Leave a gap in the sequence so that every watcher, even one that had
	// seen everything, finds its cursor behind start and resyncs.
	r.next++
	r.start = r.next
	r.floor = index
	close(r.notify)
	r.notify = make(chan struct{})
	r.mu.Unlock()
}

func (r *eventRing) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.closed:
	default:
		close(r.closed)
	}
}

// seqAfter returns the sequence of the first event with Index > index, or
// false when some such events are no longer kept.
func (r *eventRing) seqAfter(index uint64) (uint64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if index < r.floor {
		return 0, false
	}
	size := uint64(len(r.buf))
	n := int(r.next - r.start)
	i := sort.Search(n, func(i int) bool { return r.buf[(r.start+uint64(i))%size].index > index })
	return r.start + uint64(i), true
}

// Watcher delivers events in commit order on Events. When the channel
// closes, Err says why: ErrResync if the watcher fell too far behind (or the
// state was replaced by a snapshot), the context's error, or net.ErrClosed
// when the store shut down.
type Watcher struct {
	ch     chan Event
	err    atomic.Pointer[error]
	cancel context.CancelFunc
}

// Events is the stream of changes. It blocks the watcher (never the store)
// when the consumer is slow.
func (w *Watcher) Events() <-chan Event { return w.ch }

// Err is why Events closed; nil while it is open.
func (w *Watcher) Err() error {
	if p := w.err.Load(); p != nil {
		return *p
	}
	return nil
}

// Stop ends the watch; Events closes soon after.
func (w *Watcher) Stop() { w.cancel() }

func (w *Watcher) run(ctx context.Context, r *eventRing, codec Codec, cursor uint64, filter func(Event) bool, closedErr error) {
	defer close(w.ch)
	fail := func(err error) { w.err.Store(&err) }
	batch := make([]Event, 0, 256)
	for {
		r.mu.Lock()
		if cursor < r.start {
			r.mu.Unlock()
			fail(ErrResync)
			return
		}
		if cursor == r.next {
			notify := r.notify
			r.mu.Unlock()
			select {
			case <-notify:
				continue
			case <-ctx.Done():
				fail(ctx.Err())
				return
			case <-r.closed:
				fail(closedErr)
				return
			}
		}
		size := uint64(len(r.buf))
		batch = batch[:0]
		for cursor < r.next && len(batch) < cap(batch) {
			batch = append(batch, r.event(&r.buf[cursor%size]))
			cursor++
		}
		r.mu.Unlock()
		for _, ev := range batch {
			if err := ev.decode(codec); err != nil {
				fail(err)
				return
			}
			if filter != nil && !filter(ev) {
				continue
			}
			select {
			case w.ch <- ev:
			case <-ctx.Done():
				fail(ctx.Err())
				return
			case <-r.closed:
				fail(closedErr)
				return
			}
		}
	}
}

func (ev *Event) decode(c Codec) (err error) {
	if ev.rec != nil {
		if ev.Object, err = ev.rec.object(c, ev.Table); err != nil {
			return err
		}
	}
	if ev.oldRec != nil {
		ev.Old, err = ev.oldRec.object(c, ev.Table)
	}
	return err
}
