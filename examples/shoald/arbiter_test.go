package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/shoalproject/shoal/internal/waitfor"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// One `shoald arbiter` process serves two clusters: each arbiter joins its
// cluster with `arbiter join` and stops on SIGTERM; `arbiter run` with a
// config file listing both data dirs starts both from their dirs, each
// votes in its own cluster (on its own port), the metrics show both, a
// second process on one of the dirs is refused, and SIGTERM stops both.
// The second arbiter joins with --autolock: run needs its unlock key.
func TestArbiterServesTwoClusters(t *testing.T) {
	type cluster struct {
		client  *swarm.Client
		token   string
		addr    string
		arbDir  string
		arbiter string
	}
	var clusters []*cluster
	for range 2 {
		dir := t.TempDir()
		var out syncBuffer
		shoald(t, &out, "init", "--data-dir", dir, "--listen-addr", "127.0.0.1:0", "--tasks=false", "--data-plane=false", "--docker-socket", "none")
		var m []string
		waitfor.True(t, "the arbiter join command", func() bool {
			m = regexp.MustCompile(`shoald arbiter join --token (\S+) (\S+)`).FindStringSubmatch(out.String())
			return m != nil
		}, out.String)
		c := &cluster{token: m[1], addr: m[2], arbDir: filepath.Join(t.TempDir(), "arbiter")}
		c.client = clientOfDir(t, dir, c.addr)
		clusters = append(clusters, c)
	}
	arbiterIn := func(c *cluster) string {
		got, err := c.client.Cluster(context.Background())
		if err != nil || len(got.Arbiters) != 1 {
			return ""
		}
		return got.Arbiters[0].ID
	}
	var unlockKey string
	for i, c := range clusters {
		var out syncBuffer
		args := []string{"arbiter", "join", "--token", c.token, c.addr, "--data-dir", c.arbDir, "--listen-addr", "127.0.0.1:0"}
		if i == 1 {
			args = append(args, "--autolock") // the second arbiter's key stays off the disk
		}
		stop := shoald(t, &out, args...)
		waitfor.True(t, "the arbiter to vote", func() bool { return strings.Contains(out.String(), "shoald: arbiter votes") }, out.String)
		c.arbiter = arbiterIn(c)
		if c.arbiter == "" || !strings.Contains(out.String(), "This arbiter joined the cluster (arbiter "+c.arbiter) {
			t.Fatalf("the cluster lists arbiter %q:\n%s", c.arbiter, out.String())
		}
		if i == 1 {
			m := regexp.MustCompile(`--unlock-key (SWMKEY-1-\S+)`).FindStringSubmatch(out.String())
			if m == nil {
				t.Fatalf("arbiter join --autolock printed no unlock key:\n%s", out.String())
			}
			unlockKey = m[1]
		}
		if err := stop(); err != nil || !strings.Contains(out.String(), "shoald: stopped") {
			t.Fatalf("SIGTERM: %v\n%s", err, out.String())
		}
	}
	if clusters[0].arbiter == clusters[1].arbiter {
		t.Fatal("both clusters have the same arbiter ID")
	}
	// Without its key the autolocked one does not start, and neither does
	// the process.
	var o syncBuffer
	err := run(context.Background(), []string{"arbiter", "run", "--data-dir", clusters[0].arbDir, "--data-dir", clusters[1].arbDir}, &o, &o)
	if err == nil || !strings.Contains(err.Error(), "--unlock-key") || !strings.Contains(err.Error(), clusters[1].arbDir) {
		t.Fatalf("arbiter run without the unlock key: %v", err)
	}

	cfg := filepath.Join(t.TempDir(), "arbiter.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("data-dir:\n  - %s\n  - %s\nunlock-key: [%s]\nmetrics-addr: 127.0.0.1:0\n", clusters[0].arbDir, clusters[1].arbDir, unlockKey)), 0o644)
	var out syncBuffer
	stop := shoald(t, &out, "arbiter", "run", "--config", cfg)
	waitfor.True(t, "both arbiters to vote again", func() bool { return strings.Count(out.String(), "shoald: arbiter votes") == 2 }, out.String)
	for _, c := range clusters {
		if got := arbiterIn(c); got != c.arbiter {
			t.Fatalf("cluster lists arbiter %q, want %s", got, c.arbiter)
		}
		servers, err := c.client.Cluster(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(servers.Arbiters, func(a api.Arbiter) bool { return a.ID != c.arbiter }) {
			t.Fatalf("a cluster lists another cluster's arbiter: %+v", servers.Arbiters)
		}
	}
	m := regexp.MustCompile(`url=(http://\S+/metrics)`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no metrics URL in the log:\n%s", out.String())
	}
	resp, err := http.Get(m[1])
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, c := range clusters {
		if want := fmt.Sprintf("shoal_arbiter_votes{arbiter=%q} 1", c.arbiter); !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s:\n%s", want, grepShoal(string(body)))
		}
	}
	o = syncBuffer{}
	if err := run(context.Background(), []string{"arbiter", "run", "--data-dir", clusters[1].arbDir}, &o, &o); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("a second arbiter process on a data dir: %v", err)
	}
	if err := stop(); err != nil || !strings.Contains(out.String(), "shoald: stopped") {
		t.Fatalf("SIGTERM: %v\n%s", err, out.String())
	}
}
