package raftstore

import (
	"bytes"
	"context"
	"io"
	"log/slog"

	"github.com/hashicorp/go-hclog"
)

// newHCLogger bridges hashicorp/raft's hclog output into a slog.Logger; a
// nil logger discards.
func newHCLogger(logger *slog.Logger, name string) hclog.Logger {
	if logger == nil {
		return hclog.NewNullLogger()
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:            name,
		Level:           hclog.Info,
		Output:          slogWriter{logger},
		DisableTime:     true,
		IncludeLocation: false,
	})
}

type slogWriter struct{ l *slog.Logger }

var _ io.Writer = slogWriter{}

func (w slogWriter) Write(p []byte) (int, error) {
	line := bytes.TrimSpace(p)
	level := slog.LevelInfo
	switch {
	case bytes.HasPrefix(line, []byte("[ERROR]")):
		level = slog.LevelError
	case bytes.HasPrefix(line, []byte("[WARN]")):
		level = slog.LevelWarn
	case bytes.HasPrefix(line, []byte("[DEBUG]")), bytes.HasPrefix(line, []byte("[TRACE]")):
		level = slog.LevelDebug
	}
	if i := bytes.IndexByte(line, ']'); i >= 0 {
		line = bytes.TrimSpace(line[i+1:])
	}
	w.l.Log(context.Background(), level, string(line))
	return len(p), nil
}
