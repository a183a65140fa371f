// Command quickstart runs Shoal's main job on this machine, as root, and
// leaves it running: it builds the demo images, starts a private
// containerd, makes network-namespace hosts (3 managers, 2 workers and a
// client outside the cluster), runs the real shoald binary on each, with
// its own address and hostname (init on the first, join on the others),
// deploys a demo stack with shoalctl (a replicated web service publishing
// port 8080 that reads a secret, a global service, an overlay network),
// shows `node ls` and `service ps`, and sends requests to port 8080 of
// every host through the routing mesh, printing which task on which node
// answered. Then it prints how to use the cluster (docker CLI, shoalctl)
// and how to remove it: `quickstart down` removes every process,
// container, mount, namespace and file it made. scripts/quickstart.sh
// installs what is missing, builds the binaries and runs it:
//
//	./scripts/quickstart.sh           # up (a second time: says it runs, and how to use it)
//	./scripts/quickstart.sh status    # is it running, and how to use it
//	./scripts/quickstart.sh down      # remove it all
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/shoalproject/shoal/internal/nettest"
	"github.com/shoalproject/shoal/internal/shoallab"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/stack"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		if ctx.Err() != nil {
			err = errors.New("interrupted (everything it made is removed)")
		}
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

// began is when the command started: QUICKSTART_START (seconds since the
// epoch, set by scripts/quickstart.sh before it installs and builds), else
// this process's start.
var began = startOfCommand()

func startOfCommand() time.Time {
	if s := os.Getenv("QUICKSTART_START"); s != "" {
		if f, err := strconv.ParseFloat(s, 64); err == nil {
			return time.Unix(0, int64(f*1e9))
		}
	}
	return time.Now()
}

func logf(format string, args ...any) {
	fmt.Printf("[%5.1fs] %s\n", time.Since(began).Seconds(), fmt.Sprintf(format, args...))
}

// The cluster's hosts: the first is where `shoald init` runs; the last is a
// client outside the cluster.
var (
	hostnames = []string{"manager1", "manager2", "manager3", "worker1", "worker2"}
	managers  = 3
)

// options are the command line's.
type options struct {
	dir, prefix      string
	shoald, shoalctl string
	stackFile        string
	requests         int
	verb             string
}

func parse(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("quickstart", flag.ContinueOnError)
	fs.StringVar(&o.dir, "dir", "/var/lib/shoal-quickstart", "where the cluster's files go (data dirs, logs, containerd, binaries); down removes it")
	fs.StringVar(&o.prefix, "netns-prefix", "shoalqs", "the hosts' network namespaces are PREFIX-h0 ... PREFIX-h5")
	fs.StringVar(&o.shoald, "shoald", "", "the shoald binary (up; scripts/quickstart.sh builds it)")
	fs.StringVar(&o.shoalctl, "shoalctl", "", "the shoalctl binary (up)")
	fs.StringVar(&o.stackFile, "stack", defaultStack(), "the Compose file to deploy as the stack \"demo\" (it must publish a port)")
	fs.IntVar(&o.requests, "requests", 6, "requests to each host's published port")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: quickstart [up|status|down] [flags]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	// The verb may come after some flags (the script puts its own first).
	if rest := fs.Args(); len(rest) > 0 {
		o.verb = rest[0]
		if err := fs.Parse(rest[1:]); err != nil {
			return nil, err
		}
		if len(fs.Args()) > 0 {
			return nil, fmt.Errorf("unexpected arguments %q (usage: quickstart [up|status|down] [flags])", fs.Args())
		}
	}
	if o.verb == "" {
		o.verb = "up"
	}
	if !filepath.IsAbs(o.dir) || filepath.Clean(o.dir) == "/" {
		return nil, fmt.Errorf("-dir %q: want an absolute path of a directory of its own", o.dir)
	}
	o.dir = filepath.Clean(o.dir)
	if o.requests < 1 {
		return nil, fmt.Errorf("-requests %d: want at least 1", o.requests)
	}
	return o, nil
}

func run(ctx context.Context, args []string) error {
	o, err := parse(args)
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("run as root: the hosts are network namespaces")
	}
	switch o.verb {
	case "up":
		return up(ctx, o)
	case "status":
		return status(o)
	case "down":
		return down(o)
	}
	return fmt.Errorf("unknown command %q: want up, status or down", o.verb)
}

// marker is the file that says a directory is the quickstart's: down
// removes only such a directory. It holds the namespace prefix.
const marker = ".shoal-quickstart"

// ourDir reports whether dir was made by the quickstart (and with which
// namespace prefix).
func ourDir(dir string) (prefix string, ok bool) {
	b, err := os.ReadFile(filepath.Join(dir, marker))
	if err != nil {
		return "", false
	}
	return strings.TrimSpace(string(b)), true
}

// status says whether a cluster runs and how to use it; an error when
// none does.
func status(o *options) error {
	st, err := shoallab.LoadState(o.dir)
	if errors.Is(err, shoallab.ErrNoState) {
		if _, ok := ourDir(o.dir); ok || len(nettest.Namespaces(o.prefix)) > 0 {
			return fmt.Errorf("a quickstart cluster was being made in %s, but it is not complete (interrupted?): run `./scripts/quickstart.sh down`", o.dir)
		}
		return fmt.Errorf("no quickstart cluster in %s: start one with ./scripts/quickstart.sh", o.dir)
	}
	if err != nil {
		return err
	}
	running, started := len(st.Running()), st.Started()
	if running < len(started) {
		return fmt.Errorf("the quickstart cluster in %s is not complete: %d of its %d processes run (a reboot? a crash?); remove what is left with `./scripts/quickstart.sh down`",
			o.dir, running, len(started))
	}
	fmt.Printf("A quickstart cluster runs (made %s ago, %d shoald processes, files in %s).\n", time.Since(st.Made).Round(time.Second), running-1, st.Dir)
	printUsage(st)
	return nil
}

// printUsage prints how to use the cluster and how to remove it.
func printUsage(st shoallab.State) {
	mgr := st.NetnsPrefix + "-h0"
	client := fmt.Sprintf("%s-h%d", st.NetnsPrefix, st.Hosts-1)
	bin := filepath.Join(st.Dir, "bin")
	fmt.Printf(`
The cluster keeps running. Use it:
  docker CLI (the swarm subset):
    export DOCKER_HOST=unix://%[1]s/node0/docker.sock
    docker node ls; docker service ls; docker service ps demo_web
    docker service scale demo_web=10
    docker service update --image shoal.test/web:2 demo_web   # a rolling update, 2 tasks at a time
  shoalctl, from the first manager's host (its data dir has a manager certificate):
    ip netns exec %[2]s %[3]s/shoalctl --data-dir %[1]s/node0 service ls
  a request through the routing mesh, from the client host:
    ip netns exec %[4]s curl -s http://192.0.2.10:8080/
  shoald logs: %[1]s/node*.log   (hosts: 192.0.2.10-14, network namespaces %[5]s-h0 ... -h%[6]d)
Remove it all (processes, containers, mounts, namespaces, files):
    ./scripts/quickstart.sh down
`, st.Dir, mgr, bin, client, st.NetnsPrefix, st.Hosts-1)
}

// down removes the cluster: what the state file lists, and what carries
// the quickstart's names (a run interrupted before it saved its state).
func down(o *options) error {
	st, err := shoallab.LoadState(o.dir)
	switch {
	case err == nil:
	case errors.Is(err, shoallab.ErrNoState):
		prefix, ours := ourDir(o.dir)
		if !ours {
			prefix = o.prefix
		}
		if !ours && len(nettest.Namespaces(prefix)) == 0 {
			if _, err := os.Stat(o.dir); err == nil {
				return fmt.Errorf("%s was not made by the quickstart (no %s file in it): left alone", o.dir, marker)
			}
			fmt.Println("No quickstart cluster here: nothing to remove.")
			return nil
		}
		st = shoallab.State{Dir: o.dir, NetnsPrefix: prefix, Hosts: len(hostnames) + 1}
		if !ours {
			// Only the namespaces are ours: leave the directory alone.
			st.Dir = filepath.Join(o.dir, ".none")
		}
	default:
		return err
	}
	t0 := time.Now()
	if err := st.Teardown(func(format string, args ...any) { fmt.Printf("  "+format+"\n", args...) }); err != nil {
		return err
	}
	fmt.Printf("The quickstart cluster is removed (%.1fs): no process, mount, namespace (%s-*) or file (%s) of it is left.\n",
		time.Since(t0).Seconds(), st.NetnsPrefix, o.dir)
	return nil
}

// up makes the cluster, or says that one runs already.
func up(ctx context.Context, o *options) (err error) {
	if _, err := shoallab.LoadState(o.dir); !errors.Is(err, shoallab.ErrNoState) {
		fmt.Println("A quickstart cluster was made here already; nothing new is started.")
		if err := status(o); err != nil {
			return err
		}
		return nil
	}
	if _, ours := ourDir(o.dir); ours || len(nettest.Namespaces(o.prefix)) > 0 {
		return fmt.Errorf("an interrupted quickstart left %s or namespaces %s-*: remove them with `./scripts/quickstart.sh down`, then run it again", o.dir, o.prefix)
	}
	if entries, err := os.ReadDir(o.dir); err == nil && len(entries) > 0 {
		return fmt.Errorf("-dir %s exists and is not empty: give the quickstart a directory of its own", o.dir)
	}
	if o.shoald == "" || o.shoalctl == "" {
		return errors.New("-shoald and -shoalctl: required (scripts/quickstart.sh builds them)")
	}
	bin := filepath.Join(o.dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(o.dir, marker), []byte(o.prefix+"\n"), 0o644); err != nil {
		return err
	}
	// The processes left running use their own copies of the binaries.
	shoald, shoalctl := filepath.Join(bin, "shoald"), filepath.Join(bin, "shoalctl")
	for src, dst := range map[string]string{o.shoald: shoald, o.shoalctl: shoalctl} {
		if err := copyFile(src, dst); err != nil {
			os.RemoveAll(o.dir)
			return err
		}
	}
	lab, err := shoallab.New(ctx, shoallab.Options{Shoald: shoald, Hosts: len(hostnames) + 1, Dir: o.dir, NetnsPrefix: o.prefix, Logf: logf})
	if err != nil {
		os.RemoveAll(o.dir)
		return err
	}
	defer func() {
		if err == nil {
			return
		}
		// Failed or interrupted: remove it all.
		if ctx.Err() == nil {
			for i, h := range lab.Hosts[:len(hostnames)] {
				if tail := h.LogTail(15); tail != "" {
					fmt.Fprintf(os.Stderr, "--- %s's shoald log, last lines:\n%s\n", hostnames[i], tail)
				}
			}
		}
		logf("cleaning up: shoald processes, containers, containerd, mounts, namespaces, files")
		if cerr := lab.Close(); cerr != nil {
			fmt.Fprintln(os.Stderr, "quickstart: cleanup:", cerr)
		}
	}()
	if err := lab.SaveState(); err != nil {
		return err
	}
	c, err := startCluster(ctx, lab)
	if err != nil {
		return err
	}
	hosts, client := lab.Hosts[:len(hostnames)], lab.Hosts[len(hostnames)]
	ctl := func(args ...string) error {
		fmt.Printf("\n$ shoalctl %s\n", strings.Join(args, " "))
		cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=/var/run/netns/" + hosts[0].Name, shoalctl, "--data-dir", hosts[0].DataDir}, args...)...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
		err := cmd.Run()
		fmt.Println()
		if err != nil {
			return fmt.Errorf("shoalctl %s: %w", strings.Join(args, " "), err)
		}
		return nil
	}
	if err := ctl("node", "ls"); err != nil {
		return err
	}
	logf("deploying the demo stack (%s): a replicated web service publishing port 8080 that reads a secret, a global service, an overlay network", filepath.Base(o.stackFile))
	if err := ctl("stack", "deploy", "--detach=false", "-c", o.stackFile, "demo"); err != nil {
		return err
	}
	svcs, err := c.Services(ctx, swarm.Filter{Labels: []string{stack.LabelNamespace + "=demo"}})
	if err != nil {
		return err
	}
	var port uint32
	for _, svc := range svcs {
		if err := converge(ctx, c, svc, len(hosts)); err != nil {
			return err
		}
		if e := svc.Spec.EndpointSpec; e != nil && len(e.Ports) > 0 && port == 0 {
			port = e.Ports[0].PublishedPort
		}
	}
	if port == 0 {
		return fmt.Errorf("%s publishes no port", o.stackFile)
	}
	for _, svc := range svcs {
		if err := ctl("service", "ps", svc.Spec.Name); err != nil {
			return err
		}
	}
	// A task counts as running once its process started: its server may
	// take a moment to listen, and the endpoints a moment to reach every
	// node's routing mesh.
	if err := waitMesh(ctx, client, hosts, port); err != nil {
		return err
	}
	logf("%d requests to port %d of every host, from the client host %s (outside the cluster):", o.requests, port, client.Addr)
	if err := ask(ctx, c, client, hosts, port, o.requests); err != nil {
		return err
	}
	st := lab.State()
	if err := lab.SaveState(); err != nil {
		return err
	}
	fmt.Println()
	logf("time from the command to the first answered request: %.1fs (includes installing, building and starting the cluster)", firstAnswer.Sub(began).Seconds())
	var rss []string
	for i, p := range st.Shoalds[:len(hostnames)] {
		rss = append(rss, fmt.Sprintf("%s %.0f MiB", hostnames[i], float64(p.RSS())/(1<<20)))
	}
	logf("RSS of each shoald: %s", strings.Join(rss, ", "))
	printUsage(st)
	return nil
}

// startCluster runs shoald init on the first host, joins the other
// managers and the workers, and returns a client of the first manager.
func startCluster(ctx context.Context, lab *shoallab.Lab) (*swarm.Client, error) {
	hosts := lab.Hosts[:len(hostnames)]
	for i, h := range hosts {
		h.Hostname = hostnames[i]
	}
	lab.Hosts[len(hostnames)].Hostname = "client"
	logf("%s (%s): shoald init --hostname %s", hostnames[0], hosts[0].Addr, hostnames[0])
	c, err := lab.Init(ctx, hosts[0])
	if err != nil {
		return nil, err
	}
	if err := lab.SaveState(); err != nil {
		return nil, err
	}
	cl, err := c.Cluster(ctx)
	if err != nil {
		return nil, err
	}
	join := hosts[0].Addr.String() + ":2377"
	for i, h := range hosts[1:] {
		name, token, role := hostnames[i+1], cl.JoinTokens.Worker, "worker"
		if i+1 < managers {
			token, role = cl.JoinTokens.Manager, "manager"
		}
		logf("%s (%s): shoald join --hostname %s --token %s… %s (as a %s)", name, h.Addr, name, token[:24], join, role)
		if err := lab.Join(ctx, c, h, token, join); err != nil {
			return nil, err
		}
		if err := lab.SaveState(); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// defaultStack is the Compose file beside this program's source.
func defaultStack() string {
	if _, self, _, ok := runtime.Caller(0); ok {
		return filepath.Join(filepath.Dir(self), "demo-stack.yml")
	}
	return "examples/quickstart/demo-stack.yml"
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}

// converge waits until the service runs all its tasks (a global one: one
// per node), printing them per state as they change.
func converge(ctx context.Context, c *swarm.Client, svc *api.Service, nodes int) error {
	want := uint64(nodes)
	if svc.Spec.Mode.Replicated != nil {
		want = svc.Spec.Mode.Replicated.Replicas
	}
	start := time.Now()
	for {
		ts, err := c.Tasks(ctx, swarm.Filter{Services: []string{svc.ID}, DesiredStates: []string{"running"}})
		if err != nil {
			return err
		}
		running := uint64(0)
		for _, t := range ts {
			if t.Status.State == api.TaskRunning {
				running++
			}
		}
		if running >= want {
			return nil
		}
		if time.Since(start) > 3*time.Minute {
			return fmt.Errorf("%s: %d/%d running after 3 minutes", svc.Spec.Name, running, want)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// firstAnswer is when the routing mesh first answered.
var firstAnswer time.Time

// waitMesh waits until port answers on every host, 3 times in a row.
func waitMesh(ctx context.Context, from *shoallab.Host, hosts []*shoallab.Host, port uint32) error {
	hc := from.HTTPClient(2 * time.Second)
	start := time.Now()
	for _, h := range hosts {
		url := fmt.Sprintf("http://%s:%d/", h.Addr, port)
		for ok := 0; ok < 3; {
			if _, err := get(ctx, hc, url); err != nil {
				ok = 0
				if time.Since(start) > time.Minute {
					return fmt.Errorf("%s does not answer after a minute: %v", url, err)
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(100 * time.Millisecond):
				}
				continue
			}
			if firstAnswer.IsZero() {
				firstAnswer = time.Now()
			}
			ok++
		}
	}
	logf("the routing mesh answers on all %d hosts (%.1fs after the tasks ran)", len(hosts), time.Since(start).Seconds())
	return nil
}

// ask sends n requests to port on each host, from `from`, and prints who
// answered (task and node) and how fast. Every request must be answered
// with the secret, and the answers must come from tasks on more than one
// node.
func ask(ctx context.Context, c *swarm.Client, from *shoallab.Host, hosts []*shoallab.Host, port uint32, n int) error {
	nodeOf, err := taskNodes(ctx, c)
	if err != nil {
		return err
	}
	hc := from.HTTPClient(5 * time.Second)
	var failed []string
	allNodes := map[string]bool{}
	sample := ""
	for i, h := range hosts {
		url := fmt.Sprintf("http://%s:%d/", h.Addr, port)
		var sum, worst time.Duration
		byNode := map[string]int{}
		tasks := map[string]bool{}
		ok := 0
		for range n {
			t0 := time.Now()
			body, err := get(ctx, hc, url)
			d := time.Since(t0)
			if err == nil && !strings.Contains(body, " says: ") {
				err = fmt.Errorf("unexpected answer %q", body)
			}
			if err != nil {
				failed = append(failed, fmt.Sprintf("%s: %v", url, err))
				continue
			}
			ok++
			sum, worst = sum+d, max(worst, d)
			if firstAnswer.IsZero() {
				firstAnswer = time.Now()
			}
			sample = body
			task := field(body, "task")
			tasks[task] = true
			node := nodeOf[task]
			if node == "" {
				node = "?"
			}
			byNode[node]++
			allNodes[node] = true
		}
		if ok == 0 {
			logf("  %-26s %-8s 0/%d answered", url, hostnames[i], n)
			continue
		}
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(byNode)) {
			parts = append(parts, fmt.Sprintf("%s x%d", k, byNode[k]))
		}
		logf("  %-26s (%s) %d/%d answered, avg %.1f ms, max %.1f ms, by %d tasks on: %s", url, hostnames[i], ok, n,
			ms(sum/time.Duration(ok)), ms(worst), len(tasks), strings.Join(parts, ", "))
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d requests failed through the routing mesh: %s", len(failed), strings.Join(failed, "; "))
	}
	logf("an answer: %q", sample)
	logf("answered by tasks on %d different nodes: %s", len(allNodes), strings.Join(slices.Sorted(maps.Keys(allNodes)), ", "))
	if len(allNodes) < 2 {
		return errors.New("every answer came from tasks on one node: the routing mesh does not spread the requests")
	}
	return nil
}

// taskNodes maps task IDs to the hostname of their node.
func taskNodes(ctx context.Context, c *swarm.Client) (map[string]string, error) {
	nodes, err := c.Nodes(ctx, swarm.Filter{})
	if err != nil {
		return nil, err
	}
	hostname := map[string]string{}
	for _, n := range nodes {
		hostname[n.ID] = n.Description.Hostname
	}
	tasks, err := c.Tasks(ctx, swarm.Filter{})
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, t := range tasks {
		out[t.ID] = hostname[t.NodeID]
	}
	return out, nil
}

// field is the value of key=value in s.
func field(s, key string) string {
	for _, f := range strings.Fields(s) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return ""
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func get(ctx context.Context, hc *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return strings.TrimSpace(string(b)), nil
}
