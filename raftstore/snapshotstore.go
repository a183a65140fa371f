package raftstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/hashicorp/raft"
)

// sealedSnapshotStore seals snapshot contents on their way to disk and opens
// them on the way out. What raft sends to a follower is the opened stream
// (inside the TLS connection), which the follower seals with its own keys.
//
// File layout: magic, then frames of at most frameSize plaintext bytes, each
// [flags 1][sealed frame], the sealed frame being Seal(plaintext, aad=frame
// number and flags). The last frame has flagLast (it may be empty), so a
// truncated file is detected. Frames before the last are full, which lets the
// plaintext size be computed from the file size alone.
type sealedSnapshotStore struct {
	inner  raft.SnapshotStore
	sealer Sealer
	dir    string
	// onClose runs after a snapshot is written (data keys may be prunable).
	onClose func()

	mu      sync.Mutex
	writing map[*sealedSink]uint32 // open sinks and the key current when they began
}

const (
	sealedSnapMagic = "SHOALES1"
	frameSize       = 64 << 10
	flagLast        = 1
)

var _ raft.SnapshotStore = (*sealedSnapshotStore)(nil)

func (s *sealedSnapshotStore) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration,
	configurationIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	sink, err := s.inner.Create(version, index, term, configuration, configurationIndex, trans)
	if err != nil {
		return nil, err
	}
	if _, err := sink.Write([]byte(sealedSnapMagic)); err != nil {
		sink.Cancel()
		return nil, err
	}
	ss := &sealedSink{SnapshotSink: sink, sealer: s.sealer, buf: make([]byte, 0, frameSize), store: s}
	if kr, ok := s.sealer.(interface{ CurrentKeyID() uint32 }); ok {
		s.mu.Lock()
		if s.writing == nil {
			s.writing = map[*sealedSink]uint32{}
		}
		s.writing[ss] = kr.CurrentKeyID()
		s.mu.Unlock()
	}
	return ss, nil
}

func (s *sealedSnapshotStore) done(ss *sealedSink, written bool) {
	s.mu.Lock()
	delete(s.writing, ss)
	s.mu.Unlock()
	if written && s.onClose != nil {
		s.onClose()
	}
}

// oldestKeyID is the oldest data key that sealed a kept snapshot or one
// being written; ok is false when there is none.
func (s *sealedSnapshotStore) oldestKeyID() (oldest uint32, ok bool, err error) {
	s.mu.Lock()
	for _, id := range s.writing {
		if !ok || id < oldest {
			oldest, ok = id, true
		}
	}
	s.mu.Unlock()
	metas, err := s.inner.List()
	if err != nil {
		return 0, false, err
	}
	for _, m := range metas {
		_, rc, err := s.inner.Open(m.ID)
		if err != nil {
			return 0, false, err
		}
		// Magic, the first frame's flags, then its key ID.
		head := make([]byte, len(sealedSnapMagic)+1+4)
		_, err = io.ReadFull(rc, head)
		rc.Close()
		if err != nil {
			return 0, false, &CorruptError{File: s.dir + "/" + m.ID, Err: err}
		}
		if id := binary.BigEndian.Uint32(head[len(sealedSnapMagic)+1:]); !ok || id < oldest {
			oldest, ok = id, true
		}
	}
	return oldest, ok, nil
}

func (s *sealedSnapshotStore) List() ([]*raft.SnapshotMeta, error) {
	metas, err := s.inner.List()
	for _, m := range metas {
		m.Size = plainSize(m.Size)
	}
	return metas, err
}

func (s *sealedSnapshotStore) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	meta, rc, err := s.inner.Open(id)
	if err != nil {
		return nil, nil, &CorruptError{File: s.dir + "/" + id, Err: err}
	}
	magic := make([]byte, len(sealedSnapMagic))
	if _, err := io.ReadFull(rc, magic); err != nil || string(magic) != sealedSnapMagic {
		rc.Close()
		return nil, nil, &CorruptError{File: s.dir + "/" + id, Err: errors.New("not a sealed snapshot")}
	}
	meta.Size = plainSize(meta.Size)
	return meta, &sealedReader{rc: rc, sealer: s.sealer, name: s.dir + "/" + id}, nil
}

func frameOverhead() int64 { return 1 + sealHeaderLen + 16 }

// plainSize computes the plaintext size from a sealed file's size.
func plainSize(sealed int64) int64 {
	body := sealed - int64(len(sealedSnapMagic))
	full := int64(frameSize) + frameOverhead()
	frames := (body + full - 1) / full
	if frames < 1 {
		return 0
	}
	return body - frames*frameOverhead()
}

type sealedSink struct {
	raft.SnapshotSink
	sealer Sealer
	store  *sealedSnapshotStore
	buf    []byte
	frame  uint64
	out    []byte
	err    error
}

func (s *sealedSink) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 && s.err == nil {
		c := min(len(p), frameSize-len(s.buf))
		s.buf = append(s.buf, p[:c]...)
		p = p[c:]
		if len(s.buf) == frameSize {
			s.err = s.flush(0)
		}
	}
	return n, s.err
}

func (s *sealedSink) flush(flags byte) error {
	s.out = append(s.out[:0], flags)
	var err error
	s.out, err = s.sealer.Seal(s.out, s.buf, frameAAD(s.frame, flags))
	if err != nil {
		return err
	}
	s.frame++
	s.buf = s.buf[:0]
	_, err = s.SnapshotSink.Write(s.out)
	return err
}

func (s *sealedSink) Close() error {
	if s.err == nil {
		s.err = s.flush(flagLast)
	}
	if s.err != nil {
		s.SnapshotSink.Cancel()
		s.store.done(s, false)
		return s.err
	}
	err := s.SnapshotSink.Close()
	s.store.done(s, err == nil)
	return err
}

func (s *sealedSink) Cancel() error {
	s.store.done(s, false)
	return s.SnapshotSink.Cancel()
}

func frameAAD(n uint64, flags byte) []byte {
	return append(binary.BigEndian.AppendUint64([]byte("snap"), n), flags)
}

type sealedReader struct {
	rc     io.ReadCloser
	sealer Sealer
	name   string
	frame  uint64
	plain  []byte
	raw    []byte
	done   bool
}

func (r *sealedReader) Read(p []byte) (int, error) {
	for len(r.plain) == 0 {
		if r.done {
			return 0, io.EOF
		}
		if err := r.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, r.plain)
	r.plain = r.plain[n:]
	return n, nil
}

func (r *sealedReader) next() error {
	// A full frame is frameSize+overhead bytes; only the last may be shorter.
	r.raw = r.raw[:cap(r.raw)]
	if len(r.raw) < frameSize+int(frameOverhead()) {
		r.raw = make([]byte, frameSize+int(frameOverhead()))
	}
	n, err := io.ReadFull(r.rc, r.raw)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !(errors.Is(err, io.EOF) && n > 0) {
		return &CorruptError{File: r.name, Err: fmt.Errorf("frame %d: missing (truncated): %v", r.frame, err)}
	}
	raw := r.raw[:n]
	if len(raw) < int(frameOverhead()) {
		return &CorruptError{File: r.name, Err: fmt.Errorf("frame %d truncated", r.frame)}
	}
	flags := raw[0]
	plain, err := r.sealer.Open(r.plain[:0], raw[1:], frameAAD(r.frame, flags))
	if err != nil {
		return &CorruptError{File: r.name, Err: fmt.Errorf("frame %d: %w", r.frame, err)}
	}
	if flags&flagLast == 0 && n < len(r.raw) {
		return &CorruptError{File: r.name, Err: fmt.Errorf("frame %d: file ends before its last frame (truncated)", r.frame)}
	}
	r.frame++
	r.plain = plain
	r.done = flags&flagLast != 0
	return nil
}

func (r *sealedReader) Close() error { return r.rc.Close() }
