package containerd

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/shoalproject/shoal/agent"
)

// Task output reaches the agent through the FIFOs containerd's shim keeps
// for each task; the agent writes it, a JSON record per line with its time
// and stream, into a size-capped rotating file. After an agent restart,
// Adopt re-attaches to the same FIFOs; what a task writes meanwhile waits in
// the pipe (a task that fills it blocks until the agent is back). A logger
// process per task (containerd's binary logging) would avoid that, but cost
// about 16 MB of memory per task here.

// logRecord is one line of a task log file (JSON lines).
type logRecord struct {
	Time   time.Time `json:"t"`
	Stream string    `json:"s"`
	Line   string    `json:"l"`
}

// maxLogLine splits longer lines, so one runaway line cannot eat memory.
const maxLogLine = 16 << 10

// taskLog writes a task's output lines to its rotating log file.
type taskLog struct {
	mu      sync.Mutex
	file    *rotatingFile
	writers []*lineWriter
}

func openTaskLog(path string, maxSize int64, maxFiles int) (*taskLog, error) {
	r := &rotatingFile{path: path, maxSize: maxSize, maxFiles: max(maxFiles, 1)}
	if err := r.open(); err != nil {
		return nil, err
	}
	return &taskLog{file: r}, nil
}

// stream returns the writer for one of the task's streams.
func (l *taskLog) stream(name string) io.Writer {
	w := &lineWriter{log: l, stream: name}
	l.mu.Lock()
	l.writers = append(l.writers, w)
	l.mu.Unlock()
	return w
}

// flush writes out partial last lines; call it once the output has ended.
func (l *taskLog) flush() {
	l.mu.Lock()
	ws := l.writers
	l.mu.Unlock()
	for _, w := range ws {
		if len(w.buf) > 0 {
			l.line(w.stream, w.buf)
			w.buf = nil
		}
	}
}

func (l *taskLog) line(stream string, b []byte) {
	rec, _ := json.Marshal(logRecord{Time: time.Now().UTC(), Stream: stream, Line: string(b)})
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.file != nil {
		l.file.write(append(rec, '\n'))
	}
}

func (l *taskLog) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.file != nil {
		l.file.close()
		l.file = nil
	}
}

// lineWriter cuts a stream into lines (at newlines, or every maxLogLine
// bytes); a partial last line waits for its end.
type lineWriter struct {
	log    *taskLog
	stream string
	buf    []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := indexByte(p, '\n')
		end := i
		if i < 0 {
			end = len(p)
		}
		w.buf = append(w.buf, p[:end]...)
		// Whole pieces of maxLogLine go out as they fill; one that is
		// exactly full waits, so that a line of maxLogLine bytes is one
		// line however its bytes arrive.
		for len(w.buf) > maxLogLine {
			w.log.line(w.stream, w.buf[:maxLogLine])
			w.buf = append(w.buf[:0], w.buf[maxLogLine:]...)
		}
		if i < 0 {
			break
		}
		w.log.line(w.stream, w.buf)
		w.buf = w.buf[:0]
		p = p[i+1:]
	}
	return n, nil
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// rotatingFile appends to path and, past maxSize bytes, shifts path to
// path.1 (path.1 to path.2, ...), keeping maxFiles files in all.
type rotatingFile struct {
	path     string
	maxSize  int64
	maxFiles int
	f        *os.File
	size     int64
}

func (r *rotatingFile) open() error {
	f, err := os.OpenFile(r.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	r.f, r.size = f, fi.Size()
	return nil
}

func (r *rotatingFile) write(b []byte) {
	if r.maxSize > 0 && r.size+int64(len(b)) > r.maxSize && r.size > 0 {
		r.rotate()
	}
	n, _ := r.f.Write(b)
	r.size += int64(n)
}

func (r *rotatingFile) rotate() {
	r.f.Close()
	for i := r.maxFiles - 1; i >= 1; i-- {
		from := r.path
		if i > 1 {
			from = r.path + "." + strconv.Itoa(i-1)
		}
		os.Rename(from, r.path+"."+strconv.Itoa(i))
	}
	if r.maxFiles == 1 {
		os.Remove(r.path)
	}
	if err := r.open(); err != nil {
		// Nowhere to write: drop output rather than block the task.
		r.f, _ = os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	}
}

func (r *rotatingFile) close() { r.f.Close() }

// logFiles lists a task's log files, oldest first.
func logFiles(path string) []string {
	var files []string
	for i := 1; ; i++ {
		p := path + "." + strconv.Itoa(i)
		if _, err := os.Stat(p); err != nil {
			break
		}
		files = append([]string{p}, files...)
	}
	return append(files, path)
}

// removeLogs deletes a task's log files.
func removeLogs(path string) {
	os.Remove(path)
	matches, _ := filepath.Glob(path + ".*")
	for _, m := range matches {
		os.Remove(m)
	}
}

// logFollowPoll is how often a follow looks for new lines.
const logFollowPoll = 50 * time.Millisecond

// readLogs reads a task's log files, oldest first, and calls fn for each
// record at or after opts.Since. Without a tail the records stream
// through; with Tail N only the last N wait in memory (a ring); a negative
// Tail skips what is written so far. With Follow it goes on with the
// records written later, across rotations, until done is closed and
// everything is read, or ctx ends.
func readLogs(ctx context.Context, path string, done <-chan struct{}, opts agent.LogOptions, fn func(logRecord) error) error {
	since := func(r logRecord) error {
		if r.Time.Before(opts.Since) {
			return nil
		}
		return fn(r)
	}
	var ring []logRecord
	next := 0
	past := func(r logRecord) error {
		switch {
		case r.Time.Before(opts.Since), opts.Tail < 0:
			return nil
		case opts.Tail == 0:
			return fn(r)
		case len(ring) < opts.Tail:
			ring = append(ring, r)
		default:
			ring[next] = r
			next = (next + 1) % opts.Tail
		}
		return nil
	}
	// The current file is opened first: what it holds, and what is written
	// to it later, is read through this descriptor even after a rotation
	// renames it (and a rotated file that is this one is not read twice).
	cur, err := os.Open(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	defer func() {
		if cur != nil {
			cur.Close()
		}
	}()
	var curInfo os.FileInfo
	if cur != nil {
		if curInfo, err = cur.Stat(); err != nil {
			return err
		}
	}
	files := logFiles(path)
	for _, p := range files[:len(files)-1] {
		f, err := os.Open(p)
		if err != nil {
			continue // rotated away meanwhile
		}
		fi, err := f.Stat()
		if err == nil && (curInfo == nil || !os.SameFile(fi, curInfo)) {
			_, err = readRecordsFrom(f, 0, past)
		}
		f.Close()
		if err != nil {
			return err
		}
	}
	var offset int64
	if cur != nil {
		if offset, err = readRecordsFrom(cur, 0, past); err != nil {
			return err
		}
	}
	for _, r := range append(ring[next:], ring[:next]...) {
		if err := fn(r); err != nil {
			return err
		}
	}
	if !opts.Follow {
		return nil
	}
	tick := time.NewTicker(logFollowPoll)
	defer tick.Stop()
	for {
		ended := false
		select {
		case <-ctx.Done():
			return nil
		case <-done:
			ended = true // and all output is in the files
		case <-tick.C:
		}
		for {
			if cur == nil {
				if cur, err = os.Open(path); err != nil {
					cur = nil
					break
				}
				if curInfo, err = cur.Stat(); err != nil {
					return err
				}
				offset = 0
			}
			if offset, err = readRecordsFrom(cur, offset, since); err != nil {
				return err
			}
			// Rotated: the rest of the old file was just read; the files
			// rotated after it come next, then the new current one.
			fi, err := os.Stat(path)
			if err == nil && os.SameFile(fi, curInfo) {
				break
			}
			cur.Close()
			cur = nil
			if err := readRotatedAfter(path, curInfo, since); err != nil {
				return err
			}
			if err != nil {
				break
			}
		}
		if ended {
			return nil
		}
	}
}

// readRotatedAfter reads the rotated files written after the file prev
// (all of them when prev has rotated out too: they are all newer).
func readRotatedAfter(path string, prev os.FileInfo, fn func(logRecord) error) error {
	files := logFiles(path)
	files = files[:len(files)-1]
	for i, p := range files {
		if fi, err := os.Stat(p); err == nil && os.SameFile(fi, prev) {
			files = files[i+1:]
			break
		}
	}
	for _, p := range files {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		_, err = readRecordsFrom(f, 0, fn)
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// readRecordsFrom reads JSON-line records of f from offset to the last
// complete line and returns the offset after it; a partial last line is
// read next time.
func readRecordsFrom(f *os.File, offset int64, fn func(logRecord) error) (int64, error) {
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return offset, err
	}
	br := bufio.NewReaderSize(f, 64<<10)
	for {
		line, err := br.ReadBytes('\n')
		if err != nil {
			return offset, nil
		}
		offset += int64(len(line))
		var r logRecord
		if json.Unmarshal(line, &r) == nil {
			if err := fn(r); err != nil {
				return offset, err
			}
		}
	}
}
