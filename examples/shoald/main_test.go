package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/syncbuf"
	"github.com/shoalproject/shoal/internal/waitfor"
)

// syncBuffer is safe for a daemon writing while the test reads.
type syncBuffer = syncbuf.Buffer

// shoald runs the command in the background; stop ends it (as SIGTERM
// would) and returns its error.
func shoald(t *testing.T, out *syncBuffer, args ...string) (stop func() error) {
	t.Helper()
	args = rootNamespaceSafe(args)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, out, out) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(time.Minute):
				t.Fatal("shoald did not stop")
			}
		})
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

// rootNamespaceSafe turns the data plane off for a node started in the
// test's own process: that runs in the machine's own network namespace,
// where the network agent would make its bridges, overlay devices and nft
// tables and change sysctls (one such test once left them on a CI machine).
// The flag goes last, so that it wins over an earlier one and over a config
// file. Tests of the data plane start shoald in namespace hosts (the e2e
// tests).
func rootNamespaceSafe(args []string) []string {
	if len(args) == 0 || !slices.Contains([]string{"init", "join", "run"}, args[0]) {
		return args
	}
	return append(slices.Clone(args), "--data-plane=false")
}

// Bad flags, config files and tokens give errors that name the problem.
func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("data-dir: /tmp/x\nlisten-adr: 1.2.3.4:1\n"), 0o644)
	badVal := filepath.Join(dir, "badval.json")
	os.WriteFile(badVal, []byte(`{"vxlan-port": "many"}`), 0o644)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"init", "--listen-addr", "nowhere"}, `--listen-addr "nowhere": want host:port`},
		{[]string{"init", "--vxlan-port", "0"}, "--vxlan-port 0"},
		{[]string{"init", "--data-dir", dir, "--tasks=false"}, "--advertise-addr: required"},
		{[]string{"init", "--log-level", "loud"}, `--log-level "loud"`},
		{[]string{"init", "--data-path-addr", "eth0"}, `--data-path-addr "eth0"`},
		{[]string{"init", "--config", bad}, `unknown key "listen-adr"`},
		{[]string{"init", "--config", badVal}, "vxlan-port"},
		{[]string{"init", "--config", filepath.Join(dir, "none.yaml")}, "config file"},
		{[]string{"join", "192.0.2.1:2377", "--data-dir", dir}, "--token: required"},
		{[]string{"join", "--token", "SWMTKN-1-nope", "192.0.2.1:2377", "--data-dir", dir}, "--token:"},
		{[]string{"join", "--token", "x"}, "join takes one argument"},
		{[]string{"run", "--data-dir", t.TempDir(), "--tasks=false"}, "holds no node"},
		{[]string{"init", "--data-dir", t.TempDir(), "--listen-addr", "127.0.0.1:0", "--containerd", filepath.Join(dir, "no.sock")}, "is containerd running?"},
		{[]string{"unlock", "--data-dir", t.TempDir(), "--key", "k"}, "no shoald answers"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"arbiter", "join", "192.0.2.1:2377", "--data-dir", dir}, "--token: required"},
		{[]string{"arbiter", "join", "--token", "SWMTKN-1-nope", "192.0.2.1:2377", "--data-dir", dir}, "--token:"},
		{[]string{"arbiter", "join", "--token", "x", "--data-dir", dir, "--data-dir", t.TempDir(), "192.0.2.1:2377"}, "join takes one data dir"},
		{[]string{"arbiter", "join", "--token", "x"}, "arbiter join takes one argument"},
		{[]string{"arbiter", "join", "--token", "x", "--listen-addr", "nowhere", "192.0.2.1:2377"}, `--listen-addr "nowhere"`},
		{[]string{"arbiter", "run", "--data-dir", dir, "--data-dir", dir}, "given twice"},
		{[]string{"arbiter", "run", "--data-dir", t.TempDir()}, "holds no arbiter"},
		{[]string{"arbiter", "run", "--config", badVal}, `unknown key "vxlan-port"`},
		{[]string{"recover", "--data-dir", t.TempDir(), "--force-new-cluster", "--yes"}, "holds no node"},
		{[]string{"recover", "--data-dir", t.TempDir(), "--yes"}, "--force-new-cluster: required"},
		{[]string{"init", "--hostname", "two words"}, `--hostname "two words"`},
	} {
		var out syncBuffer
		err := run(context.Background(), rootNamespaceSafe(c.args), &out, &out)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("shoald %s: %v, want an error with %q\n%s", strings.Join(c.args, " "), err, c.want, out.String())
		}
	}
}

// A manager-only node: init with autolock prints the join command and the
// unlock key, serves the Docker API and metrics, stops on SIGTERM; run
// restarts it locked, unlock opens it; a second shoald on the same data
// dir is refused; a config file sets the flags.
func TestInitRunUnlock(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "shoald.yaml")
	// No data plane: the test runs in the machine's own network namespace.
	os.WriteFile(cfg, []byte("data-dir: "+dir+"\nlisten-addr: 127.0.0.1:0\ntasks: false\ndata-plane: false\nmetrics-addr: 127.0.0.1:0\nlog-level: debug\n"), 0o644)
	var out syncBuffer
	stop := shoald(t, &out, "init", "--config", cfg, "--autolock")
	var key string
	waitfor.True(t, "the join command and the unlock key", func() bool {
		m := regexp.MustCompile(`key: (SWMKEY-1-\S+)\)`).FindStringSubmatch(out.String())
		if m != nil {
			key = m[1]
		}
		return key != "" && strings.Contains(out.String(), "shoald join --token SWMTKN-1-")
	}, out.String)
	sock := filepath.Join(dir, "docker.sock")
	var info struct {
		Swarm struct{ LocalNodeState string }
	}
	if err := dockerCall(context.Background(), sock, "GET", "/info", nil, &info); err != nil || info.Swarm.LocalNodeState != "active" {
		t.Fatalf("docker info through the socket: %+v %v", info, err)
	}
	// One shoald per data dir.
	var out2 syncBuffer
	if err := run(context.Background(), rootNamespaceSafe([]string{"run", "--data-dir", dir, "--tasks=false"}), &out2, &out2); err == nil || !strings.Contains(err.Error(), "in use by another shoald") {
		t.Fatalf("a second shoald on the data dir: %v", err)
	}
	if err := stop(); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if !strings.Contains(out.String(), "shoald: stopped") {
		t.Fatalf("no clean stop:\n%s", out.String())
	}

	// Restarted: locked until unlocked.
	out = syncBuffer{}
	shoald(t, &out, "run", "--config", cfg)
	waitfor.True(t, "the locked manager", func() bool { return strings.Contains(out.String(), "this manager is locked") }, out.String)
	var o syncBuffer
	if err := run(context.Background(), []string{"unlock", "--data-dir", dir, "--key", "SWMKEY-1-wrong"}, &o, &o); err == nil {
		t.Fatal("unlocked with a wrong key")
	}
	if err := run(context.Background(), []string{"unlock", "--data-dir", dir, "--key", key}, &o, &o); err != nil {
		t.Fatalf("unlock: %v\n%s", err, o.String())
	}
	o = syncBuffer{}
	if err := run(context.Background(), []string{"unlock-key", "--data-dir", dir}, &o, &o); err != nil || strings.TrimSpace(o.String()) != key {
		t.Fatalf("unlock-key: %q %v, want %s", o.String(), err, key)
	}
	waitfor.True(t, "the unlocked manager answers", func() bool {
		return dockerCall(context.Background(), sock, "GET", "/swarm", nil, nil) == nil
	})
	// Metrics: the port was :0, the log says where.
	m := regexp.MustCompile(`url=(http://\S+/metrics)`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no metrics URL in the log:\n%s", out.String())
	}
}
