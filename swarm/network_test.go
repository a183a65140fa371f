package swarm_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	ctrd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/shoalproject/shoal/internal/containerdtest"
	"github.com/shoalproject/shoal/internal/nettest"
	"github.com/shoalproject/shoal/internal/syncbuf"
	"github.com/shoalproject/shoal/internal/testimages"
	"github.com/shoalproject/shoal/internal/waitfor"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// netCluster is a Shoal cluster of node processes, each in its own
// network-namespace host of a lab, running real containers on one private
// containerd (a containerd namespace per node, as separate hosts would
// have their own daemon) with the data plane on: overlays between the
// hosts, DNS, the routing mesh.
type netCluster struct {
	t       testing.TB
	lab     *nettest.Lab
	ctrd    *ctrd.Client
	base    string
	images  string
	ctrdSoc string
	ctrdDir string // the containerd's root and state
	nodes   map[string]*netNode
	client  *swarm.Client
	env     []string // more environment for the node processes
}

// netNode is one node process and the host it runs on.
type netNode struct {
	name string
	host *nettest.Host
	dir  string
	proc *procNode
}

// logPath is the file the node process logs to (beside its directory,
// so that a node started again from the same directory appends to it).
func (n *netNode) logPath() string { return n.dir + ".log" }

// logsBetween returns the lines of every node's log stamped between from
// and to that contain one of words, each prefixed with its node's name, at
// most max of them (the latest).
func (c *netCluster) logsBetween(from, to time.Time, max int, words ...string) string {
	type line struct {
		at   time.Time
		text string
	}
	var lines []line
	for name, n := range c.nodes {
		b, err := os.ReadFile(n.logPath())
		if err != nil {
			lines = append(lines, line{text: fmt.Sprintf("%s: %v", name, err)})
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			stamp, _, ok := strings.Cut(strings.TrimPrefix(l, "time="), " ")
			at, err := time.Parse(time.RFC3339Nano, stamp)
			if !ok || err != nil || at.Before(from) || at.After(to) {
				continue
			}
			if strings.Contains(l, "not in this node's view") {
				continue // a task's other networks, at every view: noise here
			}
			if slices.ContainsFunc(words, func(w string) bool { return strings.Contains(l, w) }) {
				lines = append(lines, line{at, name + " " + l})
			}
		}
	}
	slices.SortStableFunc(lines, func(x, y line) int { return x.at.Compare(y.at) })
	if len(lines) > max {
		lines = lines[len(lines)-max:]
	}
	var out strings.Builder
	for _, l := range lines {
		out.WriteString(l.text + "\n")
	}
	return out.String()
}

func newNetCluster(t testing.TB, managers, workers int) *netCluster {
	t.Helper()
	return newNetClusterEnv(t, managers, workers, nil)
}

// newNetClusterEnv is newNetCluster with more environment for the node
// processes (runChildNode reads it).
func newNetClusterEnv(t testing.TB, managers, workers int, env []string) *netCluster {
	t.Helper()
	base := t.TempDir()
	d := containerdtest.Start(t) // skips without root or containerd
	if _, err := exec.LookPath("nsenter"); err != nil {
		t.Skip("the network tests run nodes with nsenter (util-linux)")
	}
	images := filepath.Join(base, "images")
	if _, err := testimages.Build(context.Background(), images); err != nil {
		t.Fatal(err)
	}
	lab := nettest.New(t, managers+workers)
	cl, err := ctrd.New(d.Address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	c := &netCluster{t: t, lab: lab, ctrd: cl, base: base, images: images, ctrdSoc: d.Address, ctrdDir: d.Dir, nodes: map[string]*netNode{}, env: env}
	// Runs after the node processes are killed (cleanups run last
	// first), before the lab and containerd go: the task namespaces the
	// agents bind-mounted under the node dirs are unmounted so that the
	// dirs can be removed.
	t.Cleanup(func() {
		// While the task namespaces are still mounted: runc needs them
		// to kill and delete.
		if err := d.RemoveAll(); err != nil {
			t.Errorf("removing the nodes' containers: %v", err)
		}
		containerdtest.UnmountUnder(base + "/")
	})

	m0 := c.start("m0", lab.Hosts[0], "init", "", "")
	c.client = c.clientVia(lab.Hosts[0], m0)
	cur, err := c.client.Cluster(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < managers; i++ {
		c.start(fmt.Sprint("m", i), lab.Hosts[i], "join-manager", cur.JoinTokens.Manager, m0.proc.info.Addr)
	}
	for i := 1; i <= workers; i++ {
		c.start(fmt.Sprint("w", i), lab.Hosts[managers+i-1], "join", cur.JoinTokens.Worker, m0.proc.info.Addr)
	}
	if managers > 1 {
		var addrs []string
		for i := range managers {
			addrs = append(addrs, c.nodes[fmt.Sprint("m", i)].proc.info.Addr)
		}
		c.client.Addrs = addrs
	}
	waitfor.True(t, "every node ready with its data-plane address", func() bool {
		ns, err := c.client.Nodes(context.Background(), swarm.Filter{})
		if err != nil || len(ns) != len(c.nodes) {
			return false
		}
		for _, n := range ns {
			if n.Status.State != api.NodeReady || n.Description.DataAddr == "" {
				return false
			}
		}
		return true
	})
	return c
}

// start runs a node process inside host's network namespace (nsenter
// --net: the mount namespace stays the test's, where containerd runs, so
// the task namespaces the agent makes are the ones runc joins).
func (c *netCluster) start(name string, h *nettest.Host, how, token, manager string) *netNode {
	c.t.Helper()
	n := c.nodes[name]
	if n == nil {
		n = &netNode{name: name, host: h, dir: filepath.Join(c.base, name)}
		c.nodes[name] = n
	}
	listen := ""
	if how == "init" || how == "join-manager" {
		listen = h.Addr.String() + ":2377"
	}
	if how == "join-manager" {
		how = "join"
	}
	cmd := exec.Command("nsenter", "--net=/var/run/netns/"+h.Name, os.Args[0], "-test.run", "^$")
	cmd.Env = append(os.Environ(), "SHOAL_TEST_NODE_MODE="+how, "SHOAL_TEST_DIR="+n.dir, "SHOAL_TEST_LISTEN="+listen,
		"SHOAL_TEST_TOKEN="+token, "SHOAL_TEST_MANAGER="+manager,
		"SHOAL_TEST_CONTAINERD="+c.ctrdSoc, "SHOAL_TEST_CTRD_NS="+name,
		"SHOAL_TEST_STATE="+filepath.Join(c.base, name+"-exec"), "SHOAL_TEST_IMAGES="+c.images,
		"SHOAL_TEST_LOG="+n.logPath())
	cmd.Env = append(cmd.Env, c.env...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	p := &procNode{dir: n.dir, cmd: cmd, how: how, ready: make(chan error, 1)}
	c.t.Cleanup(p.kill)
	go func() { p.ready <- json.NewDecoder(bufio.NewReader(out)).Decode(&p.info) }()
	n.proc = p.wait(c.t)
	return n
}

// clientVia is a control API client that dials from inside host's
// namespace (the test process itself is on no lab host).
func (c *netCluster) clientVia(h *nettest.Host, m *netNode) *swarm.Client {
	return labClient(c.t, h, m.dir, m.proc.info.Addr)
}

// exec runs the test app with args inside a task's container (on the
// node that runs it) and returns its exit code and output.
func (c *netCluster) exec(tk *api.Task, args ...string) (int, string, error) {
	node := c.nodeByID(tk.NodeID)
	if node == nil {
		return -1, "", fmt.Errorf("task %s is on no known node (%q)", tk.ID, tk.NodeID)
	}
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), node.name), 20*time.Second)
	defer cancel()
	ctr, err := c.ctrd.LoadContainer(ctx, tk.ID)
	if err != nil {
		return -1, "", err
	}
	task, err := ctr.Task(ctx, nil)
	if err != nil {
		return -1, "", err
	}
	spec, err := ctr.Spec(ctx)
	if err != nil {
		return -1, "", err
	}
	ps := *spec.Process
	ps.Args, ps.Terminal = append([]string{"/app"}, args...), false
	var out syncbuf.Buffer
	id := make([]byte, 6)
	rand.Read(id)
	proc, err := task.Exec(ctx, "test-"+hex.EncodeToString(id), &ps, cio.NewCreator(cio.WithStreams(nil, &out, &out)))
	if err != nil {
		return -1, "", err
	}
	defer proc.Delete(context.WithoutCancel(ctx), ctrd.WithProcessKill)
	statusC, err := proc.Wait(ctx)
	if err != nil {
		return -1, "", err
	}
	if err := proc.Start(ctx); err != nil {
		return -1, "", err
	}
	select {
	case st := <-statusC:
		code, _, err := st.Result()
		proc.IO().Wait()
		return int(code), out.String(), err
	case <-ctx.Done():
		return -1, out.String(), ctx.Err()
	}
}

func (c *netCluster) nodeByID(id string) *netNode {
	for _, n := range c.nodes {
		if n.proc != nil && n.proc.info.ID == id {
			return n
		}
	}
	return nil
}

// getFrom fetches a URL from inside a lab host's namespace, on a new
// connection.
func getFrom(h *nettest.Host, url string) (string, error) {
	var conn net.Conn
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return "", err
	}
	if err := h.Do(func() (err error) {
		conn, err = net.DialTimeout("tcp", req.URL.Host, 2*time.Second)
		return err
	}); err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	req.Close = true
	if err := req.Write(conn); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// slowRequest is an HTTP request sent on its own connection, whose answer
// is read later.
type slowRequest struct {
	conn net.Conn
	req  *http.Request
}

// startRequest connects from h to url's host and sends the request: once
// it returns, the connection is open at the server.
func startRequest(t *testing.T, h *nettest.Host, url string) *slowRequest {
	t.Helper()
	r, err := tryRequest(h, url, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.conn.Close() })
	return r
}

// tryRequest connects from h to url's host and sends the request, with a
// deadline of within for the whole exchange.
func tryRequest(h *nettest.Host, url string, within time.Duration) (*slowRequest, error) {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return nil, err
	}
	r := &slowRequest{req: req}
	if err := h.Do(func() (err error) {
		r.conn, err = net.DialTimeout("tcp", req.URL.Host, 2*time.Second)
		return err
	}); err != nil {
		return nil, err
	}
	r.conn.SetDeadline(time.Now().Add(within))
	req.Close = true
	if err := req.Write(r.conn); err != nil {
		r.conn.Close()
		return nil, err
	}
	return r, nil
}

// connDiagnosis describes a connection from h's local port: the client
// socket as ss sees it and the conntrack entries of that port in h.
func connDiagnosis(h *nettest.Host, port int) string {
	var b strings.Builder
	out, err := h.Command(context.Background(), "ss", "-tnoie", fmt.Sprintf("( sport = :%d )", port)).CombinedOutput()
	fmt.Fprintf(&b, "ss: %s %v\n", out, err)
	h.Do(func() error {
		ct, err := os.ReadFile("/proc/thread-self/net/nf_conntrack")
		if err != nil {
			fmt.Fprintf(&b, "conntrack: %v\n", err)
			return nil
		}
		want := fmt.Sprintf("sport=%d ", port)
		n := 0
		for _, l := range strings.Split(string(ct), "\n") {
			if strings.Contains(l, want) {
				fmt.Fprintf(&b, "conntrack: %s\n", l)
				n++
			}
		}
		fmt.Fprintf(&b, "conntrack: %d entries of port %d at %s\n", n, port, time.Now().Format("15:04:05.000"))
		return nil
	})
	return b.String()
}

// answer reads the request's answer: its body, or an error (a status other
// than 200 is one).
func (r *slowRequest) answer() (string, error) {
	defer r.conn.Close()
	return r.read()
}

// read reads the answer and leaves the connection open (to look at it
// when the answer did not come).
func (r *slowRequest) read() (string, error) {
	resp, err := http.ReadResponse(bufio.NewReader(r.conn), r.req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %s: %s", resp.Status, b)
	}
	return string(b), err
}

// addrsOf lists a task's addresses on a network (without the prefix).
func addrsOf(tk *api.Task, networkID string) []string {
	var out []string
	for _, a := range tk.Networks {
		if a.NetworkID != networkID {
			continue
		}
		for _, s := range a.Addresses {
			out = append(out, strings.Split(s, "/")[0])
		}
	}
	return out
}

func mustCreate[T any](t testing.TB, what string) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatalf("create %s: %v", what, err)
		}
		return v
	}
}

// A cluster of three hosts (a manager that runs tasks, two workers) with
// real containers: tasks on different hosts reach each other by service
// name and tasks.NAME over an overlay, and not across networks; published
// ports answer on every host, including one with no task of the service;
// a host-mode port answers only on its task's host; an encrypted network
// carries nothing in plaintext on the wire; secrets and configs reach the
// tasks and secrets touch no disk; objects in use cannot be removed; a
// killed node's tasks leave the backends.
func TestNetworkAcrossHosts(t *testing.T) {
	if testing.Short() {
		t.Skip("a three-host cluster with real containers")
	}
	c := newNetCluster(t, 1, 2)
	ctx := context.Background()
	cl := c.client
	h := c.lab.Hosts

	// Bad input first: clear errors, nothing made.
	if _, err := cl.CreateNetwork(ctx, api.NetworkSpec{Annotations: api.Annotations{Name: "bad"},
		IPAM: &api.IPAMConfig{Subnet: "10.0.300.0/24"}}); !errors.Is(err, api.ErrInvalidSpec) {
		t.Fatalf("a network with a malformed subnet: %v", err)
	}
	bad := service("bad", api.Replicated(1))
	bad.TaskTemplate.Networks = []api.NetworkTarget{{Target: "no-such-network"}}
	if _, err := cl.CreateService(ctx, bad); err == nil || !strings.Contains(err.Error(), "no-such-network") {
		t.Fatalf("a service on a missing network: %v", err)
	}

	front := mustCreate[*api.Network](t, "front")(cl.CreateNetwork(ctx, api.NetworkSpec{Annotations: api.Annotations{Name: "front"}}))
	other := mustCreate[*api.Network](t, "other")(cl.CreateNetwork(ctx, api.NetworkSpec{Annotations: api.Annotations{Name: "other"}}))
	vault := mustCreate[*api.Network](t, "vault")(cl.CreateNetwork(ctx, api.NetworkSpec{Annotations: api.Annotations{Name: "vault"}, Encrypted: true}))
	secretData := "s3cret-" + hex.EncodeToString([]byte(t.Name()))[:12] + "-" + fmt.Sprint(time.Now().UnixNano())
	mustCreate[*api.Secret](t, "secret")(cl.CreateSecret(ctx, api.SecretSpec{Annotations: api.Annotations{Name: "pass"}, Data: []byte(secretData)}))
	mustCreate[*api.Config](t, "config")(cl.CreateConfig(ctx, api.ConfigSpec{Annotations: api.Annotations{Name: "conf"}, Data: []byte("listen=80\n")}))

	app := func(name string, replicas uint64, args ...string) api.ServiceSpec {
		s := service(name, api.Replicated(replicas))
		s.TaskTemplate.Image, s.TaskTemplate.Args = testimages.AppRef, args
		return s
	}
	onWorkers := &api.Placement{Constraints: []string{"node.role==worker"}}
	onManager := &api.Placement{Constraints: []string{"node.role==manager"}}

	web := app("web", 2, "http", ":80")
	web.TaskTemplate.Placement = onWorkers
	web.TaskTemplate.Networks = []api.NetworkTarget{{Target: "front"}}
	web.TaskTemplate.Secrets = []api.SecretReference{{SecretName: "pass"}}
	web.TaskTemplate.Configs = []api.ConfigReference{{ConfigName: "conf", File: api.FileTarget{Name: "/etc/app.conf"}}}
	web.EndpointSpec = &api.EndpointSpec{Ports: []api.PortConfig{{TargetPort: 80, PublishedPort: 8080}}}
	// Ready once it answers (a container that runs may not listen yet).
	web.TaskTemplate.Healthcheck = &api.HealthConfig{Test: []string{"CMD", "/app", "get", "http://127.0.0.1:80/"}, Interval: 250 * time.Millisecond, Retries: 3}
	webSvc := mustCreate[*api.Service](t, "web")(cl.CreateService(ctx, web))

	// More bad input, now that there is something to collide with.
	frontNow, err := cl.Network(ctx, "front")
	if err != nil || frontNow.IPAM == nil {
		t.Fatalf("front: %+v %v", frontNow, err)
	}
	if _, err := cl.CreateNetwork(ctx, api.NetworkSpec{Annotations: api.Annotations{Name: "overlap"}, IPAM: &api.IPAMConfig{Subnet: frontNow.IPAM.Subnet}}); err == nil || !strings.Contains(err.Error(), "front") {
		t.Fatalf("a network overlapping front: %v", err)
	}
	for name, c := range map[string]struct {
		port   uint32
		secret string
		want   string
	}{
		"taken":      {port: 8080, want: "web"},
		"management": {port: 2377, want: "2377"},
		"ssh":        {port: 22, want: "22"},
		"no secret":  {port: 8181, secret: "no-such-secret", want: "no-such-secret"},
	} {
		s := app("bad-"+strings.ReplaceAll(name, " ", "-"), 1, "sleep")
		s.EndpointSpec = &api.EndpointSpec{Ports: []api.PortConfig{{TargetPort: 80, PublishedPort: c.port}}}
		if c.secret != "" {
			s.TaskTemplate.Secrets = []api.SecretReference{{SecretName: c.secret}}
		}
		if _, err := cl.CreateService(ctx, s); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%s: %v (want an error naming %s)", name, err, c.want)
		}
	}

	probe := app("probe", 1, "sleep")
	probe.TaskTemplate.Placement = onManager
	probe.TaskTemplate.Networks = []api.NetworkTarget{{Target: "front"}, {Target: "vault"}}
	probeSvc := mustCreate[*api.Service](t, "probe")(cl.CreateService(ctx, probe))

	lonely := app("lonely", 1, "http", ":80")
	lonely.TaskTemplate.Placement = onWorkers
	lonely.TaskTemplate.Networks = []api.NetworkTarget{{Target: "other"}}
	lonelySvc := mustCreate[*api.Service](t, "lonely")(cl.CreateService(ctx, lonely))

	safe := app("safe", 1, "http", ":80")
	safe.TaskTemplate.Placement = &api.Placement{Constraints: []string{"node.id==" + c.nodes["w1"].proc.info.ID}}
	safe.TaskTemplate.Networks = []api.NetworkTarget{{Target: "vault"}}
	safeSvc := mustCreate[*api.Service](t, "safe")(cl.CreateService(ctx, safe))

	edge := app("edge", 1, "http", ":80")
	edge.TaskTemplate.Placement = &api.Placement{Constraints: []string{"node.id==" + c.nodes["w2"].proc.info.ID}}
	edge.EndpointSpec = &api.EndpointSpec{Ports: []api.PortConfig{{TargetPort: 80, PublishedPort: 9090, PublishMode: api.PublishHost}}}
	edgeSvc := mustCreate[*api.Service](t, "edge")(cl.CreateService(ctx, edge))

	for _, s := range []*api.Service{webSvc, probeSvc, lonelySvc, safeSvc, edgeSvc} {
		want := int(s.Spec.Mode.Replicated.Replicas)
		id := s.ID
		waitfor.True(t, s.Spec.Name+" running", func() bool { return len(running(t, cl, id)) == want })
	}
	webTasks := running(t, cl, webSvc.ID)
	if webTasks[0].NodeID == webTasks[1].NodeID {
		t.Fatalf("web's two tasks both on %s: not spread over the workers", webTasks[0].NodeID)
	}
	probeTask := running(t, cl, probeSvc.ID)[0]
	if len(addrsOf(probeTask, front.ID)) != 1 || len(addrsOf(probeTask, vault.ID)) != 1 {
		t.Fatalf("the probe's attachments: %+v", probeTask.Networks)
	}
	run := func(args ...string) (string, error) {
		code, out, err := c.exec(probeTask, args...)
		if err == nil && code != 0 {
			err = fmt.Errorf("exit %d: %s", code, strings.TrimSpace(out))
		}
		return out, err
	}

	t.Run("names across hosts", func(t *testing.T) {
		webNow, _ := cl.Service(ctx, webSvc.ID)
		var vip string
		for _, v := range webNow.Endpoint.VirtualIPs {
			if v.NetworkID == front.ID {
				vip = strings.Split(v.Addr, "/")[0]
			}
		}
		if vip == "" {
			t.Fatalf("web has no VIP on front: %+v", webNow.Endpoint)
		}
		var want []string
		for _, tk := range webTasks {
			want = append(want, addrsOf(tk, front.ID)...)
		}
		sort.Strings(want)
		waitfor.True(t, "web and tasks.web resolve from the probe", func() bool {
			out, err := run("resolve", "web")
			if err != nil || strings.TrimSpace(out) != vip {
				t.Logf("web: %q %v (want %s)", out, err, vip)
				return false
			}
			out, err = run("resolve", "tasks.web")
			if err != nil || strings.Join(strings.Fields(out), " ") != strings.Join(want, " ") {
				t.Logf("tasks.web: %q %v (want %v)", out, err, want)
				return false
			}
			return true
		})
		// Through the VIP, every task answers in turn (on the other hosts).
		seen := map[string]bool{}
		waitfor.True(t, "both web tasks answer through the VIP", func() bool {
			out, err := run("get", "http://web/")
			if err != nil {
				t.Logf("get web: %v", err)
				return false
			}
			for _, tk := range webTasks {
				if strings.Contains(out, tk.ID) {
					seen[tk.ID] = true
				}
			}
			return len(seen) == 2
		})
	})

	t.Run("networks are isolated", func(t *testing.T) {
		// Not a name there: the task's DNS server answers that it does
		// not know it (NXDOMAIN, or SERVFAIL as it has no upstream to
		// ask here), rather than not answering at all.
		if out, err := run("resolve", "lonely"); err == nil || !(strings.Contains(out, "no such host") || strings.Contains(out, "server misbehaving")) {
			t.Fatalf("lonely (on another network) from the probe: %q %v, want an answer that it is unknown", out, err)
		}
		lt := running(t, cl, lonelySvc.ID)[0]
		addr := addrsOf(lt, other.ID)
		if len(addr) != 1 {
			t.Fatalf("lonely's addresses on other: %v", lt.Networks)
		}
		if out, err := run("get", "http://"+addr[0]+"/"); err == nil {
			t.Fatalf("lonely's address on another network answers the probe: %q", out)
		}
	})

	t.Run("published port on every host", func(t *testing.T) {
		// m0 runs no web task: the routing mesh answers there too.
		for _, from := range h {
			for _, to := range h {
				got := map[string]bool{}
				waitfor.True(t, fmt.Sprintf("port 8080 of %s from %s", to.Addr, from.Addr), func() bool {
					out, err := getFrom(from, "http://"+to.Addr.String()+":8080/")
					if err != nil {
						t.Logf("%s -> %s: %v", from.Addr, to.Addr, err)
						return false
					}
					for _, tk := range webTasks {
						if strings.Contains(out, tk.ID) {
							got[tk.ID] = true
						}
					}
					return len(got) == 2
				})
			}
		}
	})

	t.Run("host-mode port only on its node", func(t *testing.T) {
		w2 := c.nodes["w2"].host
		waitfor.True(t, "port 9090 on w2", func() bool {
			out, err := getFrom(h[0], "http://"+w2.Addr.String()+":9090/")
			return err == nil && strings.Contains(out, running(t, cl, edgeSvc.ID)[0].ID)
		})
		for _, other := range []*nettest.Host{h[0], c.nodes["w1"].host} {
			if out, err := getFrom(h[0], "http://"+other.Addr.String()+":9090/"); err == nil {
				t.Fatalf("a host-mode port answers on %s, which runs no task of it: %q", other.Addr, out)
			}
		}
	})

	t.Run("encrypted network", func(t *testing.T) {
		marker := "plaintext-marker-" + hex.EncodeToString([]byte(time.Now().String()))[:16]
		var out string
		frames, err := c.lab.Capture(func() (err error) {
			pctx, cancel := context.WithTimeout(ctx, waitfor.DefaultTimeout)
			defer cancel()
			return waitfor.Poll(pctx, func() bool {
				out, err = run("get", "http://safe/"+marker)
				return err == nil
			})
		})
		if err != nil {
			t.Fatalf("the probe cannot reach safe over the encrypted network: %v (%s)", err, out)
		}
		if !strings.Contains(out, running(t, cl, safeSvc.ID)[0].ID) {
			t.Fatalf("safe answered %q", out)
		}
		if len(frames) == 0 {
			t.Fatal("nothing captured on the wire")
		}
		for _, f := range frames {
			if bytes.Contains(f, []byte(marker)) {
				t.Fatal("the request crossed the wire in plaintext on an encrypted network")
			}
		}

		// The node that runs safe replaces its WireGuard key (SIGUSR1:
		// what the 12-hour schedule does). The new key reaches the
		// managers and the probe's node at once, and requests over the
		// encrypted network go on after at most a short gap.
		safeNode := c.nodeByID(running(t, cl, safeSvc.ID)[0].NodeID)
		before, err := cl.Node(ctx, running(t, cl, safeSvc.ID)[0].NodeID)
		if err != nil {
			t.Fatal(err)
		}
		if err := safeNode.proc.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
		rotated := time.Now()
		waitfor.True(t, "the managers have safe's node's new WireGuard key", func() bool {
			n, err := cl.Node(ctx, before.ID)
			return err == nil && n.Description.WireGuardKey != "" && n.Description.WireGuardKey != before.Description.WireGuardKey
		})
		const bound = 10 * time.Second
		var lastErr error
		for {
			out, err := run("get", "http://safe/")
			if err == nil && strings.Contains(out, running(t, cl, safeSvc.ID)[0].ID) {
				break
			}
			lastErr = err
			if time.Since(rotated) > bound {
				t.Fatalf("no answer from safe over the encrypted network %v after its node's key rotation: %v", bound, lastErr)
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("after the key rotation, safe answered again over the encrypted network within %v", time.Since(rotated).Round(time.Millisecond))
	})

	t.Run("secrets and configs", func(t *testing.T) {
		for _, tk := range webTasks {
			code, out, err := c.exec(tk, "read", "/run/secrets/pass")
			if err != nil || code != 0 || out != secretData {
				_, st, _ := c.exec(tk, "stat", "/run/secrets/pass")
				_, again, _ := c.exec(tk, "read", "/run/secrets/pass")
				t.Fatalf("the secret in %s: %d %q %v (stat %q, again %q)", tk.ID, code, out, err, st, again)
			}
			code, out, err = c.exec(tk, "read", "/etc/app.conf")
			if err != nil || code != 0 || out != "listen=80\n" {
				t.Fatalf("the config in %s: %d %q %v", tk.ID, code, out, err)
			}
		}
		// Sent only to nodes that run a task that uses it: the probe's
		// container (on m0) has no secret.
		if out, err := run("read", "/run/secrets/pass"); err == nil {
			t.Fatalf("a task that does not use the secret reads it: %q", out)
		}
		// No file on disk holds the secret in clear: not the nodes'
		// (Raft data, state, executor dirs), not containerd's root and
		// state (snapshots, content, the shims' state, the containers'
		// root filesystems); the tasks' copies are on tmpfs.
		onTmpfs, scanned := 0, 0
		for _, root := range []string{c.base, c.ctrdDir} {
			filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
				if err != nil || !d.Type().IsRegular() {
					return nil
				}
				var st syscall.Statfs_t
				if syscall.Statfs(p, &st) == nil && st.Type == 0x01021994 { // TMPFS_MAGIC
					onTmpfs++
					return nil
				}
				scanned++
				if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte(secretData)) {
					t.Errorf("%s holds the secret in clear", p)
				}
				return nil
			})
		}
		if onTmpfs == 0 {
			t.Error("no secret file on tmpfs under the executors' dirs: where are the tasks' secrets?")
		}
		t.Logf("secret scan: %d files on disk under the node and containerd dirs, none with the secret; %d on tmpfs", scanned, onTmpfs)
	})

	t.Run("in use", func(t *testing.T) {
		if err := cl.RemoveSecret(ctx, "pass"); err == nil || !strings.Contains(err.Error(), "web") {
			t.Fatalf("removing a secret in use: %v", err)
		}
		if err := cl.RemoveConfig(ctx, "conf"); err == nil || !strings.Contains(err.Error(), "web") {
			t.Fatalf("removing a config in use: %v", err)
		}
		if err := cl.RemoveNetwork(ctx, "front"); err == nil || !strings.Contains(err.Error(), "web") || !strings.Contains(err.Error(), "probe") {
			t.Fatalf("removing a network in use: %v", err)
		}
	})

	t.Run("rolling update and scale-down drop no request", func(t *testing.T) {
		// Both tasks healthy first (run alone, this subtest may start
		// before the second health check passed: with the first task
		// draining, no backend would be ready).
		waitfor.True(t, "web's tasks healthy", func() bool {
			ts := running(t, cl, webSvc.ID)
			return len(ts) == 2 && ts[0].Status.Health == "healthy" && ts[1].Status.Health == "healthy"
		})
		// Clients on a host with no task of web (through the mesh) and
		// in the probe (through the VIP), a new connection per request.
		type tally struct {
			ok, failed  int
			first, last time.Time // of the failures
		}
		var mu sync.Mutex
		counts := map[string]*tally{"mesh": {}, "vip": {}, "slow": {}}
		var errs []string
		stop := make(chan struct{})
		var wg sync.WaitGroup
		loop := func(name string, req func() error) {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				err := req()
				mu.Lock()
				if err != nil {
					c := counts[name]
					c.failed++
					if c.first.IsZero() {
						c.first = time.Now()
					}
					c.last = time.Now()
					if len(errs) < 10 {
						errs = append(errs, time.Now().Format("15:04:05.000")+" "+name+": "+err.Error())
					}
				} else {
					counts[name].ok++
				}
				mu.Unlock()
			}
		}
		wg.Add(5)
		go loop("mesh", func() error { _, err := getFrom(h[0], "http://"+h[0].Addr.String()+":8080/"); return err })
		// Requests of 300 ms are in flight when a task is told to stop:
		// they finish, because the task left the backends a second
		// before its SIGTERM (which this app obeys at once).
		for range 3 {
			go loop("slow", func() error {
				r, err := tryRequest(h[0], "http://"+h[0].Addr.String()+":8080/?delay=300ms", 3*time.Second)
				if err != nil {
					return err
				}
				defer r.conn.Close()
				if _, err := r.read(); err != nil {
					// What the path of this connection looked like when
					// it failed (a failure seen only under CI load),
					// while it is still open.
					return fmt.Errorf("%w\n%s", err, connDiagnosis(h[0], r.conn.LocalAddr().(*net.TCPAddr).Port))
				}
				return nil
			})
		}
		go loop("vip", func() error { _, err := run("get", "http://web/"); return err })

		cur, err := cl.Service(ctx, webSvc.ID)
		if err != nil {
			t.Fatal(err)
		}
		spec := cur.Spec
		spec.TaskTemplate.Env = []string{"V=2"}
		spec.UpdateConfig = &api.UpdateConfig{Parallelism: 1}
		t.Logf("%s rolling update", time.Now().Format("15:04:05.000"))
		if _, err := cl.UpdateService(ctx, cur.ID, cur.Version, spec); err != nil {
			t.Fatal(err)
		}
		waitfor.True(t, "the rolling update done", func() bool {
			s, err := cl.Service(ctx, webSvc.ID)
			if err != nil || s.UpdateStatus == nil || s.UpdateStatus.State != api.UpdateCompleted {
				return false
			}
			ts := running(t, cl, webSvc.ID)
			return len(ts) == 2 && len(ts[0].Spec.Env) == 1 && len(ts[1].Spec.Env) == 1
		})
		for _, n := range []uint64{3, 1, 2} {
			t.Logf("%s scale to %d", time.Now().Format("15:04:05.000"), n)
			if _, err := cl.ScaleService(ctx, webSvc.ID, n); err != nil {
				t.Fatal(err)
			}
			waitfor.True(t, fmt.Sprintf("web at %d", n), func() bool {
				ts, err := cl.Tasks(ctx, swarm.Filter{Services: []string{webSvc.ID}, DesiredStates: []string{api.TaskRunning.String()}})
				if err != nil || len(ts) != int(n) {
					return false
				}
				all, _ := cl.Tasks(ctx, swarm.Filter{Services: []string{webSvc.ID}})
				for _, tk := range all {
					if tk.Status.State == api.TaskRunning && tk.DesiredState != api.TaskRunning {
						return false // one still stopping
					}
				}
				return len(running(t, cl, webSvc.ID)) == int(n)
			})
		}
		close(stop)
		wg.Wait()
		for name, c := range counts {
			t.Logf("%s: %d requests answered, %d failed", name, c.ok, c.failed)
			if c.failed > 0 {
				t.Logf("%s: failures from %s to %s", name, c.first.Format("15:04:05.000"), c.last.Format("15:04:05.000"))
			}
			if c.ok == 0 {
				t.Errorf("%s: no request answered", name)
			}
		}
		if len(errs) > 0 {
			all, _ := cl.Tasks(ctx, swarm.Filter{Services: []string{webSvc.ID}})
			for _, tk := range all {
				t.Logf("web task %s slot %d on %s: desired %s, %s at %s, addresses %v", tk.ID, tk.Slot, tk.NodeID, tk.DesiredState, tk.Status.State,
					tk.Status.Timestamp.Format("15:04:05.000"), tk.Networks)
			}
			mu.Lock()
			from, to := time.Time{}, time.Time{}
			for _, c := range counts {
				if c.failed > 0 && (from.IsZero() || c.first.Before(from)) {
					from = c.first
				}
				if c.last.After(to) {
					to = c.last
				}
			}
			mu.Unlock()
			// A failed request waited up to its 3 s deadline: what the
			// data plane did from its start on.
			t.Logf("the nodes' data-plane logs from %s to %s:\n%s", from.Add(-4*time.Second).Format("15:04:05.000"), to.Format("15:04:05.000"),
				c.logsBetween(from.Add(-4*time.Second), to.Add(500*time.Millisecond), 200, "netagent", "netmesh", "drain", "linger", "stopping", "level=WARN", "level=ERROR"))
			t.Fatalf("requests failed during the update and scaling: %v", errs)
		}
		webTasks = running(t, cl, webSvc.ID)
	})

	t.Run("requests under way finish before their task stops", func(t *testing.T) {
		// Requests of 2.5 s, longer than any fixed linger worth having,
		// are in flight through the mesh when web scales down to one
		// task: every one is answered, those to the stopping task too,
		// because its linger ends only once its clients are done. The
		// mesh picks backends at random, so a round where no request
		// went to the task that stops shows nothing and is done again.
		url := "http://" + h[0].Addr.String() + ":8080/?delay=2500ms"
		for round := 1; ; round++ {
			waitfor.True(t, "web's two tasks healthy", func() bool {
				ts := running(t, cl, webSvc.ID)
				return len(ts) == 2 && ts[0].Status.Health == "healthy" && ts[1].Status.Health == "healthy"
			})
			before := running(t, cl, webSvc.ID)
			// The mesh on h0 sends to both (a task healthy in the store
			// reaches the nodes' backends a moment later): until then a
			// round could not send to the task that stops.
			quick := "http://" + h[0].Addr.String() + ":8080/"
			waitfor.True(t, "the mesh on h0 sends to both of web's tasks", func() bool {
				seen := map[string]bool{}
				for range 8 {
					r, err := tryRequest(h[0], quick, 3*time.Second)
					if err != nil {
						return false
					}
					if body, err := r.answer(); err == nil {
						if f := strings.Fields(body); len(f) >= 2 {
							seen[f[1]] = true
						}
					}
				}
				return seen[before[0].ID] && seen[before[1].ID]
			})
			var reqs []*slowRequest
			for range 12 {
				reqs = append(reqs, startRequest(t, h[0], url))
			}
			t.Logf("%s round %d: 12 requests sent, scale to 1", time.Now().Format("15:04:05.000"), round)
			if _, err := cl.ScaleService(ctx, webSvc.ID, 1); err != nil {
				t.Fatal(err)
			}
			answered := map[string]int{}
			for _, r := range reqs {
				body, err := r.answer()
				if err != nil {
					t.Fatalf("a request under way when web scaled down: %v", err)
				}
				if f := strings.Fields(body); len(f) >= 2 {
					answered[f[1]]++
				}
			}
			var stopped string
			waitfor.True(t, "web at 1", func() bool {
				after := running(t, cl, webSvc.ID)
				if len(after) != 1 {
					return false
				}
				for _, tk := range before {
					if tk.ID != after[0].ID {
						stopped = tk.ID
					}
				}
				return true
			})
			t.Logf("answers by task: %v; %s stopped", answered, stopped)
			if _, err := cl.ScaleService(ctx, webSvc.ID, 2); err != nil {
				t.Fatal(err)
			}
			if answered[stopped] > 0 {
				break
			}
			if round == 3 {
				t.Fatalf("in 3 rounds no request went to the task that stopped: %v", answered)
			}
		}
		waitfor.True(t, "web back at 2", func() bool { return len(running(t, cl, webSvc.ID)) == 2 })
		webTasks = running(t, cl, webSvc.ID)
	})

	t.Run("a worker killed and restarted serves its adopted tasks' names", func(t *testing.T) {
		w2 := c.nodes["w2"]
		var adopted *api.Task
		for _, tk := range running(t, cl, webSvc.ID) {
			if tk.NodeID == w2.proc.info.ID {
				adopted = tk
			}
		}
		if adopted == nil {
			t.Fatal("no web task on w2")
		}
		w2.proc.kill()
		c.start("w2", w2.host, "start", "", "")
		waitfor.True(t, "names resolve inside the adopted task", func() bool {
			code, out, err := c.exec(adopted, "resolve", "tasks.web")
			return err == nil && code == 0 && len(strings.Fields(out)) >= 2
		})
		if tk, err := cl.Task(ctx, adopted.ID); err != nil || tk.Status.State != api.TaskRunning {
			t.Fatalf("the adopted task after the restart: %+v %v", tk, err)
		}
	})

	t.Run("a killed node's tasks leave the backends", func(t *testing.T) {
		w1 := c.nodes["w1"]
		var gone []string
		for _, tk := range running(t, cl, webSvc.ID) {
			if tk.NodeID == w1.proc.info.ID {
				gone = append(gone, addrsOf(tk, front.ID)...)
			}
		}
		if len(gone) != 1 {
			t.Fatalf("w1 runs %d web tasks", len(gone))
		}
		w1.proc.kill()
		waitfor.True(t, "tasks.web without w1's task, and a replacement", func() bool {
			out, err := run("resolve", "tasks.web")
			fields := strings.Fields(out)
			return err == nil && !slices.Contains(fields, gone[0]) && len(fields) == 2
		})
		// Requests through the mesh on m0 all succeed again (the dead
		// backend is gone).
		waitfor.True(t, "ten requests in a row through the mesh", func() bool {
			for range 10 {
				if _, err := getFrom(h[0], "http://"+h[0].Addr.String()+":8080/"); err != nil {
					return false
				}
			}
			return true
		})
	})
}

// Three managers that all run tasks: a published port answers on every
// host and spreads over the three tasks; the leader killed (kill -9), a
// new one takes over, the dead node's task leaves every backend set and
// is replaced, and the mesh answers on the survivors.
func TestNetworkThreeManagers(t *testing.T) {
	if testing.Short() {
		t.Skip("a three-manager cluster with real containers")
	}
	c := newNetCluster(t, 3, 0)
	ctx := context.Background()
	cl := c.client
	front := mustCreate[*api.Network](t, "front")(cl.CreateNetwork(ctx, api.NetworkSpec{Annotations: api.Annotations{Name: "front"}}))
	web := service("web", api.Replicated(3))
	web.TaskTemplate.Image, web.TaskTemplate.Args = testimages.AppRef, []string{"http", ":80"}
	web.TaskTemplate.Networks = []api.NetworkTarget{{Target: "front"}}
	web.TaskTemplate.Healthcheck = &api.HealthConfig{Test: []string{"CMD", "/app", "get", "http://127.0.0.1:80/"}, Interval: 250 * time.Millisecond, Retries: 3}
	web.EndpointSpec = &api.EndpointSpec{Ports: []api.PortConfig{{TargetPort: 80, PublishedPort: 8080}}}
	svc := mustCreate[*api.Service](t, "web")(cl.CreateService(ctx, web))
	waitfor.True(t, "3 running, one per manager", func() bool {
		ts := running(t, cl, svc.ID)
		nodes := map[string]bool{}
		for _, tk := range ts {
			nodes[tk.NodeID] = true
		}
		return len(ts) == 3 && len(nodes) == 3
	})
	tasks := running(t, cl, svc.ID)
	for _, from := range c.lab.Hosts {
		for _, to := range c.lab.Hosts {
			got := map[string]bool{}
			waitfor.True(t, fmt.Sprintf("port 8080 of %s from %s reaches all 3 tasks", to.Addr, from.Addr), func() bool {
				out, err := getFrom(from, "http://"+to.Addr.String()+":8080/")
				if err != nil {
					return false
				}
				for _, tk := range tasks {
					if strings.Contains(out, tk.ID) {
						got[tk.ID] = true
					}
				}
				return len(got) == 3
			})
		}
	}

	// Kill the leader.
	var leader *netNode
	waitfor.True(t, "a leader known", func() bool {
		ns, err := cl.Nodes(ctx, swarm.Filter{})
		if err != nil {
			return false
		}
		for _, n := range ns {
			if n.ManagerStatus != nil && n.ManagerStatus.Leader {
				leader = c.nodeByID(n.ID)
			}
		}
		return leader != nil
	})
	var dead *api.Task
	var survivor *api.Task
	for _, tk := range tasks {
		if tk.NodeID == leader.proc.info.ID {
			dead = tk
		} else {
			survivor = tk
		}
	}
	leader.proc.kill()
	gone := addrsOf(dead, front.ID)[0]
	waitfor.True(t, "the dead leader's task out of tasks.web and replaced", func() bool {
		code, out, err := c.exec(survivor, "resolve", "tasks.web")
		fields := strings.Fields(out)
		return err == nil && code == 0 && len(fields) == 3 && !slices.Contains(fields, gone)
	})
	var alive *nettest.Host
	for _, n := range c.nodes {
		if n != leader {
			alive = n.host
		}
	}
	waitfor.True(t, "ten requests in a row through the mesh on a survivor", func() bool {
		for range 10 {
			if _, err := getFrom(alive, "http://"+alive.Addr.String()+":8080/"); err != nil {
				return false
			}
		}
		return true
	})

	// The new leader rebuilt its address book from the store: made to
	// hand out more (a scale-up), it gives no address that a live task,
	// a VIP or a node holds.
	cur, err := cl.Service(ctx, svc.ID)
	if err != nil {
		t.Fatal(err)
	}
	up := cur.Spec
	up.Mode = api.Replicated(6)
	if _, err := cl.UpdateService(ctx, svc.ID, cur.Version, up); err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, "6 running after the failover", func() bool { return len(running(t, cl, svc.ID)) == 6 })
	holders := map[string]string{} // network/address -> holder
	hold := func(network, addr, who string) {
		p, err := netip.ParsePrefix(addr)
		if err != nil {
			t.Fatalf("%s's address %q on %s: %v", who, addr, network, err)
		}
		k := network + "/" + p.Addr().String()
		if other, dup := holders[k]; dup {
			t.Fatalf("address %s on network %s handed out twice after the failover: %s and %s", p.Addr(), network, other, who)
		}
		holders[k] = who
	}
	all, err := cl.Tasks(ctx, swarm.Filter{Services: []string{svc.ID}})
	if err != nil {
		t.Fatal(err)
	}
	live := 0
	for _, tk := range all {
		if tk.Status.State > api.TaskRunning {
			continue // ended: its address is free again
		}
		live++
		for _, na := range tk.Networks {
			for _, ad := range na.Addresses {
				hold(na.NetworkID, ad, "task "+tk.ID)
			}
		}
	}
	svcNow, err := cl.Service(ctx, svc.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range svcNow.Endpoint.VirtualIPs {
		hold(v.NetworkID, v.Addr, "web's VIP")
	}
	nodes, err := cl.Nodes(ctx, swarm.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		for _, na := range n.Attachments {
			for _, ad := range na.Addresses {
				hold(na.NetworkID, ad, "node "+n.ID)
			}
		}
	}
	if live < 6 || len(holders) < 2*6 {
		t.Fatalf("%d live tasks, %d addresses checked: too few for the check to mean anything", live, len(holders))
	}
	t.Logf("after the failover: %d addresses of %d live tasks, the VIPs and the nodes, each held once", len(holders), live)
}
