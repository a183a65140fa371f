package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/shoalproject/shoal/swarm"
)

func recoverCmd(out io.Writer) *cobra.Command {
	var dataDir, unlockKey string
	var force, yes bool
	cmd := &cobra.Command{Use: "recover --force-new-cluster --yes", Short: "Rebuild a cluster that lost its quorum for good from this manager's data (shoald stopped)",
		Long: `recover --force-new-cluster makes this manager the only voter of its
cluster, keeping every object (services, secrets, nodes, tasks): the way out
when the other managers are dead for good and the survivor has no quorum
(two managers without an arbiter, one of them lost). It is Docker's
"swarm init --force-new-cluster", done offline: stop this node's shoald,
run recover, then "shoald run" starts the one-manager cluster.

Only when the other managers (and arbiters) will never come back with
their data: one that does is no longer in the cluster, and the cluster
refuses to take it back; wipe its data dir and join it again with a join
token. Afterwards remove the dead managers (docker node rm --force) and add
a manager or an arbiter again, since one manager tolerates no failure.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !force {
				return errors.New("--force-new-cluster: required (it is the one recovery recover does)")
			}
			if !yes {
				return errors.New("--yes: required, to say that the other managers are dead for good: a manager that comes back with its data after this is out of the cluster and must be wiped and joined again")
			}
			if dataDir == "" {
				return errors.New("--data-dir: required")
			}
			lock, err := lockDir(dataDir) // refuses while a shoald runs on it
			if err != nil {
				return err
			}
			defer lock.Close()
			n := &swarm.Node{Dir: dataDir, UnlockWith: unlockKey, Logger: newLogger(cmd.ErrOrStderr(), "warn", "text")}
			r, err := n.ForceNewCluster(cmd.Context())
			if errors.Is(err, swarm.ErrLocked) || errors.Is(err, swarm.ErrBadUnlockKey) {
				return fmt.Errorf("--unlock-key (or %s): %w", unlockKeyEnv, err)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "Recovered: manager %s (%s) is now the only voter of its cluster; its data is kept.\n", r.NodeID, r.Addr)
			fmt.Fprintln(out, "Raft configuration before:")
			for _, s := range r.Before {
				role := "non-voter"
				if s.Voter {
					role = "voter"
				}
				mark := "removed"
				if s.ID == r.NodeID {
					mark = "kept"
				}
				fmt.Fprintf(out, "    %s  %s  %s  (%s)\n", s.ID, s.Address, role, mark)
			}
			fmt.Fprintf(out, "\nNext: shoald run --data-dir %s ...   (then remove the dead managers with `docker node rm --force`, and add a manager or an arbiter)\n", dataDir)
			return nil
		}}
	cmd.Flags().BoolVar(&force, "force-new-cluster", false, "make this manager the only voter of its cluster, from its data")
	cmd.Flags().BoolVar(&yes, "yes", false, "confirm that the other managers are dead for good")
	cmd.Flags().StringVarP(&dataDir, "data-dir", "d", defaultDataDir, "the manager's data dir (its shoald must be stopped)")
	cmd.Flags().StringVar(&unlockKey, "unlock-key", "", "unlock key of an autolocked manager (or set "+unlockKeyEnv+")")
	cmd.PreRun = func(cmd *cobra.Command, args []string) {
		if unlockKey == "" {
			unlockKey = os.Getenv(unlockKeyEnv)
		}
	}
	return cmd
}
