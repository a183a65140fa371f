package stack

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/shoalproject/shoal/swarm/api"
)

// converter makes a Stack of a compose-go project, as Docker's
// cli/compose/convert does for a Swarm, collecting every problem.
type converter struct {
	stack    string
	project  *types.Project
	opts     Options
	env      types.Mapping
	warnings []Warning
	problems []Problem
	errs     []error

	// names of the file's objects (keys) in the cluster
	networks map[string]string
	ingress  map[string]bool // keys of external networks named "ingress"
	volumes  map[string]string
	secrets  map[string]string
	configs  map[string]string

	paths          map[string]string // "kind name" to the key in the file
	usedNetworks   map[string]bool
	usedExtSecrets map[string]bool
	usedExtConfigs map[string]bool
	st             *Stack
}

func (c *converter) problem(path, format string, args ...any) {
	c.problems = append(c.problems, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
}

func (c *converter) warn(path, format string, args ...any) {
	c.warnings = append(c.warnings, Warning{Path: path, Message: fmt.Sprintf(format, args...)})
}

// defaultNetwork is the key of the network of services that name none.
const defaultNetwork = "default"

// ingressNetwork is the routing mesh's network: Docker refuses to attach a
// service to it by name.
const ingressNetwork = "ingress"

func (c *converter) convert() (*Stack, error) {
	c.st = &Stack{Name: c.stack}
	c.networks, c.ingress, c.volumes = map[string]string{}, map[string]bool{}, map[string]string{}
	c.secrets, c.configs = map[string]string{}, map[string]string{}
	c.usedNetworks, c.usedExtSecrets, c.usedExtConfigs = map[string]bool{}, map[string]bool{}, map[string]bool{}
	c.paths = map[string]string{}

	for _, key := range sortedKeys(c.project.Networks) {
		n := c.project.Networks[key]
		c.networks[key] = c.objectName(key, n.Name, bool(n.External))
		if n.External && c.networks[key] == ingressNetwork {
			c.ingress[key] = true
		}
	}
	if _, ok := c.project.Networks[defaultNetwork]; !ok {
		c.networks[defaultNetwork] = scope(c.stack, defaultNetwork)
	}
	for _, key := range sortedKeys(c.project.Volumes) {
		v := c.project.Volumes[key]
		c.volumes[key] = c.objectName(key, v.Name, bool(v.External))
		if v.Driver != "" && v.Driver != "local" {
			c.problem("volumes."+key+".driver", "%q is not supported by Shoal (volumes are local to each node)", v.Driver)
		}
	}
	for _, key := range sortedKeys(c.project.Secrets) {
		s := c.project.Secrets[key]
		c.secrets[key] = c.objectName(key, s.Name, bool(s.External))
	}
	for _, key := range sortedKeys(c.project.Configs) {
		s := c.project.Configs[key]
		c.configs[key] = c.objectName(key, s.Name, bool(s.External))
	}

	for _, key := range sortedKeys(c.project.Services) {
		c.service(key, c.project.Services[key])
	}
	c.convertNetworks()
	c.convertSecrets()
	c.convertConfigs()
	c.st.Warnings = c.warnings

	if len(c.problems) > 0 {
		return nil, &UnsupportedError{Problems: c.problems}
	}
	if err := errors.Join(c.errs...); err != nil {
		return nil, err
	}
	c.validate()
	if err := errors.Join(c.errs...); err != nil {
		return nil, err
	}
	return c.st, nil
}

// validate runs every spec through the API's Validate, naming the key in
// the file and the object in the cluster.
func (c *converter) validate() {
	check := func(kind, name string, err error) {
		if err != nil {
			c.errs = append(c.errs, fmt.Errorf("stack: %s (%s %s): %w", c.paths[kind+" "+name], kind, name, err))
		}
	}
	for i := range c.st.Networks {
		check("network", c.st.Networks[i].Name, c.st.Networks[i].Validate())
	}
	for i := range c.st.Secrets {
		check("secret", c.st.Secrets[i].Name, c.st.Secrets[i].Validate())
	}
	for i := range c.st.Configs {
		check("config", c.st.Configs[i].Name, c.st.Configs[i].Validate())
	}
	for i := range c.st.Services {
		check("service", c.st.Services[i].Name, c.st.Services[i].Validate())
	}
}

// objectName is Docker's: the file's name as is for an external object or
// an explicit name:, else NAME_KEY.
func (c *converter) objectName(key, name string, external bool) string {
	switch {
	case name != "":
		return name
	case external:
		return key
	default:
		return scope(c.stack, key)
	}
}

func (c *converter) convertNetworks() {
	for _, key := range sortedKeys(c.usedNetworks) {
		name := c.networks[key]
		n, declared := c.project.Networks[key]
		c.paths["network "+name] = "networks." + key
		if !declared { // the implicit default network
			c.st.Networks = append(c.st.Networks, api.NetworkSpec{
				Annotations: api.Annotations{Name: name, Labels: withNamespace(nil, c.stack)}, Driver: "overlay"})
			continue
		}
		if n.External {
			c.st.ExternalNetworks = append(c.st.ExternalNetworks, name)
			continue
		}
		p := "networks." + key
		spec := api.NetworkSpec{
			Annotations: api.Annotations{Name: name, Labels: withNamespace(n.Labels, c.stack)},
			Driver:      "overlay",
			Attachable:  n.Attachable,
			Internal:    n.Internal,
		}
		if n.Driver != "" && n.Driver != "overlay" {
			c.problem(p+".driver", "%q is not supported by Shoal (stack networks are overlay networks)", n.Driver)
		}
		for _, opt := range sortedKeys(n.DriverOpts) {
			if opt == "encrypted" { // any value, as Docker: the option's presence encrypts
				spec.Encrypted = true
				continue
			}
			c.problem(p+".driver_opts."+opt, "not supported by Shoal (the only driver option is \"encrypted\")")
		}
		if d := n.Ipam.Driver; d != "" && d != "default" {
			c.problem(p+".ipam.driver", "%q is not supported by Shoal (only the default IPAM)", d)
		}
		switch cfg := n.Ipam.Config; {
		case len(cfg) > 1:
			c.problem(p+".ipam.config", "has %d pools; a Shoal network has one subnet", len(cfg))
		case len(cfg) == 1 && cfg[0] != nil:
			// Checked (inside the subnet, and so on) with the network
			// spec, as the API checks it.
			ic := api.IPAMConfig{Subnet: cfg[0].Subnet, Gateway: cfg[0].Gateway, IPRange: cfg[0].IPRange}
			if len(cfg[0].AuxiliaryAddresses) > 0 {
				ic.AuxAddresses = maps.Clone(map[string]string(cfg[0].AuxiliaryAddresses))
			}
			if ic.Subnet != "" || ic.Gateway != "" || ic.IPRange != "" || len(ic.AuxAddresses) > 0 {
				spec.IPAM = &ic
			}
		}
		c.st.Networks = append(c.st.Networks, spec)
	}
	slices.SortFunc(c.st.Networks, func(a, b api.NetworkSpec) int { return strings.Compare(a.Name, b.Name) })
	slices.Sort(c.st.ExternalNetworks)
}

func (c *converter) convertSecrets() {
	for _, key := range sortedKeys(c.project.Secrets) {
		s := c.project.Secrets[key]
		if s.External {
			if c.usedExtSecrets[key] {
				c.st.ExternalSecrets = append(c.st.ExternalSecrets, c.secrets[key])
			}
			continue
		}
		c.paths["secret "+c.secrets[key]] = "secrets." + key
		data, ok := c.objectData("secrets."+key, types.FileObjectConfig(s))
		if !ok {
			continue
		}
		c.st.Secrets = append(c.st.Secrets, api.SecretSpec{
			Annotations: api.Annotations{Name: c.secrets[key], Labels: withNamespace(s.Labels, c.stack)}, Data: data})
	}
	slices.SortFunc(c.st.Secrets, func(a, b api.SecretSpec) int { return strings.Compare(a.Name, b.Name) })
	slices.Sort(c.st.ExternalSecrets)
}

func (c *converter) convertConfigs() {
	for _, key := range sortedKeys(c.project.Configs) {
		s := c.project.Configs[key]
		if s.External {
			if c.usedExtConfigs[key] {
				c.st.ExternalConfigs = append(c.st.ExternalConfigs, c.configs[key])
			}
			continue
		}
		c.paths["config "+c.configs[key]] = "configs." + key
		data, ok := c.objectData("configs."+key, types.FileObjectConfig(s))
		if !ok {
			continue
		}
		c.st.Configs = append(c.st.Configs, api.ConfigSpec{
			Annotations: api.Annotations{Name: c.configs[key], Labels: withNamespace(s.Labels, c.stack)}, Data: data})
	}
	slices.SortFunc(c.st.Configs, func(a, b api.ConfigSpec) int { return strings.Compare(a.Name, b.Name) })
	slices.Sort(c.st.ExternalConfigs)
}

// objectData reads a secret's or config's data: from its file, from a
// variable of Options.Env, or inline (content:).
func (c *converter) objectData(p string, o types.FileObjectConfig) ([]byte, bool) {
	switch {
	case o.File != "":
		f, err := os.Open(o.File)
		if err != nil {
			c.errs = append(c.errs, fmt.Errorf("stack: %s.file: %w", p, err))
			return nil, false
		}
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, api.MaxSecretSize+1))
		if err != nil {
			c.errs = append(c.errs, fmt.Errorf("stack: %s.file: %w", p, err))
			return nil, false
		}
		return b, true
	case o.Environment != "":
		v, ok := c.env[o.Environment]
		if !ok {
			c.errs = append(c.errs, fmt.Errorf("%w: %s.environment: variable %s is not set", ErrMissingVariable, p, o.Environment))
			return nil, false
		}
		return []byte(v), true
	case o.Content != "":
		return []byte(o.Content), true
	}
	c.errs = append(c.errs, fmt.Errorf("%w: %s: needs file:, environment:, content: or external: true", ErrInvalidFile, p))
	return nil, false
}

// service converts one service, as Docker's convert.Service.
func (c *converter) service(key string, s types.ServiceConfig) {
	p := "services." + key
	name := scope(c.stack, key)
	c.paths["service "+name] = p
	image := s.Image
	if image == "" {
		c.problem(p+".image", "is required: Shoal runs images, it does not build them")
	}
	run := image
	if c.opts.MapImage != nil && image != "" {
		run = c.opts.MapImage(image)
	}
	labels := withNamespace(nil, c.stack)
	if s.Deploy != nil {
		labels = withNamespace(s.Deploy.Labels, c.stack)
	}
	labels[LabelImage] = image

	spec := api.ServiceSpec{
		Annotations: api.Annotations{Name: name, Labels: labels},
		TaskTemplate: api.TaskSpec{
			Image:    run,
			Command:  slices.Clone([]string(s.Entrypoint)),
			Args:     slices.Clone([]string(s.Command)),
			Env:      environment(s.Environment),
			User:     s.User,
			Dir:      s.WorkingDir,
			Hostname: s.Hostname,
			Labels:   withNamespace(s.Labels, c.stack),
			ReadOnly: s.ReadOnly,
			Init:     s.Init,
		},
	}
	t := &spec.TaskTemplate
	t.StopSignal = s.StopSignal
	if s.StopGracePeriod != nil {
		d := time.Duration(*s.StopGracePeriod)
		t.StopGracePeriod = &d
	}
	if s.Logging != nil && (s.Logging.Driver != "" || len(s.Logging.Options) > 0) {
		t.LogDriver = &api.Driver{Name: s.Logging.Driver, Options: maps.Clone(map[string]string(s.Logging.Options))}
	}
	if s.Platform != "" {
		os, arch, _ := strings.Cut(s.Platform, "/")
		arch, _, _ = strings.Cut(arch, "/")
		t.Placement = &api.Placement{Platforms: []api.Platform{{OS: os, Architecture: arch}}}
	}
	t.Healthcheck = c.healthcheck(p, s.HealthCheck)
	t.Mounts = c.mounts(p, s)
	t.Networks = c.serviceNetworks(p, key, s)
	t.Secrets = c.secretRefs(p, s.Secrets)
	t.Configs = c.configRefs(p, s.Configs)
	spec.EndpointSpec = c.endpoint(p, s)
	spec.Mode = c.mode(p, s.Deploy)
	t.RestartPolicy = c.restartPolicy(p, s.Restart, s.Deploy)
	if d := s.Deploy; d != nil {
		t.Resources = c.resources(p+".deploy.resources", d.Resources)
		spec.UpdateConfig = c.updateConfig(p+".deploy.update_config", d.UpdateConfig)
		spec.RollbackConfig = c.updateConfig(p+".deploy.rollback_config", d.RollbackConfig)
		pl := d.Placement
		if len(pl.Constraints) > 0 || len(pl.Preferences) > 0 || pl.MaxReplicas > 0 {
			if t.Placement == nil {
				t.Placement = &api.Placement{}
			}
			t.Placement.Constraints = slices.Clone(pl.Constraints)
			t.Placement.MaxReplicas = pl.MaxReplicas
			for _, pref := range pl.Preferences {
				t.Placement.Preferences = append(t.Placement.Preferences, api.PlacementPreference{Spread: pref.Spread})
			}
		}
	}
	c.st.Services = append(c.st.Services, spec)
}

func environment(env types.MappingWithEquals) []string {
	if len(env) == 0 {
		return nil
	}
	out := make([]string, 0, len(env))
	for _, k := range sortedKeys(env) {
		if v := env[k]; v != nil {
			out = append(out, k+"="+*v)
		} else {
			out = append(out, k) // unset: Docker passes the name alone
		}
	}
	return out
}

func (c *converter) mode(p string, d *types.DeployConfig) api.ServiceMode {
	if d == nil {
		return api.Replicated(1)
	}
	replicas := uint64(1)
	if d.Replicas != nil {
		if *d.Replicas < 0 {
			c.problem(p+".deploy.replicas", "must not be negative, got %d", *d.Replicas)
		} else {
			replicas = uint64(*d.Replicas)
		}
	}
	switch d.Mode {
	case "", "replicated":
		return api.Replicated(replicas)
	case "global":
		if d.Replicas != nil {
			c.problem(p+".deploy.replicas", "only a replicated service has replicas (mode is global)")
		}
		return api.Global()
	case "replicated-job":
		return api.ServiceMode{ReplicatedJob: &api.ReplicatedJob{MaxConcurrent: replicas, TotalCompletions: replicas}}
	case "global-job":
		if d.Replicas != nil {
			c.problem(p+".deploy.replicas", "only a replicated job has replicas (mode is global-job)")
		}
		return api.ServiceMode{GlobalJob: &api.GlobalJob{}}
	}
	c.problem(p+".deploy.mode", "%q is not a mode (replicated, global, replicated-job or global-job)", d.Mode)
	return api.Replicated(replicas)
}

// restartPolicy is deploy.restart_policy, or else the service's restart:
// converted as Docker converts it.
func (c *converter) restartPolicy(p, restart string, d *types.DeployConfig) *api.RestartPolicy {
	if d != nil && d.RestartPolicy != nil {
		if restart != "" {
			c.warn(p+".restart", "ignored: deploy.restart_policy is used")
		}
		r := d.RestartPolicy
		out := &api.RestartPolicy{Condition: api.RestartCondition(r.Condition)}
		if r.Delay != nil {
			dl := time.Duration(*r.Delay)
			out.Delay = &dl
		}
		if r.MaxAttempts != nil {
			out.MaxAttempts = *r.MaxAttempts
		}
		if r.Window != nil {
			out.Window = time.Duration(*r.Window)
		}
		return out
	}
	if restart == "" {
		return nil
	}
	policy, arg, _ := strings.Cut(restart, ":")
	var out *api.RestartPolicy
	switch policy {
	case "no":
		out = &api.RestartPolicy{Condition: api.RestartNone}
	case "always", "unless-stopped":
		out = &api.RestartPolicy{Condition: api.RestartAny}
	case "on-failure":
		out = &api.RestartPolicy{Condition: api.RestartOnFailure}
		if arg != "" {
			n, err := strconv.ParseUint(arg, 10, 64)
			if err != nil {
				c.problem(p+".restart", "%q: the attempts after on-failure: must be a number", restart)
				return nil
			}
			out.MaxAttempts = n
		}
	default:
		c.problem(p+".restart", "%q is not a restart policy (no, always, on-failure[:N], unless-stopped)", restart)
		return nil
	}
	c.warn(p+".restart", "converted to deploy.restart_policy (condition: %s)", out.Condition)
	return out
}

func (c *converter) resources(p string, r types.Resources) *api.ResourceRequirements {
	conv := func(rp string, x *types.Resource) *api.Resources {
		if x == nil {
			return nil
		}
		out := &api.Resources{NanoCPUs: nanoCPUs(float32(x.NanoCPUs)), MemoryBytes: int64(x.MemoryBytes), Pids: x.Pids}
		for _, g := range x.GenericResources {
			if d := g.DiscreteResourceSpec; d != nil {
				out.Generic = append(out.Generic, api.GenericResource{Kind: d.Kind, Value: d.Value})
			}
		}
		if f := float64(x.NanoCPUs); !(f >= 0 && f < 1e9) { // also NaN
			c.problem(rp+".cpus", "must be a number of CPUs, 0 or more, got %v", f)
			out.NanoCPUs = 0
		}
		return out
	}
	if r.Limits == nil && r.Reservations == nil {
		return nil
	}
	out := &api.ResourceRequirements{Limits: conv(p+".limits", r.Limits), Reservations: conv(p+".reservations", r.Reservations)}
	if out.Reservations != nil && out.Reservations.Pids != 0 {
		c.problem(p+".reservations.pids", "not supported by Shoal (pids is a limit)")
	}
	return out
}

// nanoCPUs converts compose-go's float32 CPUs ("0.1") exactly: through
// its shortest decimal form, so 0.1 CPUs is 100000000, not 100000001.
func nanoCPUs(f float32) int64 {
	d, _ := strconv.ParseFloat(strconv.FormatFloat(float64(f), 'f', -1, 32), 64)
	return int64(math.Round(d * 1e9))
}

func (c *converter) updateConfig(p string, u *types.UpdateConfig) *api.UpdateConfig {
	if u == nil {
		return nil
	}
	if r := u.MaxFailureRatio; !(r >= 0 && r <= 1) { // also NaN
		c.problem(p+".max_failure_ratio", "must be between 0 and 1, got %v", r)
	}
	// Docker's default parallelism when update_config is given: 1.
	out := &api.UpdateConfig{
		Parallelism:   1,
		Delay:         time.Duration(u.Delay),
		Monitor:       time.Duration(u.Monitor),
		FailureAction: api.FailureAction(u.FailureAction),
		Order:         api.UpdateOrder(u.Order),
	}
	if u.Parallelism != nil {
		out.Parallelism = *u.Parallelism
	}
	out.MaxFailureRatio, _ = strconv.ParseFloat(strconv.FormatFloat(float64(u.MaxFailureRatio), 'f', -1, 32), 64)
	return out
}

func (c *converter) healthcheck(p string, h *types.HealthCheckConfig) *api.HealthConfig {
	if h == nil {
		return nil
	}
	if h.Disable {
		return &api.HealthConfig{Test: []string{"NONE"}}
	}
	out := &api.HealthConfig{Test: slices.Clone([]string(h.Test))}
	if len(out.Test) == 0 {
		c.problem(p+".healthcheck.test", "is required by Shoal (it does not take the image's health check)")
	}
	if h.Interval != nil {
		out.Interval = time.Duration(*h.Interval)
	}
	if h.Timeout != nil {
		out.Timeout = time.Duration(*h.Timeout)
	}
	if h.StartPeriod != nil {
		out.StartPeriod = time.Duration(*h.StartPeriod)
	}
	if h.Retries != nil {
		if *h.Retries > math.MaxInt32 {
			c.problem(p+".healthcheck.retries", "%d is too many", *h.Retries)
		} else {
			out.Retries = int(*h.Retries)
		}
	}
	return out
}

func (c *converter) mounts(p string, s types.ServiceConfig) []api.Mount {
	var out []api.Mount
	for i, v := range s.Volumes {
		vp := fmt.Sprintf("%s.volumes[%d]", p, i)
		m := api.Mount{Type: api.MountType(v.Type), Source: v.Source, Target: v.Target, ReadOnly: v.ReadOnly}
		switch v.Type {
		case types.VolumeTypeBind:
		case types.VolumeTypeVolume:
			if v.Source != "" {
				name, ok := c.volumes[v.Source]
				if !ok {
					c.problem(vp+".source", "volume %q is not declared under the top-level volumes", v.Source)
				}
				m.Source = name
			}
			if v.Volume != nil {
				m.NoCopy = v.Volume.NoCopy
			}
		case types.VolumeTypeTmpfs:
			if v.Tmpfs != nil {
				m.TmpfsSizeBytes = int64(v.Tmpfs.Size)
			}
		default:
			c.problem(vp+".type", "%q is not supported by Shoal (bind, volume or tmpfs)", v.Type)
			continue
		}
		out = append(out, m)
	}
	for i, t := range s.Tmpfs {
		if strings.Contains(t, ":") {
			c.problem(fmt.Sprintf("%s.tmpfs[%d]", p, i), "%q: tmpfs options are not supported by Shoal (use a volume of type tmpfs with tmpfs.size)", t)
			continue
		}
		out = append(out, api.Mount{Type: api.MountTmpfs, Target: t})
	}
	return out
}

// serviceNetworks attaches the service to its networks (the stack's
// default network if it names none), with its name in the file as an
// alias on each, as Docker does: services of a stack reach each other by
// the names the file gives them.
func (c *converter) serviceNetworks(p, key string, s types.ServiceConfig) []api.NetworkTarget {
	if s.NetworkMode != "" {
		return nil // refused by the allowlist
	}
	keys := sortedKeys(s.Networks)
	if len(keys) == 0 {
		keys = []string{defaultNetwork}
	}
	var out []api.NetworkTarget
	seen := map[string]bool{}
	for _, k := range keys {
		if c.ingress[k] {
			c.warn(p+".networks."+k, "%q is the routing mesh's network: services are not attached to it by name (Docker refuses this file); "+
				"attached to %s, the stack's default network, instead: published ports use the routing mesh anyway, and the stack's services reach each other by name there",
				ingressNetwork, c.networks[defaultNetwork])
			k = defaultNetwork
		}
		name, ok := c.networks[k]
		if !ok {
			c.problem(p+".networks."+k, "network %q is not declared under the top-level networks", k)
			continue
		}
		if seen[name] {
			continue
		}
		seen[name] = true
		c.usedNetworks[k] = true
		aliases := []string{key}
		if n := s.Networks[k]; n != nil {
			aliases = append(slices.Clone(n.Aliases), key)
		}
		out = append(out, api.NetworkTarget{Target: name, Aliases: aliases})
	}
	slices.SortFunc(out, func(a, b api.NetworkTarget) int { return strings.Compare(a.Target, b.Target) })
	return out
}

func (c *converter) endpoint(p string, s types.ServiceConfig) *api.EndpointSpec {
	var mode string
	if s.Deploy != nil {
		mode = s.Deploy.EndpointMode
	}
	if mode == "" && len(s.Ports) == 0 {
		return nil
	}
	out := &api.EndpointSpec{Mode: api.EndpointMode(mode)}
	for i, port := range s.Ports {
		pp := fmt.Sprintf("%s.ports[%d]", p, i)
		pc := api.PortConfig{Name: port.Name, Protocol: api.Protocol(port.Protocol), TargetPort: port.Target, PublishMode: api.PublishMode(port.Mode)}
		if port.Published != "" {
			n, err := strconv.ParseUint(port.Published, 10, 16)
			if err != nil {
				if strings.Contains(port.Published, "-") {
					c.problem(pp+".published", "%q: port ranges are not supported by Shoal (publish each port)", port.Published)
				} else {
					c.problem(pp+".published", "%q is not a port number", port.Published)
				}
				continue
			}
			pc.PublishedPort = uint32(n)
		}
		out.Ports = append(out.Ports, pc)
	}
	return out
}

func (c *converter) secretRefs(p string, refs []types.ServiceSecretConfig) []api.SecretReference {
	var out []api.SecretReference
	for i, r := range refs {
		rp := fmt.Sprintf("%s.secrets[%d]", p, i)
		name, ok := c.secrets[r.Source]
		if !ok {
			c.problem(rp+".source", "secret %q is not declared under the top-level secrets", r.Source)
			continue
		}
		if c.project.Secrets[r.Source].External {
			c.usedExtSecrets[r.Source] = true
		}
		target := r.Target
		if target == "" {
			target = r.Source
		} else if rest, ok := strings.CutPrefix(target, "/run/secrets/"); ok {
			target = rest
		} else if strings.HasPrefix(target, "/") {
			c.problem(rp+".target", "%q: secrets are files under /run/secrets (give a file name)", r.Target)
			continue
		}
		out = append(out, api.SecretReference{SecretName: name, File: c.fileTarget(rp, target, r.UID, r.GID, r.Mode, 0o444)})
	}
	return out
}

func (c *converter) configRefs(p string, refs []types.ServiceConfigObjConfig) []api.ConfigReference {
	var out []api.ConfigReference
	for i, r := range refs {
		rp := fmt.Sprintf("%s.configs[%d]", p, i)
		name, ok := c.configs[r.Source]
		if !ok {
			c.problem(rp+".source", "config %q is not declared under the top-level configs", r.Source)
			continue
		}
		if c.project.Configs[r.Source].External {
			c.usedExtConfigs[r.Source] = true
		}
		target := r.Target
		if target == "" {
			target = "/" + r.Source // Docker's default
		}
		out = append(out, api.ConfigReference{ConfigName: name, File: c.fileTarget(rp, target, r.UID, r.GID, r.Mode, 0o444)})
	}
	return out
}

// fileTarget is a secret's or config's file, with Docker's defaults (owned
// by root, mode 0444).
func (c *converter) fileTarget(p, name, uid, gid string, mode *types.FileMode, defMode uint32) api.FileTarget {
	ft := api.FileTarget{Name: name, UID: uid, GID: gid, Mode: defMode}
	if ft.UID == "" {
		ft.UID = "0"
	}
	if ft.GID == "" {
		ft.GID = "0"
	}
	if mode != nil {
		if *mode < 0 || *mode > 0o777 {
			c.problem(p+".mode", "%o is not a file mode (0000 to 0777)", int64(*mode))
		} else {
			ft.Mode = uint32(*mode)
		}
	}
	return ft
}

func sortedKeys[M ~map[string]V, V any](m M) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
