package scheduler

// minHeap is a binary heap of node indexes ordered by less; smaller, faster
// and allocation-free compared with container/heap's interface calls. With
// pos set (pos[x] is x's place, -1 when absent) it also holds each index at
// most once and can re-sort one whose key changed (set); placement leaves
// pos nil.
type minHeap struct {
	items []int32
	less  func(a, b int32) bool
	pos   []int32
}

// newIndexedHeap returns a heap of indexes 0..n-1 with position tracking.
func newIndexedHeap(n int, less func(a, b int32) bool) *minHeap {
	h := &minHeap{less: less, pos: make([]int32, n)}
	for i := range h.pos {
		h.pos[i] = -1
	}
	return h
}

func (h *minHeap) len() int   { return len(h.items) }
func (h *minHeap) top() int32 { return h.items[0] }

func (h *minHeap) push(x int32) {
	h.items = append(h.items, x)
	if h.pos != nil {
		h.pos[x] = int32(len(h.items) - 1)
	}
	h.up(len(h.items) - 1)
}

func (h *minHeap) pop() int32 {
	top := h.items[0]
	last := len(h.items) - 1
	h.swap(0, last)
	h.items = h.items[:last]
	if h.pos != nil {
		h.pos[top] = -1
	}
	if last > 0 {
		h.down(0)
	}
	return top
}

// set puts x in the heap, re-sorting it if it is there, or takes it out.
// It needs position tracking.
func (h *minHeap) set(x int32, in bool) {
	switch p := int(h.pos[x]); {
	case in && p < 0:
		h.push(x)
	case in:
		h.down(p)
		h.up(int(h.pos[x]))
	case p >= 0:
		last := len(h.items) - 1
		h.swap(p, last)
		h.items = h.items[:last]
		h.pos[x] = -1
		if p < last {
			h.down(p)
			h.up(p)
		}
	}
}

func (h *minHeap) init() {
	if h.pos != nil {
		for i, x := range h.items {
			h.pos[x] = int32(i)
		}
	}
	for i := len(h.items)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

func (h *minHeap) swap(a, b int) {
	h.items[a], h.items[b] = h.items[b], h.items[a]
	if h.pos != nil {
		h.pos[h.items[a]], h.pos[h.items[b]] = int32(a), int32(b)
	}
}

func (h *minHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !h.less(h.items[i], h.items[p]) {
			return
		}
		h.swap(i, p)
		i = p
	}
}

func (h *minHeap) down(i int) {
	n := len(h.items)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && h.less(h.items[r], h.items[l]) {
			m = r
		}
		if !h.less(h.items[m], h.items[i]) {
			return
		}
		h.swap(i, m)
		i = m
	}
}
