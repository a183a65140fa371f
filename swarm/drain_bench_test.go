package swarm

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/shoalproject/shoal/swarm/api"
)

// The leader's cost of a drain at 100 networked nodes: the batch in which
// a task starts draining, then the 100 confirmations that end it (the
// book's part; the messages are one small line each way per node).
func BenchmarkDrainConfirmations(b *testing.B) {
	for _, nodes := range []int{100, 1000} {
		b.Run(fmt.Sprint(nodes, "nodes"), func(b *testing.B) {
			book := newNetBook(nil, slog.New(slog.DiscardHandler), 0, time.Minute)
			eps := map[string]*api.NodeEndpoint{}
			live := map[string]bool{}
			for i := range nodes {
				id := fmt.Sprint("node", i)
				eps[id] = &api.NodeEndpoint{ID: id, DataAddr: "10.0.0.1"}
				live[id] = true
			}
			book.nodes = eps
			book.mu.Lock()
			book.noteDrains(nil, nil, 1, eps, live, 1, time.Now())
			book.mu.Unlock()
			now := time.Now()
			b.ResetTimer()
			for i := range b.N {
				// A service of 10 tasks, one of them (a new one each
				// time) draining.
				te := &api.TaskEndpoint{ID: fmt.Sprint("t", i), NodeID: "node0"}
				svcs := map[string]*bookService{"web": {draining: []*api.TaskEndpoint{te}}}
				book.mu.Lock()
				book.noteDrains(svcs, map[string]bool{"web": true}, uint64(i+2), nil, nil, uint64(i+2), now)
				v := book.version
				book.mu.Unlock()
				for id := range eps {
					book.ack(id, v, now)
				}
				if d := book.tasks[te.ID]; d == nil || !d.done {
					b.Fatal("the drain did not end with every confirmation")
				}
			}
		})
	}
}
