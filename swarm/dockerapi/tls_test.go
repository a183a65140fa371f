package dockerapi_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/testca"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/ca"
	"github.com/shoalproject/shoal/swarm/dockerapi"
	"github.com/shoalproject/shoal/swarm/swarmtest"
)

// certDir writes a DOCKER_CERT_PATH: ca.pem (the cluster's root, or
// caPEM), and cert.pem and key.pem issued by issuer for id in role.
func certDir(t *testing.T, issuer *ca.Root, caPEM []byte, id string, role ca.Role) string {
	t.Helper()
	nc, err := testca.Issue(issuer, id, role, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, data := range map[string][]byte{"ca.pem": caPEM, "cert.pem": nc.CertPEM, "key.pem": nc.KeyPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// serveTLS serves a manager's Docker API on loopback TCP with mutual TLS;
// it returns the address.
func serveTLS(t *testing.T, c *swarmtest.TLSCluster, name string) string {
	t.Helper()
	n := c.Node(name)
	h, err := dockerapi.ForNode(n)
	if err != nil {
		t.Fatal(err)
	}
	hosts, err := dockerapi.Hosts("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := dockerapi.NodeTLSConfig(n, hosts...)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := dockerapi.ListenTLS(context.Background(), "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := dockerapi.NewServer(h)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// The docker CLIs over TCP with mutual TLS: the cluster's CA vouches for
// the server, and a manager certificate it issued for the client; other
// certificates are refused.
func TestDockerCLITLS(t *testing.T) {
	if testing.Short() {
		t.Skip("docker CLI sessions")
	}
	clis := map[string]string{}
	for name, path := range map[string]string{"docker-28.2.2-tls": dockerCLI28, "docker-20.10-tls": dockerCLI20} {
		if _, err := os.Stat(path); err == nil {
			clis[name] = path
		}
	}
	if len(clis) == 0 {
		t.Skip("no docker CLI installed")
	}
	c := swarmtest.NewTLS(t, swarmtest.TLSOptions{Managers: 1, Workers: 1})
	addr := serveTLS(t, c, "m0")
	_, port, _ := net.SplitHostPort(addr)
	root, err := c.Node("m0").Manager().Root()
	if err != nil {
		t.Fatal(err)
	}
	admin := certDir(t, root, root.CertPEM(), "admin", ca.RoleManager)
	worker := certDir(t, root, root.CertPEM(), "someworker", ca.RoleWorker)
	other, err := ca.NewRoot("othercluster")
	if err != nil {
		t.Fatal(err)
	}
	stranger := certDir(t, other, root.CertPEM(), "admin", ca.RoleManager)

	for name, bin := range clis {
		t.Run(name, func(t *testing.T) {
			var script strings.Builder
			saveTranscript(t, name, &script)
			tcp := "DOCKER_HOST=tcp://127.0.0.1:" + port
			d := newCLIEnv(t, bin, &script, tcp, "DOCKER_TLS_VERIFY=1", "DOCKER_CERT_PATH="+admin)
			mustContain(t, "docker version", d.ok("version"), "Server: Shoal")
			mustContain(t, "docker node ls", d.ok("node", "ls"), c.NodeID("m0")+" *", "Leader")
			svc := strings.ReplaceAll(name, ".", "-")
			mustContain(t, "service create", d.ok("service", "create", "--detach", "--name", svc, testImage), "")
			mustContain(t, "service ls", d.ok("service", "ls"), svc)
			d.ok("network", "create", "-d", "overlay", svc+"-net")
			mustContain(t, "network ls", d.ok("network", "ls"), svc+"-net")
			d.ok("network", "rm", svc+"-net")
			d.ok("service", "rm", svc)

			// A worker's certificate, one of another cluster, and a server
			// dialled by a name its certificate does not have.
			w := newCLIEnv(t, bin, &script, tcp, "DOCKER_TLS_VERIFY=1", "DOCKER_CERT_PATH="+worker)
			// TLS 1.3: the server judges the client's certificate after the
			// client's side of the handshake is done; a client that writes
			// its request first may see the reset before the alert.
			if out := w.fails("node", "ls"); !strings.Contains(out, "remote error: tls: bad certificate") && !strings.Contains(out, "connection reset by peer") {
				t.Fatalf("a worker's certificate: neither the server's alert nor a reset in:\n%s", out)
			}
			s := newCLIEnv(t, bin, &script, tcp, "DOCKER_TLS_VERIFY=1", "DOCKER_CERT_PATH="+stranger)
			// The CLI sends no certificate the server's CA did not issue.
			mustContain(t, "another cluster's certificate", s.fails("node", "ls"), "remote error: tls: certificate required")
			wrongName := newCLIEnv(t, bin, &script, "DOCKER_HOST=tcp://localhost:"+port, "DOCKER_TLS_VERIFY=1", "DOCKER_CERT_PATH="+admin)
			mustContain(t, "a name the server's certificate lacks", wrongName.fails("node", "ls"), "x509: certificate is not valid for any names, but wanted to match localhost")
		})
	}
}

// What the server refuses, seen from Go: no client certificate, a
// worker's, another cluster's; a manager's passes.
func TestTLSClientCertificates(t *testing.T) {
	c := swarmtest.NewTLS(t, swarmtest.TLSOptions{Managers: 1})
	addr := serveTLS(t, c, "m0")
	root, err := c.Node("m0").Manager().Root()
	if err != nil {
		t.Fatal(err)
	}
	other, err := ca.NewRoot("othercluster")
	if err != nil {
		t.Fatal(err)
	}
	get := func(dir string) (int, error) {
		var certs []tls.Certificate
		if dir != "" {
			cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
			if err != nil {
				t.Fatal(err)
			}
			certs = []tls.Certificate{cert}
		}
		return listNodesTLS(nil, addr, root, certs)
	}
	if code, err := get(certDir(t, root, root.CertPEM(), "admin", ca.RoleManager)); err != nil || code != http.StatusOK {
		t.Fatalf("a manager certificate: %d %v", code, err)
	}
	for what, dir := range map[string]string{
		"no certificate":              "",
		"a worker's certificate":      certDir(t, root, root.CertPEM(), "w1", ca.RoleWorker),
		"another cluster's (same CN)": certDir(t, other, root.CertPEM(), "admin", ca.RoleManager),
	} {
		if code, err := get(dir); err == nil {
			t.Errorf("%s: answered %d, want a refused handshake", what, code)
		}
	}

	// The server's certificate names 127.0.0.1 and is for servers only: it
	// cannot act as a node toward the managers.
	conn, err := tls.Dial("tcp", addr, &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: root.Pool(), ServerName: "127.0.0.1",
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &tls.Certificate{}, nil }})
	if err != nil {
		t.Fatalf("verifying the server's certificate for 127.0.0.1: %v", err)
	}
	leaf := conn.ConnectionState().PeerCertificates[0]
	conn.Close()
	if _, err := ca.IdentityOf(leaf); err == nil {
		t.Fatal("the API's server certificate passes as a node certificate")
	}
	if _, err := dockerapi.ListenTLS(context.Background(), "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{}}}); err == nil {
		t.Fatal("ListenTLS without client certificates required")
	}
	if _, err := dockerapi.NodeTLSConfig(c.Node("m0")); err == nil {
		t.Fatal("a server certificate without hosts")
	}
}

// A demoted manager's old certificate (valid until it expires) no longer
// opens the Docker API: the handshake checks the node's role now, not the
// one the certificate was issued for; so does each request on a
// connection made before the demotion, and a stream opened before it
// ends.
func TestTLSDemotedManagersCertificateRefused(t *testing.T) {
	ctx := context.Background()
	c := swarmtest.NewTLS(t, swarmtest.TLSOptions{Managers: 3})
	addr := serveTLS(t, c, "m0")
	old, root, err := (ca.Files{Dir: c.Node("m2").Dir}).Load()
	if err != nil {
		t.Fatal(err)
	}
	get := func() (int, error) { return listNodesTLS(nil, addr, root, []tls.Certificate{old}) }
	if code, err := get(); err != nil || code != http.StatusOK {
		t.Fatalf("m2's manager certificate before its demotion: %d %v", code, err)
	}
	// A connection made before the demotion, kept open: the handshake
	// is behind it, so each request is checked.
	kept := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: root.Pool(), Certificates: []tls.Certificate{old}}}, Timeout: 30 * time.Second}
	defer kept.CloseIdleConnections()
	if code, err := listNodesTLS(kept, addr, root, nil); err != nil || code != http.StatusOK {
		t.Fatalf("m2's manager certificate before its demotion, on a kept connection: %d %v", code, err)
	}
	// And a stream opened before the demotion (docker events).
	stream, err := (&http.Client{Transport: kept.Transport.(*http.Transport).Clone()}).Get("https://" + addr + "/v1.50/events")
	if err != nil || stream.StatusCode != http.StatusOK {
		t.Fatalf("docker events with m2's manager certificate before its demotion: %v %v", stream, err)
	}
	defer stream.Body.Close()
	streamEnded := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, stream.Body)
		streamEnded <- err
	}()
	cl, id := c.Client(), c.NodeID("m2")
	c.WaitFor("m2 demoted", func() bool {
		n, err := cl.Node(ctx, id)
		if err != nil {
			return false
		}
		spec := n.Spec
		spec.Role = api.RoleWorker
		_, err = cl.UpdateNode(ctx, id, n.Version, spec)
		return err == nil
	})
	c.WaitFor("m2 a worker", func() bool { return c.Node("m2").Role() == "worker" })
	if code, err := get(); err == nil {
		t.Fatalf("the demoted node's old manager certificate: answered %d, want a refused handshake", code)
	}
	reused := false
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
	if code, err := listNodesTLS(kept, addr, root, nil, trace); err != nil || code != http.StatusForbidden || !reused {
		t.Fatalf("the demoted node's old manager certificate on the connection kept from before: %d %v (connection reused: %v), want 403", code, err, reused)
	}
	select {
	case <-streamEnded:
	case <-time.After(10 * dockerapi.DefaultPeerRecheck):
		t.Fatalf("the events stream opened with the demoted node's old manager certificate still runs %v after its demotion", 10*dockerapi.DefaultPeerRecheck)
	}
}

// listNodesTLS asks the Docker API at addr for its nodes over TLS, trusting
// root and presenting certs, and returns the status (an error for a
// refused handshake). A non-nil hc is used as it is (its connections
// kept), and traced by trace if given.
func listNodesTLS(hc *http.Client, addr string, root *ca.Root, certs []tls.Certificate, trace ...*httptrace.ClientTrace) (int, error) {
	if hc == nil {
		cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: root.Pool(), Certificates: certs}
		hc = &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 30 * time.Second}
		defer hc.CloseIdleConnections()
	}
	ctx := context.Background()
	for _, tr := range trace {
		ctx = httptrace.WithClientTrace(ctx, tr)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/v1.50/nodes", nil)
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}
