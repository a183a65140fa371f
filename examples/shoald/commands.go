package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/ca"
)

func initCmd(out io.Writer) *cobra.Command {
	cfg := &config{}
	var autolock bool
	cmd := daemonCmd("init", "Make a new cluster with this node as its first manager, and run it", cfg, func(cmd *cobra.Command, args []string) error {
		if host, _, _ := net.SplitHostPort(cfg.ListenAddr); cfg.AdvertiseAddr == "" && (host == "" || host == "0.0.0.0" || host == "::") {
			return fmt.Errorf("--advertise-addr: required when --listen-addr (%s) names no host: the address other nodes reach this manager at", cfg.ListenAddr)
		}
		d := &daemon{cfg: cfg, log: cfg.logger(cmd.ErrOrStderr()), out: out}
		lock, err := lockDir(cfg.DataDir)
		if err != nil {
			return err
		}
		defer lock.Close()
		if err := d.newNode(cmd.Context(), autolock); err != nil {
			return err
		}
		return d.serve(cmd.Context(), func(ctx context.Context, n *swarm.Node) error { return n.Init(ctx) }, d.announceCluster)
	})
	cmd.Args = cobra.NoArgs
	cmd.Flags().BoolVar(&autolock, "autolock", false, "encrypt the Raft data with a key printed once; a restarted manager waits locked for it (shoald unlock)")
	return cmd
}

// announceCluster prints how to join the new cluster (and its unlock key).
func (d *daemon) announceCluster(ctx context.Context) error {
	c, err := d.node.Client().Cluster(ctx)
	if err != nil {
		return err
	}
	addr := d.node.Addr()
	fmt.Fprintf(d.out, "Cluster initialized: node %s is now a manager.\n\nTo add a worker to this cluster, run:\n\n    shoald join --token %s %s\n\nTo add a manager: shoald join --token %s %s\n",
		d.node.ID(), c.JoinTokens.Worker, addr, c.JoinTokens.Manager, addr)
	fmt.Fprintf(d.out, "With two managers, add an arbiter (a third vote on a small box): shoald arbiter join --token %s %s\n", c.JoinTokens.Arbiter, addr)
	if d.node.AutoLock {
		k, err := d.node.Manager().UnlockKey()
		if err != nil {
			return err
		}
		fmt.Fprintf(d.out, "\nAutolock is on. After a restart, unlock this manager with:\n\n    shoald unlock     (key: %s)\n\nKeep the key in a password manager: without it a restarted manager cannot read its data.\n", k)
	}
	return nil
}

func joinCmd(out io.Writer) *cobra.Command {
	cfg := &config{}
	var token string
	cmd := daemonCmd("join --token TOKEN MANAGER:PORT", "Join a cluster through one of its managers, and run", cfg, func(cmd *cobra.Command, args []string) error {
		addr := args[0]
		if token == "" {
			return errors.New("--token: required (shoalctl join-token worker, or docker swarm join-token worker, on a manager prints it)")
		}
		if _, err := ca.ParseToken(token); err != nil {
			return fmt.Errorf("--token: %v", err)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			addr = net.JoinHostPort(addr, fmt.Sprint(swarm.DefaultManagementPort))
		}
		d := &daemon{cfg: cfg, log: cfg.logger(cmd.ErrOrStderr()), out: out}
		return d.run(cmd.Context(), func(ctx context.Context, n *swarm.Node) error {
			jctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			if err := n.Join(jctx, token, addr); err != nil {
				return fmt.Errorf("joining through %s: %w", addr, err)
			}
			fmt.Fprintf(out, "This node joined the cluster as a %s (node %s).\n", n.Role(), n.ID())
			return nil
		}, nil)
	})
	cmd.Args = func(cmd *cobra.Command, args []string) error {
		if len(args) != 1 {
			return errors.New("join takes one argument, a manager's address (host:port): shoald join --token TOKEN MANAGER:2377")
		}
		return nil
	}
	cmd.Flags().StringVar(&token, "token", "", "the join token (SWMTKN-1-...); it says the role: worker or manager")
	return cmd
}

func runCmd(out io.Writer) *cobra.Command {
	cfg := &config{}
	cmd := daemonCmd("run", "Start the node in the data dir again (after a restart)", cfg, func(cmd *cobra.Command, args []string) error {
		d := &daemon{cfg: cfg, log: cfg.logger(cmd.ErrOrStderr()), out: out}
		return d.run(cmd.Context(), func(ctx context.Context, n *swarm.Node) error {
			err := n.Start(ctx)
			if errors.Is(err, swarm.ErrNotInitialized) {
				return fmt.Errorf("%s holds no node: make a cluster with `shoald init` or join one with `shoald join` first", cfg.DataDir)
			}
			if errors.Is(err, swarm.ErrBadUnlockKey) {
				return fmt.Errorf("--unlock-key (or %s): %w", unlockKeyEnv, err)
			}
			return err
		}, nil)
	})
	cmd.Args = cobra.NoArgs
	cmd.Flags().StringVar(&cfg.UnlockKey, "unlock-key", "", "unlock key of an autolocked manager (or set "+unlockKeyEnv+"); without it the manager waits locked for `shoald unlock`")
	return cmd
}

func leaveCmd(out io.Writer) *cobra.Command {
	cfg := &config{}
	var force bool
	cmd := daemonCmd("leave", "Take this node out of the cluster: its tasks stop, its identity is forgotten", cfg, func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		q := "/swarm/leave"
		if force {
			q += "?force=1"
		}
		if path := cfg.dockerSocket(); path != "" {
			// A running shoald leaves and exits.
			err := dockerCall(ctx, path, http.MethodPost, q, nil, nil)
			if err == nil {
				fmt.Fprintln(out, "The node left the cluster.")
				return nil
			}
			if !errors.Is(err, errNoDaemon) {
				return err
			}
		}
		// No shoald runs on the data dir: start the node to stop its
		// tasks, then leave.
		d := &daemon{cfg: cfg, log: cfg.logger(cmd.ErrOrStderr()), out: out}
		lock, err := lockDir(cfg.DataDir)
		if err != nil {
			return err
		}
		defer lock.Close()
		if err := d.newNode(ctx, false); err != nil {
			return err
		}
		if d.executor != nil {
			defer d.executor.Close()
		}
		if err := d.node.Start(ctx); err != nil {
			if errors.Is(err, swarm.ErrNotInitialized) {
				return fmt.Errorf("%s holds no node: nothing to leave", cfg.DataDir)
			}
			return err
		}
		if err := d.node.Leave(ctx, force); err != nil {
			d.node.Close()
			return err
		}
		if d.network != nil {
			if err := removeNetState(cfg.DataDir); err != nil {
				return err
			}
		}
		fmt.Fprintln(out, "The node left the cluster.")
		return nil
	})
	cmd.Args = cobra.NoArgs
	cmd.Flags().BoolVarP(&force, "force", "f", false, "leave even as a manager (it takes a vote from the cluster: demote it first)")
	return cmd
}

// socketFlags are the flags of the commands that talk to a running
// shoald.
func socketFlags(cmd *cobra.Command, cfg *config) {
	cmd.Flags().StringVarP(&cfg.DataDir, "data-dir", "d", defaultDataDir, "the node's data dir (its Docker API socket is DATA_DIR/docker.sock)")
	cmd.Flags().StringVar(&cfg.DockerSocket, "docker-socket", "", "the running shoald's Docker API socket; default DATA_DIR/docker.sock")
}

func unlockCmd(out io.Writer) *cobra.Command {
	cfg := &config{}
	var key string
	cmd := &cobra.Command{Use: "unlock", Short: "Unlock a running, locked manager (autolock) with its unlock key", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if key == "" {
				key = os.Getenv(unlockKeyEnv)
			}
			if key == "" {
				fmt.Fprint(cmd.ErrOrStderr(), "Unlock key: ")
				line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
				if err != nil && line == "" {
					return errors.New("no unlock key given (--key, " + unlockKeyEnv + ", or on stdin)")
				}
				key = strings.TrimSpace(line)
			}
			body := map[string]string{"UnlockKey": key}
			if err := dockerCall(cmd.Context(), cfg.dockerSocket(), http.MethodPost, "/swarm/unlock", body, nil); err != nil {
				return err
			}
			fmt.Fprintln(out, "The manager is unlocked.")
			return nil
		}}
	socketFlags(cmd, cfg)
	cmd.Flags().StringVar(&key, "key", "", "the unlock key (default: "+unlockKeyEnv+", else read from stdin)")
	return cmd
}

func unlockKeyCmd(out io.Writer) *cobra.Command {
	cfg := &config{}
	cmd := &cobra.Command{Use: "unlock-key", Short: "Print a running manager's unlock key (autolock)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var ans struct{ UnlockKey string }
			if err := dockerCall(cmd.Context(), cfg.dockerSocket(), http.MethodGet, "/swarm/unlockkey", nil, &ans); err != nil {
				return err
			}
			if ans.UnlockKey == "" {
				return errors.New("autolock is off: this cluster has no unlock key")
			}
			fmt.Fprintln(out, ans.UnlockKey)
			return nil
		}}
	socketFlags(cmd, cfg)
	return cmd
}

func versionCmd(out io.Writer) *cobra.Command {
	return &cobra.Command{Use: "version", Short: "Print shoald's version", Args: cobra.NoArgs, Run: func(cmd *cobra.Command, args []string) {
		v := "(devel)"
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
			v = bi.Main.Version
		}
		fmt.Fprintln(out, "shoald", v)
	}}
}

// errNoDaemon is returned by dockerCall when no shoald answers on the
// socket.
var errNoDaemon = errors.New("no shoald answers on the socket")

// dockerCall calls a running shoald's Docker API on its unix socket.
func dockerCall(ctx context.Context, socket, method, path string, body, out any) error {
	if socket == "" {
		return errors.New("no Docker API socket (--docker-socket)")
	}
	hc := &http.Client{Timeout: time.Minute, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	}}}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://shoald"+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		var ne *net.OpError
		if errors.As(err, &ne) && ne.Op == "dial" {
			return fmt.Errorf("%w %s (is it running? --data-dir, --docker-socket)", errNoDaemon, socket)
		}
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= 300 {
		var e struct{ Message string }
		if json.Unmarshal(raw, &e) == nil && e.Message != "" {
			return errors.New(e.Message)
		}
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}
