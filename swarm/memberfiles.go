package swarm

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/shoalproject/shoal/internal/atomicfile"
	"github.com/shoalproject/shoal/swarm/ca"
)

// A cluster member that is not only a client (a Node, an Arbiter) keeps
// its identity in a state file and its certificate in its data dir, and
// renews the certificate through the managers. Both kinds share this.

// readStateFile reads a member's state file. ok is false when there is
// none; a file that does not parse or that valid refuses is an error that
// says how to recover.
func readStateFile(path string, valid func(nodeState) bool) (st nodeState, ok bool, err error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nodeState{}, false, nil
	}
	if err != nil {
		return nodeState{}, false, err
	}
	if err := json.Unmarshal(raw, &st); err != nil || st.ID == "" || !valid(st) {
		return nodeState{}, false, fmt.Errorf("swarm: %s is corrupt (%v): restore it, or remove the data dir and join again", path, err)
	}
	return st, true, nil
}

// writeStateFile replaces a member's state file atomically.
func writeStateFile(path string, st nodeState) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, b, 0o600)
}

// beginMember checks that a member of this kind ("node", "arbiter") may
// start in dir: it is neither closed nor started, and dir holds its state
// (a restart) or, when fresh, holds none. absent is the error for a
// restart in a dir that holds no state. The caller holds its lock.
func beginMember(kind, dir string, closed, started, fresh bool, read func() (nodeState, bool, error), absent error) error {
	switch {
	case closed:
		return fmt.Errorf("swarm: %s: %w", kind, net.ErrClosed)
	case started:
		return fmt.Errorf("swarm: %s already started", kind)
	case dir == "":
		return fmt.Errorf("swarm: %s needs Dir", kind)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	_, ok, err := read()
	switch {
	case err != nil:
		return err
	case fresh && ok:
		return fmt.Errorf("swarm: %s holds %s %s already: Start it, or use an empty dir", dir, article(kind), kind)
	case !fresh && !ok:
		return absent
	}
	return nil
}

func article(word string) string {
	if strings.ContainsRune("aeiou", rune(word[0])) {
		return "an"
	}
	return "a"
}

// renewLoop renews a member's certificate at a random point between 50%
// and 80% of its validity, until ctx ends.
func renewLoop(ctx context.Context, certs *certHolder, renew func(context.Context) error, log *slog.Logger) {
	var b backoff
	for {
		changed := certs.watch()
		cert := certs.leaf()
		// Certificates are backdated by the allowed clock skew: count the
		// validity from the issuance, or a short one would be renewed over
		// and over.
		start := cert.NotBefore.Add(ca.ClockSkew)
		if !start.Before(cert.NotAfter) {
			start = cert.NotBefore
		}
		t := time.NewTimer(max(time.Until(ca.RenewAt(start, cert.NotAfter, nil)), time.Second))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-changed:
			t.Stop()
			continue // renewed meanwhile (Renew, a new role): plan from the new one
		case <-t.C:
		}
		if err := renew(ctx); err != nil {
			log.Warn("swarm: certificate renewal", "err", err)
			b.wait(ctx)
			continue
		}
		b.reset()
	}
}

// renewCertificate asks a manager for a certificate for a new key, keeps
// both in dir and puts them in certs. A non-empty role is the role the
// new certificate must carry (an arbiter stays an arbiter); it is checked
// before the certificate is saved or used.
func renewCertificate(ctx context.Context, mgrs *managers, dir string, certs *certHolder, role ca.Role, log *slog.Logger) error {
	key, err := ca.NewNodeKey()
	if err != nil {
		return err
	}
	csr, err := ca.NewCSR(key)
	if err != nil {
		return err
	}
	var ans renewAnswer
	if err := mgrs.call(ctx, http.MethodPost, controlPrefix+"ca/renew", renewRequest{CSR: csr}, &ans); err != nil {
		return err
	}
	keyPEM, err := ca.MarshalKey(key)
	if err != nil {
		return err
	}
	if role != "" {
		// Checked before it is saved: a wrong certificate must not be
		// what the next start loads.
		pair, err := tls.X509KeyPair(ans.Cert, keyPEM)
		if err != nil {
			return fmt.Errorf("swarm: the renewed certificate: %w", err)
		}
		if id, err := ca.IdentityOf(pair.Leaf); err != nil || id.Role != role {
			return fmt.Errorf("swarm: the renewed certificate is not an %s's (%v, %v)", role, id.Role, err)
		}
	}
	files := ca.Files{Dir: dir}
	if err := files.Save(ans.Cert, keyPEM, certs.rootCA().CertPEM()); err != nil {
		return err
	}
	cert, root, err := files.Load()
	if err != nil {
		return err
	}
	certs.set(cert, root)
	log.Info("swarm: certificate renewed", "until", certs.leaf().NotAfter)
	return nil
}
