package swarm

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm/api"
)

// The leader's log broker: it holds the log subscriptions of the logs
// requests it serves and the log streams of the nodes' sessions. Both live
// in the leader's memory only (as the assignment streams do): a new leader
// starts with none, the requests it ended are made again by their callers,
// and the nodes open their streams to it.

// logAckTimeout bounds how long a node may take to answer a subscription
// (its first publication): past it the node's tasks are reported as not
// read, so a request never hangs on a node that is gone.
var logAckTimeout = 5 * time.Second

// logCheckPeriod is how often a request checks on its nodes (down,
// session gone, late) and, with Follow, looks for new tasks and for the
// removal of its service or task.
var logCheckPeriod = 500 * time.Millisecond

// logPublishWait bounds how long a publication waits for the request's
// reader (a paused client): past it the node is told to send the batch
// again, so that no call outlives the callers' timeouts.
var logPublishWait = 10 * time.Second

// logListenerQueue bounds the subscriptions waiting for a node to take
// them: one that does not fit is dropped (and counted), and the request
// reports the node's tasks as not read, rather than block the broker.
const logListenerQueue = 64

type logBroker struct {
	mu        sync.Mutex
	stopped   bool
	subs      map[string]*logSub
	listeners map[string]*logListener
	// dropped counts subscriptions a node's full queue did not take.
	dropped atomic.Uint64
}

// logListener is a node's log stream to this manager.
type logListener struct {
	ch   chan LogSubscription
	gone chan struct{} // closed when the stream ends
	once sync.Once
}

func (l *logListener) end() { l.once.Do(func() { close(l.gone) }) }

// logSub is one logs request being served.
type logSub struct {
	id   string
	opts LogOptions
	in   chan logBatch
	// closed ends the subscription: publications are refused from then.
	closed    chan struct{}
	closeOnce sync.Once

	mu    sync.Mutex
	tasks map[string]*api.Task // the selected tasks, as last read
	nodes map[string]*logPart
}

func (s *logSub) close() { s.closeOnce.Do(func() { close(s.closed) }) }

// logPart is what a subscription asked of one node.
type logPart struct {
	tasks    map[string]bool
	listener *logListener
	asked    time.Time
	acked    bool
	finished bool // done, or given up
}

// logBatch is a publication turned into messages.
type logBatch struct {
	node string
	msgs []LogMessage
	done bool
}

func newLogBroker() *logBroker {
	return &logBroker{subs: map[string]*logSub{}, listeners: map[string]*logListener{}}
}

// stop ends every subscription and node stream: leadership ended.
func (b *logBroker) stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stopped = true
	for _, s := range b.subs {
		s.close()
	}
	for _, l := range b.listeners {
		l.end()
	}
	clear(b.subs)
	clear(b.listeners)
}

// listen registers a node's log stream; a new one replaces the old.
func (b *logBroker) listen(nodeID string) (*logListener, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return nil, ErrNotManagerLeader
	}
	if old := b.listeners[nodeID]; old != nil {
		old.end()
	}
	l := &logListener{ch: make(chan LogSubscription, logListenerQueue), gone: make(chan struct{})}
	b.listeners[nodeID] = l
	return l, nil
}

func (b *logBroker) unlisten(nodeID string, l *logListener) {
	l.end()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.listeners[nodeID] == l {
		delete(b.listeners, nodeID)
	}
}

// notify queues a subscription for a node; false when the node has no
// stream or its queue is full.
func (b *logBroker) notify(nodeID string, m LogSubscription) (*logListener, bool) {
	b.mu.Lock()
	l := b.listeners[nodeID]
	b.mu.Unlock()
	if l == nil {
		return nil, false
	}
	select {
	case l.ch <- m:
		return l, true
	default:
		b.dropped.Add(1)
		return l, false
	}
}

// publish takes a node's batch for a subscription. It blocks while the
// request's reader is behind; it fails with ErrNotFound once the
// subscription has ended. A node may publish only for the tasks the
// subscription asked of it, and the message's task, service and slot come
// from the store, not from the node.
func (b *logBroker) publish(ctx context.Context, nodeID string, p LogPublication) error {
	if err := p.check(); err != nil {
		return err
	}
	b.mu.Lock()
	s := b.subs[p.Subscription]
	b.mu.Unlock()
	if s == nil {
		return fmt.Errorf("%w: log subscription %s (it has ended)", ErrNotFound, p.Subscription)
	}
	batch := logBatch{node: nodeID, done: p.Done}
	s.mu.Lock()
	part := s.nodes[nodeID]
	if part == nil {
		s.mu.Unlock()
		return fmt.Errorf("%w: log subscription %s asked nothing of node %s", errForbidden, p.Subscription, nodeID)
	}
	for _, l := range p.Lines {
		t := s.tasks[l.TaskID]
		if !part.tasks[l.TaskID] || t == nil {
			s.mu.Unlock()
			return fmt.Errorf("%w: node %s published logs of task %s, which the subscription did not ask of it", errForbidden, nodeID, clip(l.TaskID))
		}
		if !s.opts.wants(l.Stream) {
			continue
		}
		batch.msgs = append(batch.msgs, LogMessage{TaskID: t.ID, NodeID: nodeID, ServiceID: t.ServiceID, Slot: t.Slot,
			Stream: l.Stream, Time: l.Time, Line: l.Line})
	}
	for _, f := range p.Failed {
		t := s.tasks[f.TaskID]
		if !part.tasks[f.TaskID] || t == nil {
			continue
		}
		batch.msgs = append(batch.msgs, LogMessage{TaskID: t.ID, NodeID: nodeID, ServiceID: t.ServiceID, Slot: t.Slot,
			Warning: fmt.Sprintf("node %s: %s", nodeID, clip(f.Err))})
	}
	s.mu.Unlock()
	wait := time.NewTimer(logPublishWait)
	defer wait.Stop()
	select {
	case s.in <- batch:
		return nil
	case <-s.closed:
		return fmt.Errorf("%w: log subscription %s (it has ended)", ErrNotFound, p.Subscription)
	case <-wait.C:
		return fmt.Errorf("%w: the reader of log subscription %s is behind; send the batch again", ErrUnavailable, p.Subscription)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func newLogID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// serve serves one logs request: it asks the nodes of the selected tasks
// for their lines and calls fn with each message until every node is done
// (without Follow), or ctx ends, the service or task is removed, or
// leadership ends (with Follow). fn is called from one goroutine; flush,
// when set, after each batch of messages.
func (b *logBroker) serve(ctx context.Context, st *raftstore.Store, target logTarget, opts LogOptions, fn func(LogMessage) error, flush func() error) error {
	if flush == nil {
		flush = func() error { return nil }
	}
	if err := opts.Validate(); err != nil {
		return err
	}
	s := &logSub{id: newLogID(), opts: opts, in: make(chan logBatch, 16), closed: make(chan struct{}),
		tasks: map[string]*api.Task{}, nodes: map[string]*logPart{}}
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return ErrNotManagerLeader
	}
	b.subs[s.id] = s
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.subs, s.id)
		b.mu.Unlock()
		s.close()
		// Nodes still reading stop.
		s.mu.Lock()
		for node, p := range s.nodes {
			if !p.finished || opts.Follow {
				b.notify(node, LogSubscription{ID: s.id, Close: true})
			}
		}
		s.mu.Unlock()
	}()
	var warnings []LogMessage
	warn := func(m LogMessage) error {
		if opts.Follow {
			return fn(m)
		}
		warnings = append(warnings, m)
		return nil
	}
	// failPart gives up on what a node has not sent.
	failPart := func(node string, p *logPart, why string) error {
		s.mu.Lock()
		p.finished = true
		var msgs []LogMessage
		for _, id := range slices.Sorted(maps.Keys(p.tasks)) {
			t := s.tasks[id]
			msgs = append(msgs, LogMessage{TaskID: id, NodeID: node, ServiceID: t.ServiceID, Slot: t.Slot, Warning: why})
		}
		s.mu.Unlock()
		for _, m := range msgs {
			if err := warn(m); err != nil {
				return err
			}
		}
		return nil
	}
	// refresh reads the selected tasks and asks their nodes for the new
	// ones; gone is true once the service or task is removed.
	refresh := func(first bool) (gone bool, err error) {
		tasks, err := logTasks(st, target)
		if errors.Is(err, ErrNotFound) && !first {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		added := map[string][]string{}
		s.mu.Lock()
		for _, t := range tasks {
			if _, known := s.tasks[t.ID]; known {
				s.tasks[t.ID] = t
				continue
			}
			if !wantLogs(t, opts.Follow) {
				continue
			}
			s.tasks[t.ID] = t
			added[t.NodeID] = append(added[t.NodeID], t.ID)
		}
		s.mu.Unlock()
		for _, node := range slices.Sorted(maps.Keys(added)) {
			if err := b.ask(st, s, node, added[node], first, failPart); err != nil {
				return false, err
			}
		}
		return false, nil
	}
	if _, err := refresh(true); err != nil {
		return err
	}
	if err := flush(); err != nil {
		return err
	}
	tick := time.NewTicker(logCheckPeriod)
	defer tick.Stop()
	for {
		if !opts.Follow && s.allFinished() {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.closed:
			return fmt.Errorf("%w: the leader stopped leading; ask again", ErrUnavailable)
		case batch := <-s.in:
			s.mu.Lock()
			p := s.nodes[batch.node]
			if p != nil {
				p.acked = true
				if batch.done {
					p.finished = true
				}
			}
			s.mu.Unlock()
			for _, m := range batch.msgs {
				var err error
				if m.Warning != "" {
					err = warn(m)
				} else {
					err = fn(m)
				}
				if err != nil {
					return err
				}
			}
			if len(s.in) == 0 {
				if err := flush(); err != nil {
					return err
				}
			}
		case <-tick.C:
			if opts.Follow {
				gone, err := refresh(false)
				if err != nil {
					return err
				}
				if gone {
					return nil // the service or task was removed
				}
			}
			if err := b.check(st, s, failPart); err != nil {
				return err
			}
			if err := flush(); err != nil {
				return err
			}
		}
	}
	for _, m := range warnings {
		if err := fn(m); err != nil {
			return err
		}
	}
	return nil
}

// ask sends a subscription for some tasks to their node, or gives up on
// them at once when the node is down or has no session with this manager.
// Tasks found after the first read (new tasks, with Follow) send all
// their lines: none of them is from before the request.
func (b *logBroker) ask(st *raftstore.Store, s *logSub, node string, ids []string, first bool, failPart func(string, *logPart, string) error) error {
	s.mu.Lock()
	p := s.nodes[node]
	if p == nil {
		p = &logPart{tasks: map[string]bool{}}
		s.nodes[node] = p
	}
	for _, id := range ids {
		p.tasks[id] = true
	}
	p.asked, p.acked, p.finished = time.Now(), false, false
	s.mu.Unlock()
	opts := s.opts
	if !first {
		opts.Tail = 0
	}
	if why := nodeUnusable(st, node); why != "" {
		return failPart(node, p, why)
	}
	l, ok := b.notify(node, LogSubscription{ID: s.id, Tasks: ids, Options: opts})
	switch {
	case l == nil:
		return failPart(node, p, fmt.Sprintf("node %s has no session with the leader", node))
	case !ok:
		return failPart(node, p, fmt.Sprintf("node %s is not taking log requests (too many at once)", node))
	}
	s.mu.Lock()
	p.listener = l
	s.mu.Unlock()
	return nil
}

// check gives up on nodes that went down, lost their session, or did not
// answer in time.
func (b *logBroker) check(st *raftstore.Store, s *logSub, failPart func(string, *logPart, string) error) error {
	s.mu.Lock()
	nodes := slices.Sorted(maps.Keys(s.nodes))
	s.mu.Unlock()
	for _, node := range nodes {
		s.mu.Lock()
		p := s.nodes[node]
		finished, acked, asked, l := p.finished, p.acked, p.asked, p.listener
		s.mu.Unlock()
		if finished {
			continue
		}
		why := nodeUnusable(st, node)
		if why == "" && l != nil {
			select {
			case <-l.gone:
				why = fmt.Sprintf("node %s's session with the leader ended", node)
			default:
			}
		}
		if why == "" && !acked && time.Since(asked) > logAckTimeout {
			why = fmt.Sprintf("node %s did not answer within %v", node, logAckTimeout)
		}
		if why != "" {
			if err := failPart(node, p, why); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *logSub) allFinished() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.nodes {
		if !p.finished {
			return false
		}
	}
	return true
}

// nodeUnusable says why a node cannot be asked for logs ("" when it can).
func nodeUnusable(st *raftstore.Store, node string) string {
	why := ""
	st.View(func(tx *raftstore.ReadTx) error {
		o, err := tx.Get(TableNodes, node)
		if err != nil {
			why = fmt.Sprintf("node %s is no longer in the cluster", node)
			return nil
		}
		if n := o.(*api.Node); n.Status.State != api.NodeReady {
			why = fmt.Sprintf("node %s is %s", node, strings.ToLower(string(n.Status.State)))
			if n.Status.Message != "" {
				why += " (" + n.Status.Message + ")"
			}
		}
		return nil
	})
	return why
}

// logTasks reads the tasks of a logs request's target.
func logTasks(st *raftstore.Store, target logTarget) ([]*api.Task, error) {
	var out []*api.Task
	err := st.View(func(tx *raftstore.ReadTx) error {
		if target.taskID != "" {
			o, err := tx.Get(TableTasks, target.taskID)
			if err != nil {
				return notFound("task", target.taskID)
			}
			out = []*api.Task{o.(*api.Task)}
			return nil
		}
		if _, err := tx.Get(TableServices, target.serviceID); err != nil {
			return notFound("service", target.serviceID)
		}
		var err error
		out, err = list[*api.Task](tx.Find(TableTasks, IndexService, target.serviceID))
		return err
	})
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, err
}

// wantLogs says whether a task has logs to ask for: it ran (or, with
// Follow, is on a node and may run). Rejected tasks never ran.
func wantLogs(t *api.Task, follow bool) bool {
	if t.NodeID == "" || t.Status.State == api.TaskRejected {
		return false
	}
	if follow {
		return t.Status.State >= api.TaskAssigned
	}
	return t.Status.State >= api.TaskRunning
}

// logBroker returns the broker while this manager leads.
func (d *dispatcher) logBroker() (*logBroker, error) {
	if err := d.leading(); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.logs == nil {
		return nil, d.notLeader()
	}
	return d.logs, nil
}

// ServiceLogs calls fn with the log lines of a service's tasks (by ID or
// name), gathered from their nodes, then with a warning for each task
// whose logs could not be read. Only the leader serves it (it holds the
// nodes' sessions); fn is called from one goroutine.
func (m *Manager) ServiceLogs(ctx context.Context, idOrName string, opts LogOptions, fn func(LogMessage) error) error {
	svc, err := m.Service(idOrName)
	if err != nil {
		return err
	}
	return m.logs(ctx, logTarget{serviceID: svc.ID}, opts, fn)
}

// TaskLogs is ServiceLogs for one task.
func (m *Manager) TaskLogs(ctx context.Context, taskID string, opts LogOptions, fn func(LogMessage) error) error {
	t, err := m.Task(taskID)
	if err != nil {
		return err
	}
	return m.logs(ctx, logTarget{taskID: t.ID}, opts, fn)
}

func (m *Manager) logs(ctx context.Context, target logTarget, opts LogOptions, fn func(LogMessage) error) error {
	b, st, err := m.logBroker()
	if err != nil {
		return err
	}
	return b.serve(ctx, st, target, opts, fn, nil)
}

// logBroker returns the broker and the store while this manager leads.
func (m *Manager) logBroker() (*logBroker, *raftstore.Store, error) {
	d, err := m.dispatcher()
	if err != nil {
		return nil, nil, err
	}
	st, err := m.st()
	if err != nil {
		return nil, nil, err
	}
	b, err := d.logBroker()
	return b, st, err
}

// LogSubscriptions streams the log subscriptions for a node while this
// manager leads; see LogDispatcher.
func (m *Manager) LogSubscriptions(ctx context.Context, nodeID string) (<-chan LogSubscription, error) {
	if err := checkNodeID(nodeID); err != nil {
		return nil, err
	}
	b, _, err := m.logBroker()
	if err != nil {
		return nil, err
	}
	l, err := b.listen(nodeID)
	if err != nil {
		return nil, err
	}
	out := make(chan LogSubscription)
	go func() {
		defer close(out)
		defer b.unlisten(nodeID, l)
		for {
			select {
			case s := <-l.ch:
				select {
				case out <- s:
				case <-ctx.Done():
					return
				case <-l.gone:
					return
				}
			case <-ctx.Done():
				return
			case <-l.gone:
				return
			}
		}
	}()
	return out, nil
}

// PublishLogs takes a node's batch of log lines; see LogDispatcher.
func (m *Manager) PublishLogs(ctx context.Context, nodeID string, p LogPublication) error {
	b, _, err := m.logBroker()
	if err != nil {
		return err
	}
	return b.publish(ctx, nodeID, p)
}
