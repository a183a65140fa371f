package main

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// serviceFlags are the flags of service create and update.
type serviceFlags struct {
	name, mode, image         string
	replicas                  uint64
	publish, env, envRm       []string
	constraints, networks     []string
	labels, containerLabels   []string
	limitCPU, reserveCPU      float64
	limitMemory, reserveMem   string
	maxPerNode                uint64
	restartCondition          string
	updateParallelism         uint64
	updateDelay               time.Duration
	updateOrder, updateAction string
	detach                    bool
	force                     bool
	args                      []string
}

func (f *serviceFlags) common(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringArrayVarP(&f.publish, "publish", "p", nil, "publish a port: PUBLISHED:TARGET[/tcp|udp], or TARGET alone for a port from 30000-32767")
	fl.StringArrayVar(&f.constraints, "constraint", nil, "placement constraint (node.labels.zone==east)")
	fl.StringArrayVar(&f.networks, "network", nil, "attach to an overlay network")
	fl.StringArrayVarP(&f.labels, "label", "l", nil, "service label (key=value)")
	fl.StringArrayVar(&f.containerLabels, "container-label", nil, "container label (key=value)")
	fl.Float64Var(&f.limitCPU, "limit-cpu", 0, "CPU limit (1.5 = one and a half CPUs)")
	fl.StringVar(&f.limitMemory, "limit-memory", "", "memory limit (512M, 1G)")
	fl.Float64Var(&f.reserveCPU, "reserve-cpu", 0, "CPU reserved on the node")
	fl.StringVar(&f.reserveMem, "reserve-memory", "", "memory reserved on the node")
	fl.Uint64Var(&f.maxPerNode, "replicas-max-per-node", 0, "at most this many tasks per node (0: no cap)")
	fl.StringVar(&f.restartCondition, "restart-condition", "", "none, on-failure or any")
	fl.Uint64Var(&f.updateParallelism, "update-parallelism", 1, "tasks updated at once (0: all)")
	fl.DurationVar(&f.updateDelay, "update-delay", 0, "delay between updates")
	fl.StringVar(&f.updateOrder, "update-order", "", "stop-first or start-first")
	fl.StringVar(&f.updateAction, "update-failure-action", "", "pause, continue or rollback")
	fl.BoolVarP(&f.detach, "detach", "d", false, "return at once instead of showing the service converge")
}

// memBytes parses 512M, 1G, 1024K, 100 (bytes).
func memBytes(flag, s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	mult := int64(1)
	u := strings.ToUpper(strings.TrimSuffix(strings.TrimSuffix(s, "b"), "B"))
	switch {
	case strings.HasSuffix(u, "K"):
		mult, u = 1<<10, strings.TrimSuffix(u, "K")
	case strings.HasSuffix(u, "M"):
		mult, u = 1<<20, strings.TrimSuffix(u, "M")
	case strings.HasSuffix(u, "G"):
		mult, u = 1<<30, strings.TrimSuffix(u, "G")
	}
	n, err := strconv.ParseFloat(u, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("--%s %q: want a size such as 512M or 1G", flag, s)
	}
	return int64(n * float64(mult)), nil
}

// parsePort parses PUBLISHED:TARGET[/proto] or TARGET[/proto], or the
// long form published=8080,target=80,protocol=udp,mode=host.
func parsePort(s string) (api.PortConfig, error) {
	p := api.PortConfig{Protocol: api.TCP, PublishMode: api.PublishIngress}
	bad := fmt.Errorf("--publish %q: want PUBLISHED:TARGET[/tcp|udp] or published=N,target=N[,protocol=udp][,mode=host]", s)
	num := func(v string) (uint32, error) {
		n, err := strconv.ParseUint(v, 10, 16)
		if err != nil || n == 0 {
			return 0, bad
		}
		return uint32(n), nil
	}
	var err error
	if strings.Contains(s, "=") {
		for _, kv := range strings.Split(s, ",") {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "published":
				p.PublishedPort, err = num(v)
			case "target":
				p.TargetPort, err = num(v)
			case "protocol":
				p.Protocol = api.Protocol(v)
			case "mode":
				p.PublishMode = api.PublishMode(v)
			default:
				return p, bad
			}
			if err != nil {
				return p, err
			}
		}
		if p.TargetPort == 0 {
			return p, bad
		}
		return p, nil
	}
	main, proto, ok := strings.Cut(s, "/")
	if ok {
		p.Protocol = api.Protocol(proto)
		if p.Protocol != api.TCP && p.Protocol != api.UDP && p.Protocol != api.SCTP {
			return p, bad
		}
	}
	pub, target, ok := strings.Cut(main, ":")
	if !ok {
		target, pub = pub, ""
	}
	if p.TargetPort, err = num(target); err != nil {
		return p, err
	}
	if pub != "" {
		if p.PublishedPort, err = num(pub); err != nil {
			return p, err
		}
	}
	return p, nil
}

// apply puts the flags that were given into spec.
func (f *serviceFlags) apply(cmd *cobra.Command, spec *api.ServiceSpec) error {
	changed := cmd.Flags().Changed
	t := &spec.TaskTemplate
	if changed("publish") {
		if spec.EndpointSpec == nil {
			spec.EndpointSpec = &api.EndpointSpec{}
		}
		spec.EndpointSpec.Ports = nil
		for _, s := range f.publish {
			p, err := parsePort(s)
			if err != nil {
				return err
			}
			spec.EndpointSpec.Ports = append(spec.EndpointSpec.Ports, p)
		}
	}
	if changed("constraint") || changed("replicas-max-per-node") {
		if t.Placement == nil {
			t.Placement = &api.Placement{}
		}
		if changed("constraint") {
			t.Placement.Constraints = f.constraints
		}
		if changed("replicas-max-per-node") {
			t.Placement.MaxReplicas = f.maxPerNode
		}
	}
	if changed("network") {
		t.Networks = nil
		for _, n := range f.networks {
			t.Networks = append(t.Networks, api.NetworkTarget{Target: n})
		}
	}
	if changed("label") {
		l, err := labelsOf("label", f.labels)
		if err != nil {
			return err
		}
		spec.Labels = l
	}
	if changed("container-label") {
		l, err := labelsOf("container-label", f.containerLabels)
		if err != nil {
			return err
		}
		t.Labels = l
	}
	if changed("limit-cpu") || changed("limit-memory") || changed("reserve-cpu") || changed("reserve-memory") {
		if t.Resources == nil {
			t.Resources = &api.ResourceRequirements{}
		}
		set := func(r **api.Resources, cpuFlag, memFlag string, cpu float64, mem string) error {
			if !changed(cpuFlag) && !changed(memFlag) {
				return nil
			}
			if *r == nil {
				*r = &api.Resources{}
			}
			if changed(cpuFlag) {
				if cpu < 0 {
					return fmt.Errorf("--%s %v: must not be negative", cpuFlag, cpu)
				}
				(*r).NanoCPUs = int64(cpu * 1e9)
			}
			if changed(memFlag) {
				b, err := memBytes(memFlag, mem)
				if err != nil {
					return err
				}
				(*r).MemoryBytes = b
			}
			return nil
		}
		if err := set(&t.Resources.Limits, "limit-cpu", "limit-memory", f.limitCPU, f.limitMemory); err != nil {
			return err
		}
		if err := set(&t.Resources.Reservations, "reserve-cpu", "reserve-memory", f.reserveCPU, f.reserveMem); err != nil {
			return err
		}
	}
	if changed("restart-condition") {
		if t.RestartPolicy == nil {
			t.RestartPolicy = &api.RestartPolicy{}
		}
		switch f.restartCondition {
		case "none", "on-failure", "any":
		default:
			return fmt.Errorf("--restart-condition %q: want none, on-failure or any", f.restartCondition)
		}
		t.RestartPolicy.Condition = api.RestartCondition(f.restartCondition)
	}
	if changed("update-parallelism") || changed("update-delay") || changed("update-order") || changed("update-failure-action") {
		if spec.UpdateConfig == nil {
			spec.UpdateConfig = &api.UpdateConfig{Parallelism: 1}
		}
		u := spec.UpdateConfig
		if changed("update-parallelism") {
			u.Parallelism = f.updateParallelism
		}
		if changed("update-delay") {
			u.Delay = f.updateDelay
		}
		if changed("update-order") {
			if f.updateOrder != "stop-first" && f.updateOrder != "start-first" {
				return fmt.Errorf("--update-order %q: want stop-first or start-first", f.updateOrder)
			}
			u.Order = api.UpdateOrder(f.updateOrder)
		}
		if changed("update-failure-action") {
			switch f.updateAction {
			case "pause", "continue", "rollback":
			default:
				return fmt.Errorf("--update-failure-action %q: want pause, continue or rollback", f.updateAction)
			}
			u.FailureAction = api.FailureAction(f.updateAction)
		}
	}
	return nil
}

func serviceCmd(c *cli) *cobra.Command {
	cmd := &cobra.Command{Use: "service", Short: "Manage services"}
	cmd.AddCommand(serviceCreate(c), serviceLs(c), servicePs(c), serviceInspect(c), serviceScale(c), serviceUpdate(c), serviceRollback(c), serviceRm(c), serviceLogs(c))
	return cmd
}

func serviceCreate(c *cli) *cobra.Command {
	f := &serviceFlags{}
	cmd := &cobra.Command{Use: "create [OPTIONS] IMAGE [COMMAND] [ARG...]", Short: "Create a service", Args: minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			spec := api.ServiceSpec{Annotations: api.Annotations{Name: f.name}, TaskTemplate: api.TaskSpec{Image: args[0], Args: args[1:], Env: f.env}}
			switch f.mode {
			case "replicated":
				spec.Mode = api.Replicated(f.replicas)
			case "global":
				spec.Mode = api.Global()
			case "replicated-job":
				spec.Mode = api.ServiceMode{ReplicatedJob: &api.ReplicatedJob{MaxConcurrent: f.replicas, TotalCompletions: f.replicas}}
			case "global-job":
				spec.Mode = api.ServiceMode{GlobalJob: &api.GlobalJob{}}
			default:
				return fmt.Errorf("--mode %q: want replicated, global, replicated-job or global-job", f.mode)
			}
			if cmd.Flags().Changed("replicas") && f.mode != "replicated" && f.mode != "replicated-job" {
				return fmt.Errorf("--replicas: only for --mode replicated or replicated-job")
			}
			if err := f.apply(cmd, &spec); err != nil {
				return err
			}
			cl, err := c.connect()
			if err != nil {
				return err
			}
			ctx, cancel := c.ctx(cmd)
			defer cancel()
			svc, err := cl.CreateService(ctx, spec)
			if err != nil {
				return err
			}
			fmt.Fprintln(c.out, svc.ID)
			if f.detach || spec.Mode.IsJob() {
				return nil
			}
			return c.progress(cmd, cl, svc.ID)
		}}
	cmd.Flags().StringVar(&f.name, "name", "", "service name (default: one is made up)")
	cmd.Flags().StringVar(&f.mode, "mode", "replicated", "replicated, global, replicated-job or global-job")
	cmd.Flags().Uint64Var(&f.replicas, "replicas", 1, "number of tasks")
	cmd.Flags().StringArrayVarP(&f.env, "env", "e", nil, "environment variable (KEY=VALUE)")
	f.common(cmd)
	cmd.Flags().SetInterspersed(false)
	return cmd
}

func serviceLs(c *cli) *cobra.Command {
	return &cobra.Command{Use: "ls", Aliases: []string{"list"}, Short: "List services", Args: exactArgs(0), RunE: func(cmd *cobra.Command, args []string) error {
		cl, err := c.connect()
		if err != nil {
			return err
		}
		ctx, cancel := c.ctx(cmd)
		defer cancel()
		svcs, err := cl.Services(ctx, swarm.Filter{})
		if err != nil {
			return err
		}
		tasks, err := cl.Tasks(ctx, swarm.Filter{DesiredStates: []string{"running"}})
		if err != nil {
			return err
		}
		return printServices(c, svcs, tasks)
	}}
}

// printServices prints services as `service ls` does.
func printServices(c *cli, svcs []*api.Service, tasks []*api.Task) error {
	running := map[string]int{}
	for _, t := range tasks {
		if t.Status.State == api.TaskRunning {
			running[t.ServiceID]++
		}
	}
	slices.SortFunc(svcs, func(a, b *api.Service) int { return strings.Compare(a.Spec.Name, b.Spec.Name) })
	var rows [][]string
	for _, s := range svcs {
		mode, replicas := modeOf(s), ""
		switch {
		case s.Spec.Mode.Replicated != nil:
			replicas = fmt.Sprintf("%d/%d", running[s.ID], s.Spec.Mode.Replicated.Replicas)
		default:
			replicas = fmt.Sprintf("%d", running[s.ID])
		}
		rows = append(rows, []string{short(s.ID), s.Spec.Name, mode, replicas, s.Spec.TaskTemplate.Image, portsOf(s)})
	}
	return c.table(svcs, []string{"ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"}, rows)
}

func modeOf(s *api.Service) string {
	m := s.Spec.Mode
	switch {
	case m.Global != nil:
		return "global"
	case m.ReplicatedJob != nil:
		return "replicated job"
	case m.GlobalJob != nil:
		return "global job"
	}
	return "replicated"
}

func portsOf(s *api.Service) string {
	var ports []api.PortConfig
	if s.Endpoint != nil && len(s.Endpoint.Ports) > 0 {
		ports = s.Endpoint.Ports
	} else if s.Spec.EndpointSpec != nil {
		ports = s.Spec.EndpointSpec.Ports
	}
	var out []string
	for _, p := range ports {
		proto := p.Protocol
		if proto == "" {
			proto = api.TCP
		}
		out = append(out, fmt.Sprintf("*:%d->%d/%s", p.PublishedPort, p.TargetPort, proto))
	}
	return strings.Join(out, ", ")
}

func servicePs(c *cli) *cobra.Command {
	var all bool
	cmd := &cobra.Command{Use: "ps SERVICE...", Short: "List the tasks of services, with their history", Args: minArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
		cl, err := c.connect()
		if err != nil {
			return err
		}
		ctx, cancel := c.ctx(cmd)
		defer cancel()
		var tasks []*api.Task
		names := map[string]string{}
		for _, name := range args {
			svc, err := cl.Service(ctx, name)
			if err != nil {
				return err
			}
			names[svc.ID] = svc.Spec.Name
			ts, err := cl.Tasks(ctx, swarm.Filter{Services: []string{svc.ID}})
			if err != nil {
				return err
			}
			tasks = append(tasks, ts...)
		}
		return printTasks(c, cmd, tasks, names, all)
	}}
	cmd.Flags().BoolVarP(&all, "all", "a", true, "show ended tasks too (the slot's history)")
	return cmd
}

// printTasks prints tasks as `service ps` does: per slot, the current task
// and its history under it.
func printTasks(c *cli, cmd *cobra.Command, tasks []*api.Task, names map[string]string, all bool) error {
	cl, err := c.connect()
	if err != nil {
		return err
	}
	ctx, cancel := c.ctx(cmd)
	defer cancel()
	hosts := map[string]string{}
	if nodes, err := cl.Nodes(ctx, swarm.Filter{}); err == nil {
		for _, n := range nodes {
			hosts[n.ID] = n.Description.Hostname
		}
	}
	if !all {
		tasks = slices.DeleteFunc(tasks, func(t *api.Task) bool { return t.DesiredState > api.TaskRunning })
	}
	slot := func(t *api.Task) string {
		if t.Slot > 0 {
			return fmt.Sprint(t.Slot)
		}
		return t.NodeID
	}
	slices.SortFunc(tasks, func(a, b *api.Task) int {
		if c := strings.Compare(names[a.ServiceID], names[b.ServiceID]); c != 0 {
			return c
		}
		if a.Slot != b.Slot {
			return int(a.Slot) - int(b.Slot)
		}
		if c := strings.Compare(slot(a), slot(b)); c != 0 {
			return c
		}
		// The slot's current task first, then its history, newest first.
		if ar, br := a.DesiredState <= api.TaskRunning, b.DesiredState <= api.TaskRunning; ar != br {
			if ar {
				return -1
			}
			return 1
		}
		return b.Meta.CreatedAt.Compare(a.Meta.CreatedAt)
	})
	var rows [][]string
	prev := ""
	for _, t := range tasks {
		name := names[t.ServiceID] + "." + slot(t)
		key := t.ServiceID + "/" + slot(t)
		if key == prev {
			name = ` \_ ` + name
		}
		prev = key
		node := hosts[t.NodeID]
		if node == "" {
			node = short(t.NodeID)
		}
		errMsg := t.Status.Err
		if errMsg == "" && t.Status.State == api.TaskPending {
			errMsg = t.Status.Message
		}
		rows = append(rows, []string{short(t.ID), name, t.Spec.Image, node, t.DesiredState.String(),
			fmt.Sprintf("%s %s", t.Status.State, ago(t.Status.Timestamp)), errMsg})
	}
	return c.table(tasks, []string{"ID", "NAME", "IMAGE", "NODE", "DESIRED STATE", "CURRENT STATE", "ERROR"}, rows)
}

func serviceInspect(c *cli) *cobra.Command {
	return &cobra.Command{Use: "inspect SERVICE...", Short: "Show services in full (JSON)", Args: minArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
		cl, err := c.connect()
		if err != nil {
			return err
		}
		ctx, cancel := c.ctx(cmd)
		defer cancel()
		var out []*api.Service
		for _, name := range args {
			s, err := cl.Service(ctx, name)
			if err != nil {
				return err
			}
			out = append(out, s)
		}
		return c.printJSON(out)
	}}
}

func serviceScale(c *cli) *cobra.Command {
	var detach bool
	cmd := &cobra.Command{Use: "scale SERVICE=REPLICAS...", Short: "Scale replicated services", Args: minArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
		type target struct {
			name string
			n    uint64
		}
		var targets []target
		for _, a := range args {
			name, n, ok := strings.Cut(a, "=")
			v, err := strconv.ParseUint(n, 10, 64)
			if !ok || name == "" || err != nil {
				return fmt.Errorf("%q: want SERVICE=REPLICAS (web=5)", a)
			}
			targets = append(targets, target{name, v})
		}
		cl, err := c.connect()
		if err != nil {
			return err
		}
		var ids []string
		var errs []error
		for _, t := range targets {
			ctx, cancel := c.ctx(cmd)
			svc, err := cl.ScaleService(ctx, t.name, t.n)
			cancel()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", t.name, err))
				continue
			}
			fmt.Fprintf(c.out, "%s scaled to %d\n", t.name, t.n)
			ids = append(ids, svc.ID)
		}
		if !detach {
			for _, id := range ids {
				if err := c.progress(cmd, cl, id); err != nil {
					errs = append(errs, err)
				}
			}
		}
		return errors.Join(errs...)
	}}
	cmd.Flags().BoolVarP(&detach, "detach", "d", false, "return at once instead of showing the services converge")
	return cmd
}

func serviceUpdate(c *cli) *cobra.Command {
	f := &serviceFlags{}
	cmd := &cobra.Command{Use: "update [OPTIONS] SERVICE", Short: "Change a service (a rolling update)", Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.connect()
			if err != nil {
				return err
			}
			ctx, cancel := c.ctx(cmd)
			defer cancel()
			var svc *api.Service
			for try := 0; ; try++ {
				cur, err := cl.Service(ctx, args[0])
				if err != nil {
					return err
				}
				spec := cur.Spec
				clone(&spec)
				t := &spec.TaskTemplate
				if cmd.Flags().Changed("image") {
					t.Image = f.image
				}
				if cmd.Flags().Changed("args") {
					t.Args = f.args
				}
				if cmd.Flags().Changed("replicas") {
					if spec.Mode.Replicated == nil {
						return errors.New("--replicas: only for replicated services")
					}
					spec.Mode = api.Replicated(f.replicas)
				}
				for _, k := range f.envRm {
					t.Env = slices.DeleteFunc(t.Env, func(e string) bool { name, _, _ := strings.Cut(e, "="); return name == k })
				}
				for _, kv := range f.env {
					name, _, _ := strings.Cut(kv, "=")
					t.Env = slices.DeleteFunc(t.Env, func(e string) bool { n, _, _ := strings.Cut(e, "="); return n == name })
					t.Env = append(t.Env, kv)
				}
				if f.force {
					t.ForceUpdate++
				}
				if err := f.apply(cmd, &spec); err != nil {
					return err
				}
				svc, err = cl.UpdateService(ctx, cur.ID, cur.Version, spec)
				if err == nil {
					break
				}
				if try >= 5 || !isConflict(err) {
					return err
				}
			}
			fmt.Fprintln(c.out, svc.Spec.Name)
			if f.detach {
				return nil
			}
			return c.progress(cmd, cl, svc.ID)
		}}
	cmd.Flags().StringVar(&f.image, "image", "", "new image")
	cmd.Flags().StringArrayVar(&f.args, "args", nil, "new arguments")
	cmd.Flags().Uint64Var(&f.replicas, "replicas", 0, "number of tasks")
	cmd.Flags().StringArrayVar(&f.env, "env-add", nil, "add or change an environment variable (KEY=VALUE)")
	cmd.Flags().StringArrayVar(&f.envRm, "env-rm", nil, "remove an environment variable (KEY)")
	cmd.Flags().BoolVar(&f.force, "force", false, "replace the tasks even if nothing changed")
	f.common(cmd)
	return cmd
}

// clone deep-copies what an update edits in place.
func clone(s *api.ServiceSpec) {
	t := &s.TaskTemplate
	t.Env = slices.Clone(t.Env)
	t.Args = slices.Clone(t.Args)
	t.Networks = slices.Clone(t.Networks)
	if s.EndpointSpec != nil {
		e := *s.EndpointSpec
		e.Ports = slices.Clone(e.Ports)
		s.EndpointSpec = &e
	}
	if t.Placement != nil {
		p := *t.Placement
		p.Constraints = slices.Clone(p.Constraints)
		t.Placement = &p
	}
	if t.Resources != nil {
		r := *t.Resources
		if r.Limits != nil {
			l := *r.Limits
			r.Limits = &l
		}
		if r.Reservations != nil {
			l := *r.Reservations
			r.Reservations = &l
		}
		t.Resources = &r
	}
	if t.RestartPolicy != nil {
		r := *t.RestartPolicy
		t.RestartPolicy = &r
	}
	if s.UpdateConfig != nil {
		u := *s.UpdateConfig
		s.UpdateConfig = &u
	}
}

func serviceRollback(c *cli) *cobra.Command {
	var detach bool
	cmd := &cobra.Command{Use: "rollback SERVICE", Short: "Go back to a service's previous spec", Args: exactArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
		cl, err := c.connect()
		if err != nil {
			return err
		}
		ctx, cancel := c.ctx(cmd)
		defer cancel()
		svc, err := cl.RollbackService(ctx, args[0])
		if err != nil {
			return err
		}
		fmt.Fprintln(c.out, svc.Spec.Name)
		if detach {
			return nil
		}
		return c.progress(cmd, cl, svc.ID)
	}}
	cmd.Flags().BoolVarP(&detach, "detach", "d", false, "return at once")
	return cmd
}

func serviceRm(c *cli) *cobra.Command {
	return &cobra.Command{Use: "rm SERVICE...", Aliases: []string{"remove"}, Short: "Remove services", Args: minArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
		cl, err := c.connect()
		if err != nil {
			return err
		}
		ctx, cancel := c.ctx(cmd)
		defer cancel()
		var errs []error
		for _, name := range args {
			if err := cl.RemoveService(ctx, name); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
				continue
			}
			fmt.Fprintln(c.out, name)
		}
		return errors.Join(errs...)
	}}
}
