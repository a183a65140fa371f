package swarm

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/shoalproject/shoal/raftstore"
)

// Read your own writes through a follower: a follower answers reads from
// its own state and forwards writes to the leader, so a client that
// writes and then reads on the same follower could miss its write (docker
// stack deploy creates a secret, then looks it up by name for the
// service: "secret not found"). The leader's answer to a write carries its
// applied index; the follower waits until it has applied that far before
// it passes the answer on.

// appliedIndexHeader carries the leader's applied index on the answer to
// a write.
const appliedIndexHeader = "Shoal-Applied-Index"

// ownWritesWait bounds how long a follower holds a write's answer while
// it catches up (it is behind by a round trip, unless cut off from the
// leader: then the client gets the answer, and stale reads, as before).
const ownWritesWait = 5 * time.Second

// indexWriter sets the applied index on a write's answer as its header
// is written (after the write is applied).
type indexWriter struct {
	http.ResponseWriter
	st    *raftstore.Store
	wrote bool
}

func (w *indexWriter) WriteHeader(code int) {
	if !w.wrote {
		w.wrote = true
		w.Header().Set(appliedIndexHeader, strconv.FormatUint(w.st.AppliedIndex(), 10))
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *indexWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *indexWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// catchUp waits (bounded) until st has applied the index a leader's
// answer to a forwarded write names.
func catchUp(ctx context.Context, st *raftstore.Store, resp *http.Response) error {
	index, err := strconv.ParseUint(resp.Header.Get(appliedIndexHeader), 10, 64)
	if err != nil {
		return nil // not a write's answer (or an older leader)
	}
	ctx, cancel := context.WithTimeout(ctx, ownWritesWait)
	defer cancel()
	return st.WaitIndex(ctx, index)
}
