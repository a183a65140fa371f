package containerd

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
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
			if _, err := readRecords(path, 0, func(r logRecord) { got = append(got, len(r.Line)) }); err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Errorf("%d bytes written %d at a time: lines of %v bytes, want %v", len(c.out), chunk, got, c.want)
			}
		}
	}
}
