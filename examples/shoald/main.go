// Command shoald is the Shoal node daemon, built on swarm.Node: it makes a
// cluster (init), joins one (join) or restarts a node from its data dir
// (run), then runs the node's roles (manager, worker with containerd,
// data plane) until SIGINT or SIGTERM. It serves the Docker Engine API's
// swarm subset on a unix socket (DOCKER_HOST=unix://DATA_DIR/docker.sock)
// and Prometheus metrics. Run as root:
//
//	shoald init --advertise-addr 192.0.2.10
//	shoald join --token SWMTKN-1-... 192.0.2.10:2377
//	shoald run                       # after a restart
//	shoald leave                     # the node leaves the cluster, its tasks stop
//	shoald arbiter join --token SWMTKN-1-... 192.0.2.10:2377   # a third vote for two managers
//	shoald recover --force-new-cluster --yes   # the last manager alive makes a cluster alone
//
// A shutdown (SIGTERM) leaves a worker's tasks running: the next `shoald
// run` adopts them. Flags can also come from a YAML or JSON file
// (--config) whose keys are the flags' names.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "shoald:", err)
		os.Exit(1)
	}
}

// run runs shoald with the command line args.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "shoald",
		Short: "The Shoal node daemon",
		Long: `shoald runs a Shoal node: a manager (Raft, the control API, the CA) and/or
a worker (tasks on containerd, overlay networks, the routing mesh).

Start with "shoald init" on the first node, "shoald join" on the others; after
a restart, "shoald run" starts the node again from its data dir.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(initCmd(stdout), joinCmd(stdout), runCmd(stdout), leaveCmd(stdout), unlockCmd(stdout), unlockKeyCmd(stdout), arbiterCmd(stdout), recoverCmd(stdout), versionCmd(stdout))
	return root
}

// daemonCmd is a command that runs the daemon, with the daemon's flags.
func daemonCmd(use, short string, cfg *config, runE func(cmd *cobra.Command, args []string) error) *cobra.Command {
	cmd := &cobra.Command{Use: use, Short: short, RunE: func(cmd *cobra.Command, args []string) error {
		if err := cfg.load(cmd.Flags()); err != nil {
			return err
		}
		return runE(cmd, args)
	}}
	cfg.addFlags(cmd.Flags())
	cmd.Flags().SortFlags = false
	return cmd
}
