package swarm

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// managers calls the managers' API over HTTP/2 with mutual TLS. A call
// goes to the manager that took the last one; when it fails in a way
// another manager may not (see Retryable), it goes to the leader a refusal
// names, then to the others, those that gave no answer at their last try
// last. Errors about the call itself come back at once.
type managers struct {
	mu    sync.Mutex
	addrs []string
	tls   *tls.Config
	cur   string
	// silent are the managers that gave no answer at their last try (a
	// dial, a handshake or a connection that failed or timed out), and
	// since when: until one answers again it is tried after every other
	// manager, so that a call does not wait on a manager cut off by a
	// partition (a dial there hangs until its timeout) before going to
	// one that answers, nor follows another manager's stale word that it
	// leads first.
	silent map[string]time.Time
	client *http.Client
	// retryFor is how long a call goes on trying when every manager
	// refused it for a reason that passes (an election): a Client rides
	// out a leader change instead of failing the user's call.
	retryFor time.Duration
	// dial, when set, makes the connections.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// period, for a worker's session, has its connections checked with
	// pings timed by this heartbeat period (below); 0 for none.
	period time.Duration
}

// setPeriod times the pings by the heartbeat period the managers asked
// for. The transport is made again (new connections, a TLS handshake
// each) only when the pings it times no longer fit: at the new period a
// silent manager would be left later than the grace of three periods
// (the period fell below about 5/6 of the one the transport was made
// for), or the period at least doubled (pings needlessly often). The
// period follows the node count (1 s to 4 s as 2,000 nodes join; a little
// less each time one leaves): making transports again at every change
// cost 2,000 workers' handshakes at once.
func (m *managers) setPeriod(d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if d <= 0 || (d < 2*m.period && leaveSilentAfter(m.period) <= 3*d) {
		return
	}
	m.period = d
	if m.client != nil {
		m.client.CloseIdleConnections()
		m.client = nil
	}
}

func (m *managers) httpClient() *http.Client {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.client == nil {
		conf := m.tls.Clone()
		conf.NextProtos = []string{ProtoAPI}
		dial := m.dial
		if dial == nil {
			dial = (&net.Dialer{Timeout: dialTimeout(m.period)}).DialContext
		}
		// A manager cut off by a partition sends no RST: without the
		// ping, calls on its connection (a worker's heartbeats, its
		// assignment stream) would wait until their deadline, each, and
		// never move to a manager that answers; the node would be
		// declared down on the majority's side. Only a worker's session
		// is pinged, timed by its heartbeat period: a ping every 500 ms
		// on each of 2,000 workers' connections to a leader starved of
		// CPU timed out and cut them (clusterbench figure 6 failed); a
		// control API client's long calls are not pinged.
		tr := &http.Transport{TLSClientConfig: conf, ForceAttemptHTTP2: true, DialContext: dial,
			TLSHandshakeTimeout: 5 * time.Second, ResponseHeaderTimeout: 30 * time.Second, IdleConnTimeout: time.Minute}
		if m.period > 0 {
			tr.HTTP2 = &http.HTTP2Config{SendPingTimeout: m.period * 3 / 2, PingTimeout: pingTimeout(m.period)}
		}
		m.client = &http.Client{Transport: tr}
	}
	return m.client
}

// A worker's connection to a manager is pinged after 1.5 heartbeat
// periods without a frame (its heartbeats keep it busier than that while
// the manager answers), and closed when the ping is not answered in time
// (pingTimeout): a silent manager is left within 2.9 periods at most,
// inside the grace a new leader gives every node (three). A false alarm (a
// manager stalled that long) costs a reconnection. A dial to an address
// that drops packets gives up after dialTimeout, and the call goes to the
// next manager.
const (
	managerPingTimeout = time.Second
	managerDialTimeout = 2 * time.Second
)

// pingTimeout is how long a worker waits for a ping's answer at heartbeat
// period p: a period, and managerPingTimeout at least (a leader starved of
// CPU answers late, and 2,000 workers cut at once all connect again), but
// never past 1.4 periods, so that 1.5 periods idle and the ping end within
// the grace of three (below 714 ms the 1.4 periods bind: the floor alone
// would be 10 periods at 100 ms).
func pingTimeout(p time.Duration) time.Duration {
	return min(max(p, managerPingTimeout), p*7/5)
}

// leaveSilentAfter is how long a connection timed by heartbeat period p
// takes at most to be closed once its manager falls silent.
func leaveSilentAfter(p time.Duration) time.Duration { return p*3/2 + pingTimeout(p) }

// dialTimeout bounds a TCP connect to a manager: for a worker's session,
// 1.5 heartbeat periods, at least 1.2 s (Linux sends a lost SYN again
// after 1 s) and at most managerDialTimeout; a Client's is
// managerDialTimeout. At periods of 1 s and more, one try of a manager
// cut off by a partition leaves room in a node's grace of three periods
// for the next manager (at 1 s it takes half of it); at short periods
// (under 0.8 s, as in tests) the floor takes most or all of the grace,
// and a node may be declared down while it moves on. (A manager that
// accepts connections but does not finish the TLS handshake is given
// 5 s: under a join wave of 2,000 workers a leader starved of CPU takes
// seconds to.)
func dialTimeout(p time.Duration) time.Duration {
	if p <= 0 {
		return managerDialTimeout
	}
	return min(max(p*3/2, 1200*time.Millisecond), managerDialTimeout)
}

// order is the addresses to try: the last that answered, then the rest,
// then the silent ones, the latest to fall silent first (one that missed
// a single answer, a connection cut by a ping under load, before one cut
// off long ago). A silent manager is tried last, not left out: it may be
// the leader.
func (m *managers) order() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.addrs)+1)
	if m.cur != "" {
		out = append(out, m.cur)
	}
	var silent []string
	for _, a := range m.addrs {
		switch {
		case a == m.cur:
		case m.silentLocked(a):
			silent = append(silent, a)
		default:
			out = append(out, a)
		}
	}
	slices.SortStableFunc(silent, func(a, b string) int { return m.silent[b].Compare(m.silent[a]) })
	return append(out, silent...)
}

// isSilent tells whether the manager at addr gave no answer at its last
// try.
func (m *managers) isSilent(addr string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.silentLocked(addr)
}

func (m *managers) silentLocked(addr string) bool {
	_, ok := m.silent[addr]
	return ok
}

// answered records whether the manager at addr answered a try (with
// anything, a refusal too). A manager stays silent, from the first try it
// did not answer, until it answers one.
func (m *managers) answered(addr string, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ok {
		delete(m.silent, addr)
		return
	}
	if m.silent == nil {
		m.silent = map[string]time.Time{}
	}
	if _, ok := m.silent[addr]; !ok {
		m.silent[addr] = time.Now()
	}
	if m.cur == addr {
		m.cur = ""
	}
}

// learn adds managers' addresses.
func (m *managers) learn(addrs []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, a := range addrs {
		if a != "" && !slices.Contains(m.addrs, a) {
			m.addrs = append(m.addrs, a)
		}
	}
}

// learnFrom learns the managers an answer names.
func (m *managers) learnFrom(resp *http.Response) {
	if h := resp.Header.Get(managersHeader); h != "" {
		m.learn(strings.Split(h, ","))
	}
}

// known returns the managers' addresses known now.
func (m *managers) known() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.addrs)
}

// electionRetry is the longest wait between two rounds of a call that
// every manager refused for a reason that passes.
const electionRetry = 200 * time.Millisecond

// each runs fn on the managers in turn until one succeeds, for retryFor
// at most when they all refuse for a reason that passes.
func (m *managers) each(ctx context.Context, fn func(addr string) error) error {
	deadline := time.Now().Add(m.retryFor)
	// An election takes about a second: retrying at most every
	// electionRetry lands a call soon after the new leader, where a
	// doubling backoff would sleep past it (and past the caller's
	// deadline).
	b := backoff{max: electionRetry}
	for {
		err := m.eachOnce(ctx, fn)
		if err == nil || !Retryable(err) || ctx.Err() != nil || time.Now().After(deadline) {
			return err
		}
		if !b.wait(ctx) {
			return err
		}
	}
}

func (m *managers) eachOnce(ctx context.Context, fn func(addr string) error) error {
	addrs := m.order()
	if len(addrs) == 0 {
		return errors.New("swarm: no manager addresses to call")
	}
	var errs []error
	tried := map[string]bool{}
	for len(addrs) > 0 {
		addr := addrs[0]
		addrs = addrs[1:]
		if tried[addr] {
			continue
		}
		tried[addr] = true
		err := fn(addr)
		if ctx.Err() == nil {
			// (The caller's deadline passing says nothing of the manager.)
			var noAnswer *url.Error
			m.answered(addr, !errors.As(err, &noAnswer))
		}
		if err == nil {
			m.mu.Lock()
			m.cur = addr
			m.mu.Unlock()
			return nil
		}
		if !Retryable(err) || ctx.Err() != nil {
			return err
		}
		errs = append(errs, err)
		var nl *NotLeaderError
		if errors.As(err, &nl) && nl.Leader != "" && !tried[nl.Leader] {
			m.learn([]string{nl.Leader})
			if m.isSilent(nl.Leader) {
				// Named, but silent at its last try: the refusal may be
				// stale (a leader cut off by a partition, named until
				// the others' election), so the managers that answered
				// lately go first; it goes before the other silent ones,
				// since it may be the leader that missed one answer.
				addrs = slices.DeleteFunc(addrs, func(a string) bool { return a == nl.Leader })
				at := slices.IndexFunc(addrs, m.isSilent)
				if at < 0 {
					at = len(addrs)
				}
				addrs = slices.Insert(addrs, at, nl.Leader)
			} else {
				addrs = append([]string{nl.Leader}, addrs...)
			}
		}
	}
	return errors.Join(errs...)
}

// call sends a JSON body (nil: none) and decodes the answer into out (nil:
// ignore it).
func (m *managers) call(ctx context.Context, method, path string, body, out any) error {
	var b []byte
	if body != nil {
		var err error
		if b, err = json.Marshal(body); err != nil {
			return err
		}
	}
	return m.each(ctx, func(addr string) error {
		req, err := http.NewRequestWithContext(ctx, method, "https://"+addr+path, bytes.NewReader(b))
		if err != nil {
			return err
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := m.httpClient().Do(req)
		if err != nil {
			return fmt.Errorf("swarm: manager %s: %w", addr, err)
		}
		defer resp.Body.Close()
		m.learnFrom(resp)
		if err := answerError(addr, resp); err != nil {
			return err
		}
		if out != nil && resp.StatusCode != http.StatusNoContent {
			if err := json.NewDecoder(io.LimitReader(resp.Body, maxAnswer)).Decode(out); err != nil {
				return fmt.Errorf("swarm: manager %s: bad answer: %v", addr, err)
			}
		}
		return nil
	})
}

// stream opens a GET whose answer is NDJSON, on the first manager that
// takes it; the caller reads and closes the body.
func (m *managers) stream(ctx context.Context, path string) (*http.Response, error) {
	var resp *http.Response
	err := m.each(ctx, func(addr string) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+path, nil)
		if err != nil {
			return err
		}
		r, err := m.httpClient().Do(req)
		if err != nil {
			return fmt.Errorf("swarm: manager %s: %w", addr, err)
		}
		m.learnFrom(r)
		if err := answerError(addr, r); err != nil {
			r.Body.Close()
			return err
		}
		if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-ndjson") {
			r.Body.Close()
			return fmt.Errorf("swarm: manager %s: a stream answered as %q", addr, ct)
		}
		resp = r
		return nil
	})
	return resp, err
}
