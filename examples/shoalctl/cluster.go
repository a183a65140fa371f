package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoalproject/shoal/swarm/api"
)

func clusterCmd(c *cli) *cobra.Command {
	cmd := &cobra.Command{Use: "cluster", Short: "Show or change the cluster's configuration"}
	inspect := &cobra.Command{Use: "inspect", Short: "Show the cluster (JSON)", Args: exactArgs(0), RunE: func(cmd *cobra.Command, args []string) error {
		cl, err := c.connect()
		if err != nil {
			return err
		}
		ctx, cancel := c.ctx(cmd)
		defer cancel()
		cluster, err := cl.Cluster(ctx)
		if err != nil {
			return err
		}
		return c.printJSON(cluster)
	}}
	var history int
	var autolock bool
	var heartbeat, certExpiry time.Duration
	update := &cobra.Command{Use: "update [OPTIONS]", Short: "Change the cluster's configuration", Args: exactArgs(0), RunE: func(cmd *cobra.Command, args []string) error {
		cl, err := c.connect()
		if err != nil {
			return err
		}
		ctx, cancel := c.ctx(cmd)
		defer cancel()
		changed := cmd.Flags().Changed
		if !changed("task-history-limit") && !changed("autolock") && !changed("dispatcher-heartbeat") && !changed("cert-expiry") {
			return fmt.Errorf("nothing to change: give --task-history-limit, --autolock, --dispatcher-heartbeat or --cert-expiry")
		}
		for try := 0; ; try++ {
			cur, err := cl.Cluster(ctx)
			if err != nil {
				return err
			}
			spec := cur.Spec
			if changed("task-history-limit") {
				spec.Orchestration.TaskHistoryRetentionLimit = history
			}
			if changed("autolock") {
				spec.Encryption.AutoLockManagers = autolock
			}
			if changed("dispatcher-heartbeat") {
				spec.Dispatcher.HeartbeatPeriod = heartbeat
			}
			if changed("cert-expiry") {
				spec.CAConfig.NodeCertExpiry = certExpiry
			}
			_, err = cl.UpdateCluster(ctx, cur.Version, spec)
			if err == nil {
				break
			}
			if try >= 5 || !isConflict(err) {
				return err
			}
		}
		fmt.Fprintln(c.out, "Cluster updated.")
		if changed("autolock") && autolock {
			fmt.Fprintln(c.out, "Autolock is on: each manager's unlock key is printed by `shoald unlock-key` on it; keep it safe.")
		}
		return nil
	}}
	f := update.Flags()
	f.IntVar(&history, "task-history-limit", 5, "ended tasks kept per slot")
	f.BoolVar(&autolock, "autolock", false, "keep the managers' Raft key off their disks (a restarted manager needs its unlock key)")
	f.DurationVar(&heartbeat, "dispatcher-heartbeat", 0, "workers' heartbeat period")
	f.DurationVar(&certExpiry, "cert-expiry", 0, "validity of node certificates")
	cmd.AddCommand(inspect, update)
	return cmd
}

func joinTokenCmd(c *cli) *cobra.Command {
	var rotate, quiet bool
	cmd := &cobra.Command{Use: "join-token [--rotate] [-q] worker|manager", Short: "Print (or rotate) the token nodes join with", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			role := api.NodeRole(args[0])
			if role != api.RoleWorker && role != api.RoleManager {
				return fmt.Errorf("%q: want worker or manager", args[0])
			}
			cl, err := c.connect()
			if err != nil {
				return err
			}
			ctx, cancel := c.ctx(cmd)
			defer cancel()
			cluster, err := cl.Cluster(ctx)
			if rotate && err == nil {
				cluster, err = cl.RotateJoinToken(ctx, role)
			}
			if err != nil {
				return err
			}
			tok := cluster.JoinTokens.Worker
			if role == api.RoleManager {
				tok = cluster.JoinTokens.Manager
			}
			if quiet || c.format == "json" {
				if c.format == "json" {
					return c.printJSON(map[string]string{"role": string(role), "token": tok})
				}
				fmt.Fprintln(c.out, tok)
				return nil
			}
			if rotate {
				fmt.Fprintf(c.out, "Successfully rotated %s join token.\n\n", role)
			}
			addr := ""
			if len(cl.Addrs) > 0 {
				addr = cl.Addrs[0]
			}
			fmt.Fprintf(c.out, "To add a %s to this cluster, run the following command:\n\n    shoald join --token %s %s\n\n", role, tok, addr)
			return nil
		}}
	cmd.Flags().BoolVar(&rotate, "rotate", false, "replace the token (nodes that joined stay)")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print the token only")
	return cmd
}

func eventsCmd(c *cli) *cobra.Command {
	var since uint64
	var types []string
	cmd := &cobra.Command{Use: "events [--since INDEX] [--type service,task,...]", Short: "Stream changes of cluster objects until Ctrl-C", Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, t := range types {
				switch t {
				case "service", "task", "node", "network", "secret", "config", "cluster":
				default:
					return fmt.Errorf("--type %q: want service, task, node, network, secret, config or cluster", t)
				}
			}
			cl, err := c.connect()
			if err != nil {
				return err
			}
			ch, err := cl.Events(cmd.Context(), since, types...)
			if err != nil {
				return err
			}
			for ev := range ch {
				if c.format == "json" {
					b, _ := json.Marshal(ev)
					fmt.Fprintln(c.out, string(b))
					continue
				}
				name := ""
				var o struct {
					Spec struct {
						Name string `json:"name"`
					} `json:"spec"`
					Status struct {
						State string `json:"state"`
					} `json:"status"`
				}
				if json.Unmarshal(ev.Object, &o) == nil {
					name = o.Spec.Name
					if o.Status.State != "" {
						name += " state=" + o.Status.State
					}
				}
				fmt.Fprintf(c.out, "%s %d %s %s %s %s\n", time.Now().Format(time.RFC3339), ev.Index, ev.Type, ev.Action, ev.ID, name)
			}
			if cmd.Context().Err() == nil {
				return fmt.Errorf("the event stream ended (the manager went away): resume with --since INDEX")
			}
			return nil
		}}
	cmd.Flags().Uint64Var(&since, "since", 0, "resume after this index (0: from now)")
	cmd.Flags().StringSliceVar(&types, "type", nil, "only these types (service, task, node, network, secret, config, cluster)")
	return cmd
}
