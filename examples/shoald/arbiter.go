package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/ca"
)

// `shoald arbiter` runs arbiters: a third Raft vote for clusters of two
// managers (swarm.Arbiter), no tasks, no API. One process may serve
// several clusters, like corosync's qnetd: a data dir and a port each.

// defaultArbiterDir is an arbiter's data dir when none is given.
const defaultArbiterDir = "/var/lib/shoal-arbiter"

// arbiterConfig is what `shoald arbiter` runs with: flags, or their names
// as keys of a config file (data-dir may be a list).
type arbiterConfig struct {
	File          string
	DataDirs      []string
	ListenAddr    string
	AdvertiseAddr string
	AutoLock      bool
	UnlockKeys    []string
	LogLevel      string
	LogFormat     string
	MetricsAddr   string
}

func (c *arbiterConfig) addFlags(fs *pflag.FlagSet, several bool) {
	fs.StringVarP(&c.File, "config", "c", "", "config file (YAML or JSON) with the flags' names as keys (data-dir: a list); flags given here win")
	if several {
		fs.StringArrayVarP(&c.DataDirs, "data-dir", "d", nil, "an arbiter's data dir, one per cluster; repeat it to serve several clusters from this process (default "+defaultArbiterDir+")")
		fs.StringArrayVar(&c.UnlockKeys, "unlock-key", nil, "unlock key of an arbiter joined with --autolock (or set "+unlockKeyEnv+"); repeat it for several: each dir takes the one that opens it")
	} else {
		fs.StringArrayVarP(&c.DataDirs, "data-dir", "d", nil, "the arbiter's data dir for this cluster: its identity, certificates and Raft data (default "+defaultArbiterDir+")")
		fs.StringVar(&c.ListenAddr, "listen-addr", defaultListenAddr, "the arbiter's Raft port for this cluster (host:port, or :port; one port per cluster); a restarted arbiter keeps the one it first had")
		fs.StringVar(&c.AdvertiseAddr, "advertise-addr", "", "how the managers reach this arbiter (host or host:port); default: the listen address's host")
		fs.BoolVar(&c.AutoLock, "autolock", false, "seal the arbiter's Raft data with a key printed once; a restarted arbiter starts only with it (arbiter run --unlock-key)")
	}
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "text", "text or json")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", "", "host:port serving Prometheus metrics on /metrics; empty for none")
	fs.SortFlags = false
}

// load reads the config file into the flags not given and checks them.
func (c *arbiterConfig) load(fs *pflag.FlagSet) error {
	if err := loadFile(fs, c.File); err != nil {
		return err
	}
	if len(c.DataDirs) == 0 {
		c.DataDirs = []string{defaultArbiterDir}
	}
	if k := os.Getenv(unlockKeyEnv); k != "" && fs.Lookup("unlock-key") != nil {
		c.UnlockKeys = append(c.UnlockKeys, k)
	}
	var errs []error
	seen := map[string]bool{}
	for _, d := range c.DataDirs {
		if d == "" {
			errs = append(errs, errors.New("--data-dir: empty"))
		} else if seen[d] {
			errs = append(errs, fmt.Errorf("--data-dir %s: given twice (one dir per cluster)", d))
		}
		seen[d] = true
	}
	if fs.Lookup("listen-addr") != nil {
		errs = append(errs, checkAddrs(c.ListenAddr, c.AdvertiseAddr)...)
	}
	errs = append(errs, checkLogAndMetrics(c.LogLevel, c.LogFormat, c.MetricsAddr)...)
	return errors.Join(errs...)
}

func arbiterCmd(out io.Writer) *cobra.Command {
	cmd := &cobra.Command{Use: "arbiter", Short: "Run an arbiter: the third Raft vote of a cluster of two managers (no tasks, no API)",
		Long: `An arbiter is a third Raft voter for a cluster of two managers, on any small
machine: it runs no tasks and serves no API, and hands leadership to a
manager whenever it wins an election. Join it with the cluster's arbiter
token (shoalctl join-token arbiter on a manager):

    shoald arbiter join --token SWMTKN-1-... --data-dir /var/lib/shoal-arbiter/site-a 192.0.2.10:2377

and after a restart run it again from its data dir. One process serves
several clusters, a data dir (and port) each:

    shoald arbiter run --data-dir /var/lib/shoal-arbiter/site-a --data-dir /var/lib/shoal-arbiter/site-b`}
	cmd.AddCommand(arbiterJoinCmd(out), arbiterRunCmd(out))
	return cmd
}

func arbiterJoinCmd(out io.Writer) *cobra.Command {
	cfg := &arbiterConfig{}
	var token string
	cmd := &cobra.Command{Use: "join --token TOKEN MANAGER:PORT", Short: "Join a cluster as its arbiter through one of its managers, and run",
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := cfg.load(cmd.Flags()); err != nil {
				return err
			}
			if len(cfg.DataDirs) != 1 {
				return errors.New("--data-dir: join takes one data dir (one cluster); run serves several")
			}
			if token == "" {
				return errors.New("--token: required (shoalctl join-token arbiter, on a manager, prints it)")
			}
			if _, err := ca.ParseToken(token); err != nil {
				return fmt.Errorf("--token: %v", err)
			}
			addr := args[0]
			if _, _, err := net.SplitHostPort(addr); err != nil {
				addr = net.JoinHostPort(addr, fmt.Sprint(swarm.DefaultManagementPort))
			}
			s := &arbiterServer{cfg: cfg, log: newLogger(cmd.ErrOrStderr(), cfg.LogLevel, cfg.LogFormat), out: out}
			return s.serve(cmd.Context(), func(ctx context.Context, a *swarm.Arbiter) error {
				a.ListenAddr, a.AdvertiseAddr, a.AutoLock = cfg.ListenAddr, cfg.AdvertiseAddr, cfg.AutoLock
				jctx, cancel := context.WithTimeout(ctx, time.Minute)
				defer cancel()
				if err := a.Join(jctx, token, addr); err != nil {
					return fmt.Errorf("joining through %s: %w", addr, err)
				}
				fmt.Fprintf(out, "This arbiter joined the cluster (arbiter %s, Raft port %s). After a restart: shoald arbiter run --data-dir %s\n", a.ID(), a.Addr(), a.Dir)
				if cfg.AutoLock {
					k, err := a.UnlockKey()
					if err != nil {
						return err
					}
					fmt.Fprintf(out, "\nAutolock is on. Restart this arbiter with:\n\n    shoald arbiter run --data-dir %s --unlock-key %s\n\nKeep the key in a password manager: without it a restarted arbiter cannot read its data.\n", a.Dir, k)
				}
				return nil
			})
		}}
	cmd.Args = func(cmd *cobra.Command, args []string) error {
		if len(args) != 1 {
			return errors.New("arbiter join takes one argument, a manager's address (host:port): shoald arbiter join --token TOKEN MANAGER:2377")
		}
		return nil
	}
	cmd.Flags().StringVar(&token, "token", "", "the cluster's arbiter join token (SWMTKN-1-...); manager and worker tokens are refused")
	cfg.addFlags(cmd.Flags(), false)
	return cmd
}

func arbiterRunCmd(out io.Writer) *cobra.Command {
	cfg := &arbiterConfig{}
	cmd := &cobra.Command{Use: "run", Short: "Start arbiters again from their data dirs (one per cluster)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := cfg.load(cmd.Flags()); err != nil {
				return err
			}
			s := &arbiterServer{cfg: cfg, log: newLogger(cmd.ErrOrStderr(), cfg.LogLevel, cfg.LogFormat), out: out}
			return s.serve(cmd.Context(), func(ctx context.Context, a *swarm.Arbiter) error {
				// Each dir takes the first key that opens it.
				keys := append([]string{""}, cfg.UnlockKeys...)
				var err error
				for _, k := range keys {
					a.UnlockWith = k
					if err = a.Start(ctx); err == nil || !errors.Is(err, swarm.ErrLocked) && !errors.Is(err, swarm.ErrBadUnlockKey) {
						break
					}
				}
				if errors.Is(err, swarm.ErrLocked) || errors.Is(err, swarm.ErrBadUnlockKey) {
					return fmt.Errorf("--data-dir %s: --unlock-key (or %s): %w", a.Dir, unlockKeyEnv, err)
				}
				if err != nil {
					return fmt.Errorf("--data-dir %s: %w", a.Dir, err)
				}
				return nil
			})
		}}
	cfg.addFlags(cmd.Flags(), true)
	return cmd
}

// arbiterServer runs the arbiters of one shoald process until SIGTERM.
type arbiterServer struct {
	cfg      *arbiterConfig
	log      *slog.Logger
	out      io.Writer
	arbiters []*swarm.Arbiter
}

// serve locks each data dir, starts an arbiter in each with start, serves
// the metrics and waits for ctx's end (SIGINT, SIGTERM), then shuts every
// arbiter down. A failed start stops the arbiters already started.
func (s *arbiterServer) serve(ctx context.Context, start func(ctx context.Context, a *swarm.Arbiter) error) (err error) {
	for _, dir := range s.cfg.DataDirs {
		lock, err := lockDir(dir)
		if err != nil {
			return err
		}
		defer lock.Close()
	}
	defer func() {
		if err != nil {
			for _, a := range s.arbiters {
				a.Close()
			}
		}
	}()
	for _, dir := range s.cfg.DataDirs {
		a := &swarm.Arbiter{Dir: dir, Logger: s.log.With("data_dir", dir)}
		if err := start(ctx, a); err != nil {
			return err
		}
		s.arbiters = append(s.arbiters, a)
		s.log.Info("shoald: arbiter started", "arbiter", a.ID(), "addr", a.Addr(), "data_dir", dir)
		go func() {
			select {
			case <-a.Ready():
				s.log.Info("shoald: arbiter votes", "arbiter", a.ID(), "data_dir", dir)
			case <-ctx.Done():
			}
		}()
	}
	var srv *http.Server
	if addr := s.cfg.MetricsAddr; addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("--metrics-addr %s: %w", addr, err)
		}
		srv = &http.Server{Handler: metricsHandler(arbiterCollector{s}), ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(ln)
		s.log.Info("shoald: metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	}
	<-ctx.Done()
	s.log.Info("shoald: shutting down the arbiters (a leading arbiter hands leadership over first)")
	if srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		srv.Shutdown(sctx)
		cancel()
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, len(s.arbiters))
	for i, a := range s.arbiters {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = a.Shutdown(sctx) }()
	}
	wg.Wait()
	s.log.Info("shoald: stopped")
	return errors.Join(errs...)
}

var (
	descArbiter       = desc("arbiter_info", "An arbiter this process runs: its ID, data dir and Raft state.", "arbiter", "data_dir", "state")
	descArbiterVotes  = desc("arbiter_votes", "1 once the arbiter votes in its cluster's Raft configuration.", "arbiter")
	descArbiterTerm   = desc("arbiter_raft_term", "The arbiter's Raft term.", "arbiter")
	descArbiterCommit = desc("arbiter_raft_commit_index", "The arbiter's Raft commit index.", "arbiter")
	descArbiterApply  = desc("arbiter_raft_applied_index", "The arbiter's Raft applied index.", "arbiter")
	descArbiterLead   = desc("arbiter_raft_leader", "1 while the arbiter leads (it hands leadership over).", "arbiter")
	descArbiterChange = desc("arbiter_raft_leader_changes_total", "Leader changes the arbiter observed since it started.", "arbiter")
)

type arbiterCollector struct{ s *arbiterServer }

func (c arbiterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descArbiter, descArbiterVotes, descArbiterTerm, descArbiterCommit, descArbiterApply, descArbiterLead, descArbiterChange} {
		ch <- d
	}
}

func (c arbiterCollector) Collect(ch chan<- prometheus.Metric) {
	for _, a := range c.s.arbiters {
		st := a.Store()
		if st == nil {
			continue
		}
		id, raft := a.ID(), st.Stats()
		votes := false
		select {
		case <-a.Ready():
			votes = true
		default:
		}
		gauge(ch, descArbiter, 1, id, a.Dir, raft.State)
		gauge(ch, descArbiterVotes, b2f(votes), id)
		gauge(ch, descArbiterTerm, float64(raft.Term), id)
		gauge(ch, descArbiterCommit, float64(raft.CommitIndex), id)
		gauge(ch, descArbiterApply, float64(raft.AppliedIndex), id)
		gauge(ch, descArbiterLead, b2f(st.IsLeader()), id)
		counter(ch, descArbiterChange, float64(raft.LeaderChanges), id)
	}
}
