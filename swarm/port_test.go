package swarm_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shoalproject/shoal/internal/testca"
	"github.com/shoalproject/shoal/swarm"
)

func servePort(t *testing.T, ca *testca.CA, authorize func(tls.ConnectionState) error) *swarm.Port {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server, err := ca.Config("manager")
	if err != nil {
		t.Fatal(err)
	}
	joinConf := server.Clone()
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Proto+" "+r.TLS.PeerCertificates[0].Subject.CommonName)
	})
	join := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "join "+r.Proto+" tls="+fmt.Sprint(r.TLS != nil))
	})
	p, err := swarm.ServePort(swarm.PortConfig{Listener: ln, TLS: func() *tls.Config { return server },
		JoinTLS: func() *tls.Config { return joinConf }, AuthorizeRaft: authorize, API: api, Join: join,
		HandshakeTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func get(t *testing.T, conf *tls.Config, h2 bool, url string) (string, error) {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: conf, ForceAttemptHTTP2: h2}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// One port: the API over HTTP/2 with mutual TLS, joining without a client
// certificate, Raft for authorized managers only; a client that connects
// and says nothing holds up nobody.
func TestManagementPortMultiplexes(t *testing.T) {
	ca, err := testca.New()
	if err != nil {
		t.Fatal(err)
	}
	var raftAsked atomic.Int32
	p := servePort(t, ca, func(st tls.ConnectionState) error {
		raftAsked.Add(1)
		if st.PeerCertificates[0].Subject.CommonName != "m2" {
			return errors.New("not a manager in the configuration")
		}
		return nil
	})
	url := "https://" + p.Addr().String() + "/"

	// A silent TCP client first: it must not block the others.
	silent, err := net.Dial("tcp", p.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	client, _ := ca.Config("node1")
	start := time.Now()
	body, err := get(t, client, true, url)
	if err != nil || body != "HTTP/2.0 node1" {
		t.Fatalf("API: %q %v", body, err)
	}
	if d := time.Since(start); d > 400*time.Millisecond {
		t.Logf("API answered in %v with a silent client connected", d)
	}
	// The silent client is dropped after the handshake timeout.
	silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); err == nil {
		t.Fatal("the silent client got data")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the silent client was not dropped")
	}

	// No client certificate: no API.
	anon := client.Clone()
	anon.Certificates = nil
	if _, err := get(t, anon, true, url); err == nil {
		t.Fatal("API without a client certificate")
	}
	// Another CA's certificate: no API.
	other, _ := testca.New()
	stranger, _ := other.Config("node1")
	stranger.RootCAs = client.RootCAs
	if _, err := get(t, stranger, true, url); err == nil {
		t.Fatal("API with another CA's certificate")
	}
	// Joining works without a certificate (HTTP/1.1 over the join protocol).
	jc := anon.Clone()
	jc.NextProtos = []string{swarm.ProtoJoin}
	if body, err := get(t, jc, false, url); err != nil || body != "join HTTP/1.1 tls=false" {
		t.Fatalf("join: %q %v", body, err)
	}

	// Raft: an authorized manager gets through; another is refused.
	dialRaft := func(name string) error {
		conf, _ := ca.Config(name)
		layer := p.RaftLayer("127.0.0.1:1", func() *tls.Config { return conf })
		c, err := layer.Dial(raft.ServerAddress(p.Addr().String()), 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err = c.Read(make([]byte, 1))
		return err // a refused connection is closed: EOF
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		layer := p.RaftLayer(p.Addr().String(), nil)
		c, err := layer.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	if err := dialRaft("m2"); err == nil || !isTimeout(err) {
		t.Fatalf("authorized Raft peer: %v (want an open connection that times out reading)", err)
	}
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("the authorized Raft connection never reached the Raft layer")
	}
	if err := dialRaft("intruder"); err == nil || isTimeout(err) {
		t.Fatalf("unauthorized Raft peer: %v (want the connection closed)", err)
	}
	if raftAsked.Load() != 2 {
		t.Fatalf("AuthorizeRaft asked %d times, want 2", raftAsked.Load())
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
