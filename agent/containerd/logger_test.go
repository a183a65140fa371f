package containerd

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoalproject/shoal/agent"
)

// A line is cut every maxLogLine bytes, and at newlines, whatever the sizes
// of the writes its bytes come in.
func TestLineWriterCutsLongLines(t *testing.T) {
	cases := []struct {
		out  string
		want []int
	}{
		{strings.Repeat("x", 40000) + "\n", []int{maxLogLine, maxLogLine, 40000 - 2*maxLogLine}},
		{strings.Repeat("x", maxLogLine) + "\n", []int{maxLogLine}},
		{strings.Repeat("x", 2*maxLogLine) + "\nshort\n\n", []int{maxLogLine, maxLogLine, 5, 0}},
		{strings.Repeat("x", maxLogLine+1), []int{maxLogLine, 1}}, // the rest at flush
	}
	for _, c := range cases {
		for _, chunk := range []int{1, 100, 4096, maxLogLine, 20000, 32 << 10, len(c.out)} {
			path := filepath.Join(t.TempDir(), "log")
			tl, err := openTaskLog(path, 0, 1)
			if err != nil {
				t.Fatal(err)
			}
			w := tl.stream("stdout")
			for b := []byte(c.out); len(b) > 0; {
				n := min(chunk, len(b))
				w.Write(b[:n])
				b = b[n:]
			}
			tl.flush()
			tl.close()
			var got []int
			if err := readLogs(context.Background(), path, nil, agent.LogOptions{}, func(r logRecord) error { got = append(got, len(r.Line)); return nil }); err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Errorf("%d bytes written %d at a time: lines of %v bytes, want %v", len(c.out), chunk, got, c.want)
			}
		}
	}
}

// readLogs keeps only the tail in memory, skips the past with a negative
// tail, and a follow reads across rotations without losing or repeating
// lines, until the task ends.
func TestReadLogsTailAndFollowAcrossRotations(t *testing.T) {
	path := filepath.Join(t.TempDir(), "task.log")
	tl, err := openTaskLog(path, 2<<10, 3) // ~30 lines a file
	if err != nil {
		t.Fatal(err)
	}
	out := tl.stream("stdout")
	for i := 1; i <= 100; i++ {
		fmt.Fprintf(out, "line %d\n", i)
	}
	read := func(opts agent.LogOptions, done <-chan struct{}) []string {
		var got []string
		err := readLogs(context.Background(), path, done, opts, func(r logRecord) error { got = append(got, r.Line); return nil })
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := read(agent.LogOptions{Tail: 3}, nil); fmt.Sprint(got) != "[line 98 line 99 line 100]" {
		t.Fatalf("tail 3: %v", got)
	}
	if got := read(agent.LogOptions{Tail: -1}, nil); len(got) != 0 {
		t.Fatalf("tail -1: %v", got)
	}
	all := read(agent.LogOptions{}, nil)
	if len(all) < 40 || all[len(all)-1] != "line 100" {
		t.Fatalf("all: %d lines, last %q", len(all), all[len(all)-1])
	}
	// Follow from now on while the writer rotates many times.
	done := make(chan struct{})
	got := make(chan []string)
	go func() { got <- read(agent.LogOptions{Tail: -1, Follow: true}, done) }()
	time.Sleep(2 * logFollowPoll)
	for i := 101; i <= 400; i++ {
		fmt.Fprintf(out, "line %d\n", i)
		if i%25 == 0 {
			time.Sleep(logFollowPoll / 2)
		}
	}
	time.Sleep(2 * logFollowPoll)
	close(done)
	followed := <-got
	if len(followed) != 300 || followed[0] != "line 101" || followed[299] != "line 400" {
		t.Fatalf("followed %d lines across rotations (want 300, line 101 to line 400): first %v", len(followed), followed[:min(3, len(followed))])
	}
	for i, l := range followed {
		if l != fmt.Sprintf("line %d", 101+i) {
			t.Fatalf("followed line %d is %q", i, l)
		}
	}
	tl.close()
}
