package dockerapi

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/ca"
)

// The Docker API over TCP with mutual TLS, as dockerd serves it with
// --tlsverify (DOCKER_HOST=tcp://HOST:2376, DOCKER_TLS_VERIFY=1,
// DOCKER_CERT_PATH holding ca.pem, cert.pem and key.pem). The CA is the
// cluster's root: the server presents a certificate it issued for the
// addresses clients dial, and a client must present a manager certificate
// of the cluster. The Docker API controls the whole cluster, as the
// control API does, which only managers may call: a worker's certificate
// (or anyone else's) is refused in the handshake.

// DefaultTLSPort is dockerd's port for the API over TLS.
const DefaultTLSPort = 2376

// DefaultServerCertValidity is how long a server certificate that
// IssueServerCertificate makes lasts when given no validity;
// NodeTLSConfig issues a new one before it runs out.
const DefaultServerCertValidity = 90 * 24 * time.Hour

// ErrNotManagerCert is wrapped by the refusal of a client certificate
// that is not a manager's.
var ErrNotManagerCert = errors.New("dockerapi: the Docker API takes a manager certificate of the cluster")

// ServerTLSConfig returns the server side of the Docker API over TCP:
// TLS 1.3, cert presented to clients (it must name the host or address
// they dial), and a client certificate required, issued by root, of
// root's cluster, for a manager (ca.Root.Verify's checks, then the role).
func ServerTLSConfig(cert tls.Certificate, root *ca.Root) *tls.Config {
	cfg := clientChecks(root)
	cfg.Certificates = []tls.Certificate{cert}
	return cfg
}

// clientChecks is a server config without its certificate: TLS 1.3 and
// the client's certificate required and checked.
func clientChecks(root *ca.Root) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs:  root.Pool(),
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := root.Verify(cs.PeerCertificates)
			if err != nil {
				return err
			}
			if id.Role != ca.RoleManager {
				return fmt.Errorf("%w: %s presented a %s certificate", ErrNotManagerCert, id.NodeID, id.Role)
			}
			return nil
		},
	}
}

// IssueServerCertificate issues a certificate for serving the Docker API
// at hosts (the IP addresses and DNS names clients put in DOCKER_HOST),
// signed by root, which must hold its key (a manager's: swarm.Manager.Root).
// The certificate is for TLS servers only, so it cannot act as a node
// toward the managers. validity 0 means DefaultServerCertValidity; it
// does not outlast the root.
func IssueServerCertificate(root *ca.Root, hosts []string, validity time.Duration) (tls.Certificate, error) {
	if len(hosts) == 0 {
		return tls.Certificate{}, errors.New("dockerapi: a server certificate needs the hosts clients dial (addresses or names)")
	}
	if !root.CanIssue() {
		return tls.Certificate{}, fmt.Errorf("dockerapi: issuing a server certificate: %w", ca.ErrNoKey)
	}
	keyPEM, err := root.KeyPEM()
	if err != nil {
		return tls.Certificate{}, err
	}
	rootCert := root.Certificate()
	rootKey, err := tls.X509KeyPair(root.CertPEM(), keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("dockerapi: the root's key: %w", err)
	}
	if validity <= 0 {
		validity = DefaultServerCertValidity
	}
	now := time.Now()
	notAfter := now.Add(validity)
	if notAfter.After(rootCert.NotAfter) {
		notAfter = rootCert.NotAfter
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial.Add(serial, big.NewInt(1)),
		Subject:               pkix.Name{CommonName: "shoal docker api", Organization: []string{root.ClusterID()}},
		NotBefore:             now.Add(-ca.ClockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, rootCert, &key.PublicKey, rootKey.PrivateKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("dockerapi: signing the server certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// NodeTLSConfig returns the server TLS config of a manager node's Docker
// API at hosts (see Hosts): a server certificate from the cluster's root,
// issued again before it runs out, and clients' manager certificates
// required.
func NodeTLSConfig(n *swarm.Node, hosts ...string) (*tls.Config, error) {
	m := n.Manager()
	if m == nil {
		return nil, errors.New("dockerapi: the Docker API over TLS is served by managers (this node is not one, or has not started)")
	}
	root, err := m.Root()
	if err != nil {
		return nil, err
	}
	src := &renewingCert{issue: func() (tls.Certificate, error) { return IssueServerCertificate(root, hosts, 0) }}
	if _, err := src.get(time.Now()); err != nil {
		return nil, err
	}
	cfg := clientChecks(root)
	cfg.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return src.get(time.Now()) }
	// A manager certificate whose node was demoted or removed since is
	// refused too (it stays valid until it expires).
	verify := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if err := verify(cs); err != nil {
			return err
		}
		m := n.Manager()
		if m == nil {
			return errors.New("dockerapi: this node is no longer a manager: it serves no Docker API")
		}
		if err := m.CheckManagerCert(cs.PeerCertificates[0].Subject.CommonName); errors.Is(err, swarm.ErrNotAManagerNow) {
			return fmt.Errorf("%w: %w", ErrNotManagerCert, err)
		}
		return nil
	}
	return cfg, nil
}

// renewingCert issues a certificate again once it needs renewal.
type renewingCert struct {
	issue func() (tls.Certificate, error)
	mu    sync.Mutex
	cur   *tls.Certificate
}

func (r *renewingCert) get(now time.Time) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cur == nil || ca.NeedsRenewal(r.cur.Leaf, now) {
		c, err := r.issue()
		if err != nil {
			if r.cur != nil && now.Before(r.cur.Leaf.NotAfter) {
				return r.cur, nil // still valid: try again on the next handshake
			}
			return nil, err
		}
		r.cur = &c
	}
	return r.cur, nil
}

// Hosts lists the hosts a server certificate for listen address addr
// (host:port) should name: its host, or for an unspecified one (":2376",
// "0.0.0.0:2376") every address of this machine's interfaces, its host
// name and localhost.
func Hosts(addr string) ([]string, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("dockerapi: listen address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return []string{host}, nil
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	out := []string{"localhost"}
	if name, err := os.Hostname(); err == nil && name != "" {
		out = append(out, name)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			out = append(out, ipn.IP.String())
		}
	}
	return out, nil
}

// ListenTLS listens on the TCP address addr; its connections are TLS with
// cfg. Handshakes happen on a connection's first read, in the goroutine
// that serves it (http.Server bounds them with ReadHeaderTimeout), never
// in Accept.
func ListenTLS(ctx context.Context, addr string, cfg *tls.Config) (net.Listener, error) {
	if cfg == nil || (len(cfg.Certificates) == 0 && cfg.GetCertificate == nil && cfg.GetConfigForClient == nil) {
		return nil, errors.New("dockerapi: ListenTLS needs a TLS config with a certificate (ServerTLSConfig, NodeTLSConfig)")
	}
	if cfg.ClientAuth != tls.RequireAndVerifyClientCert {
		return nil, errors.New("dockerapi: the Docker API over TCP needs client certificates (tls.RequireAndVerifyClientCert): it controls the cluster")
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return tls.NewListener(ln, cfg), nil
}

// DefaultReadHeaderTimeout bounds a TLS handshake and a request's headers
// on the server NewServer makes.
const DefaultReadHeaderTimeout = 10 * time.Second

// NewServer returns an http.Server for h on a network listener: a slow
// or silent client cannot hold a connection's handshake or headers for
// more than DefaultReadHeaderTimeout; answers are not cut short (docker
// events streams). Serve it on ListenTLS's listener:
//
//	cfg, err := dockerapi.NodeTLSConfig(node, hosts...)
//	ln, err := dockerapi.ListenTLS(ctx, ":2376", cfg)
//	srv := dockerapi.NewServer(h)
//	go srv.Serve(ln)
//	defer srv.Shutdown(ctx)
func NewServer(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: DefaultReadHeaderTimeout, IdleTimeout: 2 * time.Minute}
}
