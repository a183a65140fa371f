package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// readData reads a secret's or config's data from a file, or stdin ("-").
func readData(cmd *cobra.Command, file string) ([]byte, error) {
	var r io.Reader
	if file == "-" {
		r = cmd.InOrStdin()
	} else {
		f, err := os.Open(file)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, api.MaxSecretSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > api.MaxSecretSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", file, api.MaxSecretSize)
	}
	return b, nil
}

// dataObject is what secret and config commands share: O is the object
// (api.Secret or api.Config).
type dataObject[O any] struct {
	kind   string
	create func(cl *swarm.Client, ctx context.Context, a api.Annotations, data []byte) (*O, error)
	list   func(cl *swarm.Client, ctx context.Context, f swarm.Filter) ([]*O, error)
	get    func(cl *swarm.Client, ctx context.Context, idOrName string) (*O, error)
	remove func(cl *swarm.Client, ctx context.Context, idOrName string) error
	// shown is what inspect and --format json print (a secret without its
	// data), with the object's meta and name for the table.
	shown func(*O) (v any, m api.Meta, name string)
}

func secretCmd(c *cli) *cobra.Command {
	return dataObjectCmd(c, dataObject[api.Secret]{kind: "secret",
		create: func(cl *swarm.Client, ctx context.Context, a api.Annotations, data []byte) (*api.Secret, error) {
			return cl.CreateSecret(ctx, api.SecretSpec{Annotations: a, Data: data})
		},
		list: (*swarm.Client).Secrets, get: (*swarm.Client).Secret, remove: (*swarm.Client).RemoveSecret,
		shown: func(s *api.Secret) (any, api.Meta, string) { return s.Redacted(), s.Meta, s.Spec.Name },
	})
}

func configCmd(c *cli) *cobra.Command {
	return dataObjectCmd(c, dataObject[api.Config]{kind: "config",
		create: func(cl *swarm.Client, ctx context.Context, a api.Annotations, data []byte) (*api.Config, error) {
			return cl.CreateConfig(ctx, api.ConfigSpec{Annotations: a, Data: data})
		},
		list: (*swarm.Client).Configs, get: (*swarm.Client).Config, remove: (*swarm.Client).RemoveConfig,
		shown: func(c *api.Config) (any, api.Meta, string) { return c, c.Meta, c.Spec.Name },
	})
}

func dataObjectCmd[O any](c *cli, o dataObject[O]) *cobra.Command {
	cmd := &cobra.Command{Use: o.kind, Short: "Manage " + o.kind + "s"}
	var labels []string
	create := &cobra.Command{Use: "create [--label K=V] NAME FILE|-", Short: "Create a " + o.kind + " from a file or stdin", Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := labelsOf("label", labels)
			if err != nil {
				return err
			}
			data, err := readData(cmd, args[1])
			if err != nil {
				return err
			}
			return c.call(cmd, func(ctx context.Context, cl *swarm.Client) error {
				obj, err := o.create(cl, ctx, api.Annotations{Name: args[0], Labels: l}, data)
				if err != nil {
					return err
				}
				_, m, _ := o.shown(obj)
				fmt.Fprintln(c.out, m.ID)
				return nil
			})
		}}
	create.Flags().StringArrayVarP(&labels, "label", "l", nil, "label (key=value)")
	ls := &cobra.Command{Use: "ls", Aliases: []string{"list"}, Short: "List " + o.kind + "s", Args: exactArgs(0), RunE: func(cmd *cobra.Command, args []string) error {
		return c.call(cmd, func(ctx context.Context, cl *swarm.Client) error {
			all, err := o.list(cl, ctx, swarm.Filter{})
			if err != nil {
				return err
			}
			type row struct {
				v    any
				m    api.Meta
				name string
			}
			rows := make([]row, 0, len(all))
			for _, obj := range all {
				v, m, name := o.shown(obj)
				rows = append(rows, row{v, m, name})
			}
			slices.SortFunc(rows, func(a, b row) int { return strings.Compare(a.name, b.name) })
			vs, table := make([]any, 0, len(rows)), make([][]string, 0, len(rows))
			for _, r := range rows {
				vs = append(vs, r.v)
				table = append(table, metaRow(r.m, r.name))
			}
			return c.table(vs, []string{"ID", "NAME", "CREATED", "UPDATED"}, table)
		})
	}}
	inspect := &cobra.Command{Use: "inspect NAME...", Short: "Show " + o.kind + "s (JSON, without secrets' data)", Args: minArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
		return c.call(cmd, func(ctx context.Context, cl *swarm.Client) error {
			var out []any
			for _, n := range args {
				obj, err := o.get(cl, ctx, n)
				if err != nil {
					return err
				}
				v, _, _ := o.shown(obj)
				out = append(out, v)
			}
			return c.printJSON(out)
		})
	}}
	rm := &cobra.Command{Use: "rm NAME...", Aliases: []string{"remove"}, Short: "Remove " + o.kind + "s", Args: minArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
		return c.call(cmd, func(ctx context.Context, cl *swarm.Client) error {
			var errs []error
			for _, n := range args {
				if err := o.remove(cl, ctx, n); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", n, err))
					continue
				}
				fmt.Fprintln(c.out, n)
			}
			return errors.Join(errs...)
		})
	}}
	cmd.AddCommand(create, ls, inspect, rm)
	return cmd
}

func metaRow(m api.Meta, name string) []string {
	return []string{m.ID, name, ago(m.CreatedAt), ago(m.UpdatedAt)}
}

func networkCmd(c *cli) *cobra.Command {
	cmd := &cobra.Command{Use: "network", Short: "Manage overlay networks"}
	var driver, subnet, gateway, ipRange string
	var attachable, internal, encrypted bool
	var labels, opts, aux []string
	create := &cobra.Command{Use: "create [OPTIONS] NAME", Short: "Create an overlay network", Args: exactArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
		if driver != "overlay" {
			return fmt.Errorf("--driver %q: Shoal makes overlay networks only", driver)
		}
		l, err := labelsOf("label", labels)
		if err != nil {
			return err
		}
		for _, o := range opts {
			switch k, v, _ := strings.Cut(o, "="); k {
			case "encrypted":
				encrypted = v == "" || v == "true" || v == "1"
			default:
				return fmt.Errorf("--opt %q: the overlay driver takes encrypted", o)
			}
		}
		spec := api.NetworkSpec{Annotations: api.Annotations{Name: args[0], Labels: l}, Driver: driver, Attachable: attachable, Internal: internal, Encrypted: encrypted}
		if subnet != "" || gateway != "" || ipRange != "" || len(aux) > 0 {
			spec.IPAM = &api.IPAMConfig{Subnet: subnet, Gateway: gateway, IPRange: ipRange}
			if len(aux) > 0 {
				if spec.IPAM.AuxAddresses, err = labelsOf("aux-address", aux); err != nil {
					return err
				}
			}
		}
		cl, err := c.connect()
		if err != nil {
			return err
		}
		ctx, cancel := c.ctx(cmd)
		defer cancel()
		n, err := cl.CreateNetwork(ctx, spec)
		if err != nil {
			return err
		}
		fmt.Fprintln(c.out, n.ID)
		return nil
	}}
	f := create.Flags()
	f.StringVar(&driver, "driver", "overlay", "network driver (overlay)")
	f.BoolVar(&attachable, "attachable", false, "let standalone containers attach")
	f.BoolVar(&internal, "internal", false, "no route out of the network")
	f.BoolVar(&encrypted, "encrypted", false, "encrypt traffic between nodes (WireGuard)")
	f.StringArrayVarP(&opts, "opt", "o", nil, "driver option (encrypted)")
	f.StringVar(&subnet, "subnet", "", "subnet (default: one from the cluster's pool)")
	f.StringVar(&gateway, "gateway", "", "gateway address")
	f.StringVar(&ipRange, "ip-range", "", "hand out addresses from this range of the subnet only (CIDR)")
	f.StringArrayVar(&aux, "aux-address", nil, "an address of the subnet never handed out (host=IP)")
	f.StringArrayVarP(&labels, "label", "l", nil, "label (key=value)")
	ls := &cobra.Command{Use: "ls", Aliases: []string{"list"}, Short: "List networks", Args: exactArgs(0), RunE: func(cmd *cobra.Command, args []string) error {
		cl, err := c.connect()
		if err != nil {
			return err
		}
		ctx, cancel := c.ctx(cmd)
		defer cancel()
		ns, err := cl.Networks(ctx, swarm.Filter{})
		if err != nil {
			return err
		}
		slices.SortFunc(ns, func(a, b *api.Network) int { return strings.Compare(a.Spec.Name, b.Spec.Name) })
		var rows [][]string
		for _, n := range ns {
			sub := ""
			if n.IPAM != nil {
				sub = n.IPAM.Subnet
			}
			var flags []string
			for name, on := range map[string]bool{"ingress": n.Spec.Ingress, "attachable": n.Spec.Attachable, "internal": n.Spec.Internal, "encrypted": n.Spec.Encrypted} {
				if on {
					flags = append(flags, name)
				}
			}
			slices.Sort(flags)
			rows = append(rows, []string{short(n.ID), n.Spec.Name, "overlay", "swarm", sub, strings.Join(flags, ",")})
		}
		return c.table(ns, []string{"NETWORK ID", "NAME", "DRIVER", "SCOPE", "SUBNET", "OPTIONS"}, rows)
	}}
	inspect := &cobra.Command{Use: "inspect NETWORK...", Short: "Show networks (JSON)", Args: minArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
		cl, err := c.connect()
		if err != nil {
			return err
		}
		ctx, cancel := c.ctx(cmd)
		defer cancel()
		var out []*api.Network
		for _, n := range args {
			v, err := cl.Network(ctx, n)
			if err != nil {
				return err
			}
			out = append(out, v)
		}
		return c.printJSON(out)
	}}
	rm := &cobra.Command{Use: "rm NETWORK...", Aliases: []string{"remove"}, Short: "Remove networks", Args: minArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
		cl, err := c.connect()
		if err != nil {
			return err
		}
		ctx, cancel := c.ctx(cmd)
		defer cancel()
		var errs []error
		for _, n := range args {
			if err := cl.RemoveNetwork(ctx, n); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", n, err))
				continue
			}
			fmt.Fprintln(c.out, n)
		}
		return errors.Join(errs...)
	}}
	cmd.AddCommand(create, ls, inspect, rm)
	return cmd
}
