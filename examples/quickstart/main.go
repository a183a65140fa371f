// Command quickstart runs Shoal's main job on this machine, as root: it
// starts a private containerd, makes network-namespace hosts (one manager,
// workers, and a client host outside the cluster), runs the real shoald
// binary on each (init on the first, join on the others), drains the
// manager so that it runs no task, deploys a stack (a Compose file from the
// Swarm tutorials: 5 web replicas publishing port 4000), and sends requests
// to port 4000 of every host through the routing mesh, printing who
// answered and how fast. Then it removes everything it made, also on
// failure or Ctrl-C. scripts/quickstart.sh installs what it needs, builds
// shoald and runs it:
//
//	sudo ./scripts/quickstart.sh
//	go run ./examples/quickstart -shoald /tmp/shoald -keep   # leave it up until Ctrl-C
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
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/shoalproject/shoal/internal/shoallab"
	"github.com/shoalproject/shoal/internal/testimages"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
	"github.com/shoalproject/shoal/swarm/stack"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		if ctx.Err() != nil {
			err = errors.New("interrupted (everything it made is removed)")
		}
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

var began = time.Now()

// firstAnswer is when the routing mesh first answered.
var firstAnswer time.Time

func logf(format string, args ...any) {
	fmt.Printf("[%5.1fs] %s\n", time.Since(began).Seconds(), fmt.Sprintf(format, args...))
}

func run(ctx context.Context) (err error) {
	shoald := flag.String("shoald", "", "the shoald binary (scripts/quickstart.sh builds it)")
	shoalctl := flag.String("shoalctl", "", "the shoalctl binary, to show `node ls` and `service ps` with it (else the driver prints them)")
	nodes := flag.Int("nodes", 3, "cluster nodes: one manager and the rest workers")
	file := flag.String("stack", defaultStack(), "the Compose file to deploy (its images run the test web image)")
	requests := flag.Int("requests", 6, "requests to each host's published port")
	keep := flag.Bool("keep", false, "keep the cluster up until Ctrl-C, then clean up")
	flag.Parse()
	if *shoald == "" {
		return fmt.Errorf("-shoald: required (go build -o /tmp/shoald ./examples/shoald)")
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("run as root: the hosts are network namespaces")
	}
	if *nodes < 1 || *nodes > 20 {
		return fmt.Errorf("-nodes %d: want 1 to 20", *nodes)
	}
	lab, err := shoallab.New(ctx, shoallab.Options{Shoald: *shoald, Hosts: *nodes + 1, HeartbeatPeriod: time.Second, Logf: logf})
	if err != nil {
		return err
	}
	defer func() {
		if err != nil && ctx.Err() == nil {
			for _, h := range lab.Hosts {
				if tail := h.LogTail(15); tail != "" {
					fmt.Fprintf(os.Stderr, "--- host %d's shoald log, last lines:\n%s\n", h.Index, tail)
				}
			}
		}
		logf("cleaning up: shoald processes, containers, containerd, mounts, namespaces (with their links and nftables tables), files")
		if cerr := lab.Close(); cerr != nil {
			fmt.Fprintln(os.Stderr, "quickstart: cleanup:", cerr)
			if err == nil {
				err = cerr
			}
		}
		logf("all clean")
		if err != nil && ctx.Err() == nil {
			fmt.Fprintln(os.Stderr, "quickstart: the shoald logs were in", lab.Dir, "(removed); rerun with -keep to look at a live cluster")
		}
	}()
	hosts, client := lab.Hosts[:*nodes], lab.Hosts[*nodes]
	mgr := hosts[0]
	logf("host %d (%s): shoald init", mgr.Index, mgr.Addr)
	c, err := lab.Init(ctx, mgr)
	if err != nil {
		return err
	}
	cl, err := c.Cluster(ctx)
	if err != nil {
		return err
	}
	for _, h := range hosts[1:] {
		logf("host %d (%s): shoald join --token %s… %s:2377", h.Index, h.Addr, cl.JoinTokens.Worker[:20], mgr.Addr)
		if err := lab.Join(ctx, c, h, cl.JoinTokens.Worker, mgr.Addr.String()+":2377"); err != nil {
			return err
		}
	}
	if *nodes > 1 {
		// The manager runs no task: its routing mesh sends every request
		// on to the workers' tasks.
		logf("draining the manager (host %d): it keeps answering on published ports, with no task of its own", mgr.Index)
		n, err := c.Node(ctx, mgr.NodeID())
		if err != nil {
			return err
		}
		spec := n.Spec
		spec.Availability = api.NodeDrain
		if _, err := c.UpdateNode(ctx, n.ID, n.Version, spec); err != nil {
			return err
		}
	}
	ctl := func(args ...string) error {
		if *shoalctl == "" {
			return nil
		}
		logf("shoalctl %s", strings.Join(args, " "))
		cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=/var/run/netns/" + mgr.Name, *shoalctl, "--data-dir", mgr.DataDir}, args...)...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		return cmd.Run()
	}
	if *shoalctl != "" {
		if err := ctl("node", "ls"); err != nil {
			return err
		}
	} else if err := printNodes(ctx, c, lab); err != nil {
		return err
	}

	logf("stack deploy -c %s demo (image username/repo:tag -> %s)", filepath.Base(*file), testimages.WebRef)
	st, err := stack.Load(ctx, "demo", []stack.File{{Name: *file}}, stack.Options{Env: stack.Environ(os.Environ()),
		MapImage: func(string) string { return testimages.WebRef }})
	if err != nil {
		return err
	}
	for _, w := range st.Warnings {
		logf("  warning: %s", w)
	}
	actions, err := stack.Deploy(ctx, c, st, stack.DeployOptions{})
	if err != nil {
		return err
	}
	for _, a := range actions {
		logf("  %s", a)
	}
	var svcs []*api.Service
	for _, spec := range st.Services {
		svc, err := c.Service(ctx, spec.Name)
		if err != nil {
			return err
		}
		svcs = append(svcs, svc)
	}
	var ports []uint32
	for _, svc := range svcs {
		if err := converge(ctx, c, svc); err != nil {
			return err
		}
		if e := svc.Spec.EndpointSpec; e != nil {
			for _, p := range e.Ports {
				ports = append(ports, p.PublishedPort)
			}
		}
		if *shoalctl != "" {
			if err := ctl("service", "ps", svc.Spec.Name); err != nil {
				return err
			}
		} else if err := printTasks(ctx, c, lab, svc); err != nil {
			return err
		}
	}
	if len(ports) == 0 {
		return fmt.Errorf("the stack publishes no port")
	}
	port := ports[0]
	// A task counts as running once its process started: its server may
	// take a moment to listen, and the new endpoints a moment to reach
	// every node's routing mesh. Wait until every host answers.
	if err := waitMesh(ctx, client, hosts, port); err != nil {
		return err
	}
	logf("requests to port %d of every host, from host %d (%s), a client outside the cluster:", port, client.Index, client.Addr)
	if err := ask(ctx, client, hosts, port, *requests); err != nil {
		return err
	}
	logf("first answer %.1fs after the start of the run", firstAnswer.Sub(began).Seconds())
	logf("and from each host to its own address:")
	for _, h := range hosts {
		if err := ask(ctx, h, []*shoallab.Host{h}, port, 2); err != nil {
			return err
		}
	}
	if *keep {
		logf("the cluster stays up until Ctrl-C. From a host: ip netns exec %s curl http://%s:%d/", client.Name, mgr.Addr, port)
		logf("docker CLI: DOCKER_HOST=unix://%s/docker.sock docker node ls", mgr.DataDir)
		if *shoalctl != "" {
			logf("shoalctl: ip netns exec %s %s --data-dir %s service ls", mgr.Name, *shoalctl, mgr.DataDir)
		}
		logf("shoald logs: %s/node*.log", lab.Dir)
		<-ctx.Done()
	}
	return nil
}

// defaultStack is the Compose file beside this program's source.
func defaultStack() string {
	if _, self, _, ok := runtime.Caller(0); ok {
		return filepath.Join(filepath.Dir(self), "web-5-replicas.yml")
	}
	return "examples/quickstart/web-5-replicas.yml"
}

// converge waits until the service runs all its replicas, printing its
// tasks per state as they change.
func converge(ctx context.Context, c *swarm.Client, svc *api.Service) error {
	want := uint64(0)
	if svc.Spec.Mode.Replicated != nil {
		want = svc.Spec.Mode.Replicated.Replicas
	}
	start := time.Now()
	last := ""
	for {
		ts, err := c.Tasks(ctx, swarm.Filter{Services: []string{svc.ID}, DesiredStates: []string{"running"}})
		if err != nil {
			return err
		}
		by := map[string]int{}
		running := uint64(0)
		for _, t := range ts {
			by[t.Status.State.String()]++
			if t.Status.State == api.TaskRunning {
				running++
			}
		}
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(by)) {
			parts = append(parts, fmt.Sprintf("%d %s", by[k], k))
		}
		if s := strings.Join(parts, ", "); s != last {
			logf("  %s: %s", svc.Spec.Name, s)
			last = s
		}
		if want > 0 && running >= want {
			logf("  %s: %d/%d running after %.1fs", svc.Spec.Name, running, want, time.Since(start).Seconds())
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

// waitMesh waits until port answers on every host, 3 times in a row.
func waitMesh(ctx context.Context, from *shoallab.Host, hosts []*shoallab.Host, port uint32) error {
	hc := from.HTTPClient(2 * time.Second)
	start := time.Now()
	for _, h := range hosts {
		url := fmt.Sprintf("http://%s:%d/", h.Addr, port)
		ok := 0
		for ok < 3 {
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
	logf("the routing mesh answers on all %d hosts (waited %.1fs after the tasks ran)", len(hosts), time.Since(start).Seconds())
	return nil
}

// ask sends n requests to port on each host, from `from`, and prints the
// answers and timings.
func ask(ctx context.Context, from *shoallab.Host, hosts []*shoallab.Host, port uint32, n int) error {
	hc := from.HTTPClient(5 * time.Second)
	var failed []string
	for _, h := range hosts {
		url := fmt.Sprintf("http://%s:%d/", h.Addr, port)
		var times []time.Duration
		answered := map[string]int{}
		for range n {
			t0 := time.Now()
			body, err := get(ctx, hc, url)
			d := time.Since(t0)
			if err != nil {
				failed = append(failed, fmt.Sprintf("%s: %v", url, err))
				logf("    %-24s FAILED after %v: %v", url, d.Round(time.Millisecond), err)
				continue
			}
			times = append(times, d)
			if firstAnswer.IsZero() {
				firstAnswer = time.Now()
			}
			// The test app answers its hostname (the task's short ID)
			// and its task ID.
			answered[strings.Fields(body + " ?")[0]]++
		}
		if len(times) == 0 {
			continue
		}
		slices.Sort(times)
		var sum time.Duration
		for _, d := range times {
			sum += d
		}
		logf("    %-24s %d/%d answered  min %.1f ms  avg %.1f ms  max %.1f ms  by %d tasks: %s", url, len(times), n,
			ms(times[0]), ms(sum/time.Duration(len(times))), ms(times[len(times)-1]), len(answered), strings.Join(slices.Sorted(maps.Keys(answered)), " | "))
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d requests failed through the routing mesh: %s", len(failed), strings.Join(failed, "; "))
	}
	return nil
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
		return "", fmt.Errorf("%s", resp.Status)
	}
	return strings.TrimSpace(string(b)), nil
}

// printNodes prints the nodes as `node ls` does, with the host of each.
func printNodes(ctx context.Context, c *swarm.Client, lab *shoallab.Lab) error {
	nodes, err := c.Nodes(ctx, swarm.Filter{})
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "\tID\tHOST\tROLE\tSTATUS\tAVAILABILITY\tMANAGER STATUS")
	for _, n := range nodes {
		ms := ""
		if n.ManagerStatus != nil {
			ms = "Reachable"
			if n.ManagerStatus.Leader {
				ms = "Leader"
			}
		}
		fmt.Fprintf(w, "\t%s\t%s\t%s\t%s\t%s\t%s\n", n.ID, hostOf(lab, n.ID), n.Spec.Role, n.Status.State, n.Spec.Availability, ms)
	}
	return w.Flush()
}

func hostOf(lab *shoallab.Lab, nodeID string) string {
	for _, h := range lab.Hosts {
		if h.NodeID() == nodeID {
			return fmt.Sprintf("host %d (%s)", h.Index, h.Addr)
		}
	}
	return "?"
}

// printTasks prints a service's tasks as `service ps` does.
func printTasks(ctx context.Context, c *swarm.Client, lab *shoallab.Lab, svc *api.Service) error {
	ts, err := c.Tasks(ctx, swarm.Filter{Services: []string{svc.ID}})
	if err != nil {
		return err
	}
	slices.SortFunc(ts, func(a, b *api.Task) int { return int(a.Slot) - int(b.Slot) })
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "\tID\tNAME\tIMAGE\tNODE\tDESIRED STATE\tCURRENT STATE\tADDRESSES")
	for _, t := range ts {
		var addrs []string
		for _, na := range t.Networks {
			addrs = append(addrs, na.Addresses...)
		}
		fmt.Fprintf(w, "\t%s\t%s.%d\t%s\t%s\t%s\t%s %s ago\t%s\n", t.ID, svc.Spec.Name, t.Slot, t.Spec.Image, hostOf(lab, t.NodeID), t.DesiredState,
			t.Status.State, time.Since(t.Status.Timestamp).Round(time.Second), strings.Join(addrs, " "))
	}
	return w.Flush()
}
