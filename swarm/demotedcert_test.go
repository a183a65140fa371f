package swarm_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/waitfor"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/ca"
	"github.com/shoalproject/shoal/swarm/swarmtest"
)

// A demoted manager is given a worker certificate, but the manager one it
// had stays valid until it expires: a copy of it kept must not keep the
// control API (it could create services, or rotate the manager token and
// come back as a manager). Before the demotion the same certificate works,
// so the refusal is the demotion's.
func TestDemotedManagersOldCertificateRefused(t *testing.T) {
	ctx := context.Background()
	c := swarmtest.NewTLS(t, swarmtest.TLSOptions{Managers: 3})
	old, root, err := (ca.Files{Dir: c.Node("m2").Dir}).Load()
	if err != nil {
		t.Fatal(err)
	}
	cl := &swarm.Client{Addrs: []string{c.Node("m0").Addr()}, TLS: ca.ClientConfig(old, root, ca.RoleManager)}
	if _, err := cl.CreateService(ctx, service("before", api.Replicated(1))); err != nil {
		t.Fatalf("m2's manager certificate before its demotion: %v", err)
	}
	// A stream opened before the demotion (cluster events) ends with it.
	sctx, stopStream := context.WithCancel(ctx)
	defer stopStream()
	events, err := cl.Events(sctx, 0)
	if err != nil {
		t.Fatalf("m2's manager certificate before its demotion, events: %v", err)
	}
	streamEnded := make(chan struct{})
	go func() {
		defer close(streamEnded)
		for range events {
		}
	}()
	// So do logs follow streams, which go to the leader like writes:
	// one asked of m0, one of m1 (one of them a follower passing it on).
	logsEnded := map[string]chan struct{}{}
	for _, via := range []string{"m0", "m1"} {
		lc := &swarm.Client{Addrs: []string{c.Node(via).Addr()}, TLS: ca.ClientConfig(old, root, ca.RoleManager)}
		logs, err := lc.ServiceLogs(sctx, "before", swarm.LogOptions{Follow: true, Tail: swarm.TailNone})
		if err != nil {
			t.Fatalf("m2's manager certificate before its demotion, logs via %s: %v", via, err)
		}
		ended := make(chan struct{})
		logsEnded[via] = ended
		go func() {
			defer close(ended)
			for {
				if _, err := logs.Recv(); err != nil {
					return
				}
			}
		}()
	}
	// And one the leader gets from a follower (m1) on m2's behalf, as a
	// follower that has not applied the demotion yet would pass it on:
	// the leader re-checks the caller vouched for.
	m1c, _, err := (ca.Files{Dir: c.Node("m1").Dir}).Load()
	if err != nil {
		t.Fatal(err)
	}
	hc := apiHTTPClient(m1c, root)
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(sctx, http.MethodGet, "https://"+c.Node("m0").Addr()+"/v1/services/before/logs?follow=1&tail=-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Shoal-Forwarded-By", c.NodeID("m1"))
	req.Header.Set("Shoal-Forwarded-For", c.NodeID("m2"))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		answer, _ := io.ReadAll(resp.Body)
		t.Fatalf("a logs follow m1 passes on for m2 before its demotion: %d %s", resp.StatusCode, answer)
	}
	vouchedEnded := make(chan struct{})
	logsEnded["m1 on m2's behalf, to the leader"] = vouchedEnded
	go func() {
		defer close(vouchedEnded)
		_, _ = io.Copy(io.Discard, resp.Body)
	}()
	for via, ended := range logsEnded {
		select {
		case <-ended:
			t.Fatalf("the logs follow stream via %s ended before the demotion", via)
		default:
		}
	}
	if err := setNodeRole(ctx, c.Node("m0").Client(), c.NodeID("m2"), api.RoleWorker); err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, "m2 demoted", func() bool { return c.Node("m2").Role() == "worker" })
	for what, call := range map[string]func() error{
		"a service created": func() error {
			_, err := cl.CreateService(ctx, service("by-demoted", api.Replicated(1)))
			return err
		},
		"the manager token rotated": func() error {
			_, err := cl.RotateJoinToken(ctx, api.RoleManager)
			return err
		},
		"the services listed": func() error {
			_, err := cl.Services(ctx, swarm.Filter{})
			return err
		},
	} {
		start := time.Now()
		err := call()
		if err == nil || errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "no longer a manager") {
			t.Errorf("%s with the demoted node's old manager certificate: %v, want a refusal saying it is no longer a manager", what, err)
		}
		if swarm.Retryable(err) {
			t.Errorf("%s with the demoted node's old manager certificate: refused after %v as retryable (%v), want a refusal that ends the call", what, time.Since(start), err)
		}
	}
	// Writes as a follower passes them on (the headers it sets).
	post := func(cert tls.Certificate, name, by, onBehalfOf string) (int, string) {
		t.Helper()
		hc := apiHTTPClient(cert, root)
		hc.Timeout = 30 * time.Second
		defer hc.CloseIdleConnections()
		body, err := json.Marshal(service(name, api.Replicated(1)))
		if err != nil {
			t.Fatal(err)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+c.Node("m0").Addr()+"/v1/services", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Shoal-Forwarded-By", by)
		if onBehalfOf != "" {
			req.Header.Set("Shoal-Forwarded-For", onBehalfOf)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		answer, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(answer)
	}
	// A write the node passed on as a manager while it was being demoted
	// (it had not applied its demotion yet) is refused as unavailable,
	// so that the caller's client tries another manager, not as
	// forbidden: the caller is not at fault.
	if code, answer := post(old, "passed-on", c.NodeID("m2"), ""); code != http.StatusServiceUnavailable || !strings.Contains(answer, "another manager") {
		t.Errorf("a write passed on by the demoted node: %d %s, want 503 saying to call another manager", code, answer)
	}
	// Only as itself: naming another forwarder gets the plain refusal.
	if code, answer := post(old, "passed-on", c.NodeID("m1"), ""); code != http.StatusForbidden {
		t.Errorf("a write with the demoted node's certificate claiming m1 passed it on: %d %s, want 403", code, answer)
	}
	// A manager passing on a write of the demoted node (a follower that
	// had not applied the demotion yet): the leader checks the caller too.
	if code, answer := post(m1c, "passed-for", c.NodeID("m1"), c.NodeID("m2")); code != http.StatusForbidden || !strings.Contains(answer, "no longer a manager") {
		t.Errorf("m1 passing on a write of the demoted node: %d %s, want 403 saying it is no longer a manager", code, answer)
	}
	select {
	case <-streamEnded:
	case <-time.After(20 * time.Second):
		t.Fatal("the event stream opened with the demoted node's old manager certificate still runs 20 s after its demotion")
	}
	for via, ended := range logsEnded {
		select {
		case <-ended:
		case <-time.After(20 * time.Second):
			t.Fatalf("the logs follow stream via %s opened with the demoted node's old manager certificate still runs 20 s after its demotion", via)
		}
	}
	for _, name := range []string{"by-demoted", "passed-on", "passed-for"} {
		if _, err := c.Client().Service(ctx, name); !errors.Is(err, swarm.ErrNotFound) {
			t.Fatalf("the service %q the old certificate asked for: %v, want not found", name, err)
		}
	}
}

// apiHTTPClient calls the control API with cert as a manager, as a
// follower passing a call on does (raw requests, its headers set by hand).
func apiHTTPClient(cert tls.Certificate, root *ca.Root) *http.Client {
	conf := ca.ClientConfig(cert, root, ca.RoleManager).Clone()
	conf.NextProtos = []string{swarm.ProtoAPI}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: conf, ForceAttemptHTTP2: true}}
}
