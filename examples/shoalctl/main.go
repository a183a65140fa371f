// Command shoalctl drives a Shoal cluster through the Go client
// (swarm.Client), with the verbs of the docker CLI's swarm commands: node,
// service, stack, secret, config, network, cluster, join-token and events.
// It connects to a manager with a node certificate: a manager's data dir
// (--data-dir, as shoald writes it) or --cert/--key/--ca files.
//
//	shoalctl node ls
//	shoalctl service create --name web --replicas 3 -p 8080:80 nginx:alpine
//	shoalctl stack deploy -c docker-compose.yml demo
//	shoalctl service ps web --format json
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/ca"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "shoalctl:", err)
		os.Exit(1)
	}
}

// run runs shoalctl with the command line args.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	root := newRoot(&cli{in: stdin, out: stdout, err: stderr})
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}

// cli holds the global flags and the connection.
type cli struct {
	in       io.Reader
	out, err io.Writer

	dataDir             string
	cert, key, caFile   string
	hosts               []string
	format              string
	timeout             time.Duration
	client              *swarm.Client
	dial                func(ctx context.Context, network, addr string) (net.Conn, error)
	progressInterval    time.Duration
	progressTerminalOut bool
}

func newRoot(c *cli) *cobra.Command {
	root := &cobra.Command{
		Use:   "shoalctl",
		Short: "Drive a Shoal cluster: nodes, services, stacks, secrets, configs, networks",
		Long: `shoalctl drives a Shoal cluster through a manager's control API, over mutual
TLS with a node certificate: a manager's data dir (--data-dir, default
/var/lib/shoal, as shoald writes it) or --cert, --key and --ca files. The
manager's address comes from the data dir, or --host.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if c.format != "table" && c.format != "json" {
				return fmt.Errorf("--format %q: want table or json", c.format)
			}
			return nil
		},
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetOut(c.out)
	root.SetErr(c.err)
	root.SetIn(c.in)
	pf := root.PersistentFlags()
	pf.StringVar(&c.dataDir, "data-dir", envOr("SHOAL_DATA_DIR", "/var/lib/shoal"), "a manager's data dir: its certificate and the managers' addresses (env SHOAL_DATA_DIR)")
	pf.StringVar(&c.cert, "cert", "", "node certificate (PEM) instead of the data dir's; needs --key, --ca and --host")
	pf.StringVar(&c.key, "key", "", "the certificate's private key (PEM)")
	pf.StringVar(&c.caFile, "ca", "", "the cluster's CA certificate (PEM)")
	pf.StringSliceVarP(&c.hosts, "host", "H", nil, "manager address (host:port); repeat for several (env SHOAL_HOST)")
	pf.StringVar(&c.format, "format", "table", "output: table or json")
	pf.DurationVar(&c.timeout, "timeout", 30*time.Second, "how long a call may take")
	root.AddCommand(nodeCmd(c), serviceCmd(c), stackCmd(c), secretCmd(c), configCmd(c), networkCmd(c), clusterCmd(c), joinTokenCmd(c), eventsCmd(c))
	return root
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// connect makes the client from the flags.
func (c *cli) connect() (*swarm.Client, error) {
	if c.client != nil {
		return c.client, nil
	}
	hosts := c.hosts
	if len(hosts) == 0 {
		if h := os.Getenv("SHOAL_HOST"); h != "" {
			hosts = strings.Split(h, ",")
		}
	}
	var tlsConf *tls.Config
	switch {
	case c.cert != "" || c.key != "" || c.caFile != "":
		if c.cert == "" || c.key == "" || c.caFile == "" {
			return nil, errors.New("--cert, --key and --ca go together")
		}
		cert, err := tls.LoadX509KeyPair(c.cert, c.key)
		if err != nil {
			return nil, fmt.Errorf("--cert/--key: %w", err)
		}
		caPEM, err := os.ReadFile(c.caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca: %w", err)
		}
		root, err := ca.ParseRoot(caPEM, nil)
		if err != nil {
			return nil, fmt.Errorf("--ca: %w", err)
		}
		tlsConf = ca.ClientConfig(cert, root, ca.RoleManager)
	default:
		cert, root, err := (ca.Files{Dir: c.dataDir}).Load()
		if err != nil {
			return nil, fmt.Errorf("no node certificate in %s (%v): point --data-dir at a manager's data dir, or give --cert, --key and --ca", c.dataDir, err)
		}
		tlsConf = ca.ClientConfig(cert, root, ca.RoleManager)
		if len(hosts) == 0 {
			hosts = managersOf(c.dataDir)
		}
	}
	if len(hosts) == 0 {
		return nil, errors.New("no manager address: give --host HOST:PORT")
	}
	for i, h := range hosts {
		if _, _, err := net.SplitHostPort(h); err != nil {
			hosts[i] = net.JoinHostPort(h, fmt.Sprint(swarm.DefaultManagementPort))
		}
	}
	c.client = &swarm.Client{Addrs: hosts, TLS: tlsConf, Dial: c.dial}
	return c.client, nil
}

// managersOf reads the managers' addresses a node's data dir records.
func managersOf(dir string) []string {
	raw, err := os.ReadFile(filepath.Join(dir, "node.json"))
	if err != nil {
		return nil
	}
	var st struct {
		Advertise string   `json:"advertise"`
		Managers  []string `json:"managers"`
	}
	if json.Unmarshal(raw, &st) != nil {
		return nil
	}
	out := []string{}
	if st.Advertise != "" {
		out = append(out, st.Advertise)
	}
	for _, m := range st.Managers {
		if m != st.Advertise {
			out = append(out, m)
		}
	}
	return out
}

// ctx bounds a call with --timeout.
func (c *cli) ctx(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return context.WithTimeout(cmd.Context(), c.timeout)
}

// call connects and runs fn under the command's timeout.
func (c *cli) call(cmd *cobra.Command, fn func(context.Context, *swarm.Client) error) error {
	cl, err := c.connect()
	if err != nil {
		return err
	}
	ctx, cancel := c.ctx(cmd)
	defer cancel()
	return fn(ctx, cl)
}

// printJSON writes v as indented JSON.
func (c *cli) printJSON(v any) error {
	enc := json.NewEncoder(c.out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes rows under a header, or v as JSON with --format json.
func (c *cli) table(v any, header []string, rows [][]string) error {
	if c.format == "json" {
		return c.printJSON(v)
	}
	w := tabwriter.NewWriter(c.out, 0, 4, 3, ' ', 0)
	fmt.Fprintln(w, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(w, strings.Join(r, "\t"))
	}
	return w.Flush()
}

// ago says how long ago t was, as docker does.
func ago(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := time.Since(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%d seconds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%d minutes ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d hours ago", int(d.Hours()))
	}
	return fmt.Sprintf("%d days ago", int(d.Hours()/24))
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// exactArgs is cobra.ExactArgs with a message that shows the usage.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return fmt.Errorf("%q takes %d argument(s), got %d\nUsage: %s", cmd.CommandPath(), n, len(args), cmd.UseLine())
		}
		return nil
	}
}

func minArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return fmt.Errorf("%q needs at least %d argument(s)\nUsage: %s", cmd.CommandPath(), n, cmd.UseLine())
		}
		return nil
	}
}

// labelsOf parses key=value labels.
func labelsOf(flag string, kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, kv := range kvs {
		k, v, _ := strings.Cut(kv, "=")
		if k == "" {
			return nil, fmt.Errorf("--%s %q: want key=value", flag, kv)
		}
		out[k] = v
	}
	return out, nil
}
