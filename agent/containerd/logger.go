package containerd

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// LoggerKey marks a task-logger invocation. containerd's shim starts the
// logger (the host program itself, see RunLoggerIfRequested) with the
// container's stdout and stderr as file descriptors 3 and 4; the logger is a
// child of the shim, so logging goes on while the agent restarts.
const LoggerKey = "shoal-task-logger"

// RunLoggerIfRequested turns this process into a task logger when the shim
// started it as one, and exits; otherwise it returns at once. A program that
// uses the containerd executor calls it first thing in main (the reference
// daemon and the tests do). Set Executor.LoggerBinary to use another binary.
func RunLoggerIfRequested() {
	kv := map[string]string{}
	args := os.Args[1:]
	for i := 0; i+1 < len(args); i += 2 {
		kv[args[i]] = args[i+1]
	}
	if _, ok := kv[LoggerKey]; !ok {
		return
	}
	if err := runLogger(kv); err != nil {
		fmt.Fprintln(os.Stderr, "shoal task logger:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// logRecord is one line of a task log file (JSON lines).
type logRecord struct {
	Time   time.Time `json:"t"`
	Stream string    `json:"s"`
	Line   string    `json:"l"`
}

// maxLogLine splits longer lines, so one runaway line cannot eat memory.
const maxLogLine = 16 << 10

func runLogger(kv map[string]string) error {
	stdout, stderr, ready := os.NewFile(3, "stdout"), os.NewFile(4, "stderr"), os.NewFile(5, "ready")
	if stdout == nil || stderr == nil || ready == nil {
		return fmt.Errorf("expected stdout, stderr and ready on fds 3, 4 and 5")
	}
	maxSize, _ := strconv.ParseInt(kv["max-size"], 10, 64)
	maxFiles, _ := strconv.Atoi(kv["max-files"])
	w := &rotatingFile{path: kv["path"], maxSize: maxSize, maxFiles: max(maxFiles, 1)}
	if w.path == "" {
		return fmt.Errorf("no path argument")
	}
	if err := w.open(); err != nil {
		return err
	}
	defer w.close()
	ready.Close()
	var mu sync.Mutex
	var wg sync.WaitGroup
	copyStream := func(r io.Reader, name string) {
		defer wg.Done()
		br := bufio.NewReaderSize(r, maxLogLine)
		for {
			line, err := br.ReadSlice('\n')
			if len(line) > 0 {
				if line[len(line)-1] == '\n' {
					line = line[:len(line)-1]
				}
				b, _ := json.Marshal(logRecord{Time: time.Now().UTC(), Stream: name, Line: string(line)})
				mu.Lock()
				w.write(append(b, '\n'))
				mu.Unlock()
			}
			if err != nil && err != bufio.ErrBufferFull {
				return
			}
		}
	}
	wg.Add(2)
	go copyStream(stdout, "stdout")
	go copyStream(stderr, "stderr")
	wg.Wait()
	return nil
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
		// Nowhere to write: keep the process alive so the container does
		// not block on a full pipe; drop output.
		r.f, _ = os.Open(os.DevNull)
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
	for _, p := range logFiles(path) {
		os.Remove(p)
	}
	matches, _ := filepath.Glob(path + ".*")
	for _, m := range matches {
		os.Remove(m)
	}
}
