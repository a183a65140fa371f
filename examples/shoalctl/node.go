package main

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

func nodeCmd(c *cli) *cobra.Command {
	cmd := &cobra.Command{Use: "node", Short: "Manage nodes"}
	ls := &cobra.Command{Use: "ls", Aliases: []string{"list"}, Short: "List nodes", Args: exactArgs(0), RunE: func(cmd *cobra.Command, args []string) error {
		cl, err := c.connect()
		if err != nil {
			return err
		}
		ctx, cancel := c.ctx(cmd)
		defer cancel()
		nodes, err := cl.Nodes(ctx, swarm.Filter{})
		if err != nil {
			return err
		}
		slices.SortFunc(nodes, func(a, b *api.Node) int {
			return strings.Compare(a.Description.Hostname+a.ID, b.Description.Hostname+b.ID)
		})
		var rows [][]string
		for _, n := range nodes {
			ms := ""
			if n.ManagerStatus != nil {
				ms = string(n.ManagerStatus.Reachability)
				if n.ManagerStatus.Leader {
					ms = "Leader"
				}
			}
			rows = append(rows, []string{n.ID, n.Description.Hostname, n.Status.Addr, string(n.Spec.Role), string(n.Status.State), string(n.Spec.Availability), ms})
		}
		return c.table(nodes, []string{"ID", "HOSTNAME", "ADDRESS", "ROLE", "STATUS", "AVAILABILITY", "MANAGER STATUS"}, rows)
	}}
	inspect := &cobra.Command{Use: "inspect NODE...", Short: "Show nodes in full (JSON)", Args: minArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
		cl, err := c.connect()
		if err != nil {
			return err
		}
		ctx, cancel := c.ctx(cmd)
		defer cancel()
		var out []*api.Node
		for _, id := range args {
			n, err := cl.Node(ctx, id)
			if err != nil {
				return err
			}
			out = append(out, n)
		}
		return c.printJSON(out)
	}}
	var avail, role string
	var labelAdd, labelRm []string
	update := &cobra.Command{Use: "update [--availability active|pause|drain] [--role worker|manager] [--label-add K=V] [--label-rm K] NODE", Short: "Change a node",
		Args: exactArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
			add, err := labelsOf("label-add", labelAdd)
			if err != nil {
				return err
			}
			if avail != "" && !slices.Contains([]string{"active", "pause", "drain"}, avail) {
				return fmt.Errorf("--availability %q: want active, pause or drain", avail)
			}
			if role != "" && role != "worker" && role != "manager" {
				return fmt.Errorf("--role %q: want worker or manager", role)
			}
			return editNode(c, cmd, args[0], func(s *api.NodeSpec) {
				if avail != "" {
					s.Availability = api.NodeAvailability(avail)
				}
				if role != "" {
					s.Role = api.NodeRole(role)
				}
				for k, v := range add {
					if s.Labels == nil {
						s.Labels = map[string]string{}
					}
					s.Labels[k] = v
				}
				for _, k := range labelRm {
					delete(s.Labels, k)
				}
			})
		}}
	update.Flags().StringVar(&avail, "availability", "", "active, pause or drain")
	update.Flags().StringVar(&role, "role", "", "worker or manager")
	update.Flags().StringArrayVar(&labelAdd, "label-add", nil, "add or change a label (key=value)")
	update.Flags().StringArrayVar(&labelRm, "label-rm", nil, "remove a label (key)")
	promote := &cobra.Command{Use: "promote NODE...", Short: "Make nodes managers", Args: minArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
		for _, id := range args {
			if err := editNode(c, cmd, id, func(s *api.NodeSpec) { s.Role = api.RoleManager }); err != nil {
				return err
			}
			fmt.Fprintf(c.out, "Node %s promoted to a manager in the cluster.\n", id)
		}
		return nil
	}}
	demote := &cobra.Command{Use: "demote NODE...", Short: "Make managers workers", Args: minArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
		for _, id := range args {
			if err := editNode(c, cmd, id, func(s *api.NodeSpec) { s.Role = api.RoleWorker }); err != nil {
				return err
			}
			fmt.Fprintf(c.out, "Manager %s demoted in the cluster.\n", id)
		}
		return nil
	}}
	var force bool
	rm := &cobra.Command{Use: "rm [-f] NODE...", Aliases: []string{"remove"}, Short: "Remove nodes from the cluster", Args: minArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
		cl, err := c.connect()
		if err != nil {
			return err
		}
		ctx, cancel := c.ctx(cmd)
		defer cancel()
		for _, id := range args {
			if err := cl.RemoveNode(ctx, id, force); err != nil {
				return err
			}
			fmt.Fprintln(c.out, id)
		}
		return nil
	}}
	rm.Flags().BoolVarP(&force, "force", "f", false, "remove a node that is not down")
	cmd.AddCommand(ls, inspect, update, promote, demote, rm)
	return cmd
}

// editNode changes a node's spec, reading it again on a conflict.
func editNode(c *cli, cmd *cobra.Command, id string, change func(*api.NodeSpec)) error {
	cl, err := c.connect()
	if err != nil {
		return err
	}
	ctx, cancel := c.ctx(cmd)
	defer cancel()
	for try := 0; ; try++ {
		n, err := cl.Node(ctx, id)
		if err != nil {
			return err
		}
		spec := n.Spec
		if spec.Labels != nil {
			spec.Labels = cloneMap(spec.Labels)
		}
		change(&spec)
		_, err = cl.UpdateNode(ctx, n.ID, n.Version, spec)
		if err == nil || try >= 5 || !isConflict(err) {
			return err
		}
	}
}

func cloneMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// isConflict reports an update refused because the object changed first.
func isConflict(err error) bool { return errors.Is(err, raftstore.ErrConflict) }
