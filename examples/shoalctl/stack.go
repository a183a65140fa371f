package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/stack"
)

func stackCmd(c *cli) *cobra.Command {
	cmd := &cobra.Command{Use: "stack", Short: "Manage stacks (Compose v3 files)"}
	var files []string
	var prune, detach bool
	deploy := &cobra.Command{Use: "deploy -c FILE [-c FILE...] STACK", Short: "Deploy a stack, or update it in place", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if len(files) == 0 {
				return errors.New("-c/--compose-file: at least one Compose file")
			}
			var fs []stack.File
			for _, f := range files {
				if f == "-" {
					sf, err := stack.ReadFile("stdin", cmd.InOrStdin())
					if err != nil {
						return err
					}
					fs = append(fs, sf)
					continue
				}
				fs = append(fs, stack.File{Name: f})
			}
			ctx, cancel := c.ctx(cmd)
			defer cancel()
			st, err := stack.Load(ctx, name, fs, stack.Options{Env: stack.Environ(os.Environ())})
			if err != nil {
				return err
			}
			for _, w := range st.Warnings {
				fmt.Fprintln(c.err, "warning:", w)
			}
			cl, err := c.connect()
			if err != nil {
				return err
			}
			actions, err := stack.Deploy(ctx, cl, st, stack.DeployOptions{Prune: prune})
			for _, a := range actions {
				fmt.Fprintln(c.out, a)
			}
			if err != nil || detach {
				return err
			}
			for _, s := range st.Services {
				svc, err := cl.Service(ctx, s.Name)
				if err != nil {
					return err
				}
				if svc.Spec.Mode.IsJob() {
					continue
				}
				if err := c.progress(cmd, cl, svc.ID); err != nil {
					return err
				}
			}
			return nil
		}}
	deploy.Flags().StringArrayVarP(&files, "compose-file", "c", nil, "Compose file (- for stdin); several are merged in order")
	deploy.Flags().BoolVar(&prune, "prune", false, "remove the stack's services the files no longer have")
	deploy.Flags().BoolVarP(&detach, "detach", "d", true, "return once deployed (--detach=false shows the services converge)")

	ls := &cobra.Command{Use: "ls", Aliases: []string{"list"}, Short: "List stacks", Args: exactArgs(0), RunE: func(cmd *cobra.Command, args []string) error {
		cl, err := c.connect()
		if err != nil {
			return err
		}
		ctx, cancel := c.ctx(cmd)
		defer cancel()
		sums, err := stack.List(ctx, cl)
		if err != nil {
			return err
		}
		var rows [][]string
		for _, s := range sums {
			rows = append(rows, []string{s.Name, fmt.Sprint(s.Services)})
		}
		return c.table(sums, []string{"NAME", "SERVICES"}, rows)
	}}
	var all bool
	ps := &cobra.Command{Use: "ps STACK", Short: "List a stack's tasks", Args: exactArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
		cl, err := c.connect()
		if err != nil {
			return err
		}
		ctx, cancel := c.ctx(cmd)
		defer cancel()
		svcs, err := stack.Services(ctx, cl, args[0])
		if err != nil {
			return err
		}
		if len(svcs) == 0 {
			return fmt.Errorf("nothing found in stack: %s", args[0])
		}
		tasks, err := stack.Tasks(ctx, cl, args[0])
		if err != nil {
			return err
		}
		names := map[string]string{}
		for _, s := range svcs {
			names[s.ID] = s.Spec.Name
		}
		return printTasks(c, cmd, tasks, names, all)
	}}
	ps.Flags().BoolVarP(&all, "all", "a", true, "show ended tasks too")
	services := &cobra.Command{Use: "services STACK", Short: "List a stack's services", Args: exactArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
		cl, err := c.connect()
		if err != nil {
			return err
		}
		ctx, cancel := c.ctx(cmd)
		defer cancel()
		svcs, err := stack.Services(ctx, cl, args[0])
		if err != nil {
			return err
		}
		if len(svcs) == 0 {
			return fmt.Errorf("nothing found in stack: %s", args[0])
		}
		tasks, err := cl.Tasks(ctx, swarm.Filter{DesiredStates: []string{"running"}})
		if err != nil {
			return err
		}
		return printServices(c, svcs, tasks)
	}}
	rm := &cobra.Command{Use: "rm STACK...", Aliases: []string{"remove", "down"}, Short: "Remove stacks: their services, networks, secrets and configs", Args: minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.connect()
			if err != nil {
				return err
			}
			ctx, cancel := c.ctx(cmd)
			defer cancel()
			var errs []error
			for _, name := range args {
				actions, err := stack.Remove(ctx, cl, name)
				for _, a := range actions {
					fmt.Fprintln(c.out, a)
				}
				if err != nil {
					errs = append(errs, err)
				} else if len(actions) == 0 {
					fmt.Fprintf(c.out, "Nothing found in stack: %s\n", name)
				}
			}
			return errors.Join(errs...)
		}}
	cmd.AddCommand(deploy, ls, ps, services, rm)
	return cmd
}
