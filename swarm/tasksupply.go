package swarm

import "github.com/shoalproject/shoal/swarm/api"

// taskSupply makes the tasks a pass is about to create ahead of it, on
// another goroutine: zeroed but for a fresh ID, a chunk of them in one
// allocation. Creating a service of 100,000 replicas, allocating the tasks
// (704 bytes each) and drawing their IDs was most of the pass's planning,
// which runs while nothing else has work (the store applies what the pass
// commits only after it): the supply moves that to the idle core. A chunk
// stays in memory while any of its tasks is the store's object: until
// all of its 64 tasks are updated (started, reported) or removed, so a
// task that is never updated (pending with no node for it, on a node that
// never reports) keeps its whole chunk (about 45 KB).
type taskSupply struct {
	ch   chan []api.Task
	cur  []api.Task
	quit chan struct{}
	done chan struct{}
}

// Sizes of the supply: tasks per chunk, chunks made ahead, and the fewest
// tasks a pass must be about to create to start one.
const (
	supplyChunk = 64
	supplyAhead = 16
	supplyMin   = 2048
)

// supplyTasks starts a supply of n tasks with IDs from newID.
func supplyTasks(n int, newID func() string) *taskSupply {
	s := &taskSupply{ch: make(chan []api.Task, supplyAhead), quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		defer close(s.ch)
		for n > 0 {
			c := make([]api.Task, min(supplyChunk, n))
			for i := range c {
				c[i].ID = newID()
			}
			n -= len(c)
			select {
			case s.ch <- c:
			case <-s.quit:
				return
			}
		}
	}()
	return s
}

// take returns the next task (its ID set, every other field zero), or nil
// once the supply is used up (or s is nil).
func (s *taskSupply) take() *api.Task {
	if s == nil {
		return nil
	}
	if len(s.cur) == 0 {
		c, ok := <-s.ch
		if !ok {
			return nil
		}
		s.cur = c
	}
	t := &s.cur[0]
	s.cur = s.cur[1:]
	return t
}

// stop ends the supply's goroutine; the tasks not taken are dropped.
func (s *taskSupply) stop() {
	if s == nil {
		return
	}
	close(s.quit)
	<-s.done
}
