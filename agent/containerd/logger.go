package containerd

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
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
