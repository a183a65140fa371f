package dockerapi

import (
	"maps"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	dswarm "github.com/moby/moby/api/types/swarm"

	"github.com/shoalproject/shoal/swarm/api"
)

// Conversions between Docker's service spec (what the docker CLI sends and
// reads) and Shoal's. What Shoal cannot represent is refused with the
// fields named, never dropped; empty Docker values (the CLI sends many:
// an empty DNS config, zero resources) are not features and pass.

// stackNamespaceLabel is the label docker stack deploy puts on what it
// makes: services, networks, secrets, configs and volumes.
const stackNamespaceLabel = "com.docker.stack.namespace"

// unsupported collects the fields a conversion cannot take.
type unsupported struct{ fields []UnsupportedField }

func (u *unsupported) add(path, hint string) {
	u.fields = append(u.fields, UnsupportedField{Path: path, Hint: hint})
}

func (u *unsupported) err() error {
	if len(u.fields) == 0 {
		return nil
	}
	return &UnsupportedFieldsError{Fields: u.fields}
}

// ServiceSpecFromDocker converts a Docker service spec to Shoal's. Fields
// Shoal does not support make it fail with an *UnsupportedFieldsError
// naming all of them. The result is not validated: Shoal's managers do
// that, with field paths.
func ServiceSpecFromDocker(d dswarm.ServiceSpec) (api.ServiceSpec, error) {
	var u unsupported
	s := api.ServiceSpec{
		Annotations:    api.Annotations{Name: d.Name, Labels: cloneMap(d.Labels)},
		Mode:           modeFromDocker(d.Mode),
		TaskTemplate:   taskSpecFromDocker(&u, "TaskTemplate", d.TaskTemplate),
		UpdateConfig:   updateConfigFromDocker(d.UpdateConfig),
		RollbackConfig: updateConfigFromDocker(d.RollbackConfig),
		EndpointSpec:   endpointSpecFromDocker(d.EndpointSpec),
	}
	if err := u.err(); err != nil {
		return api.ServiceSpec{}, err
	}
	return s, nil
}

func modeFromDocker(m dswarm.ServiceMode) api.ServiceMode {
	var out api.ServiceMode
	if r := m.Replicated; r != nil {
		n := uint64(1) // Docker's default
		if r.Replicas != nil {
			n = *r.Replicas
		}
		out.Replicated = &api.ReplicatedService{Replicas: n}
	}
	if m.Global != nil {
		out.Global = &api.GlobalService{}
	}
	if j := m.ReplicatedJob; j != nil {
		// Docker's defaults: one at a time; as many as run at once.
		mc := uint64(1)
		if j.MaxConcurrent != nil {
			mc = *j.MaxConcurrent
		}
		tc := mc
		if j.TotalCompletions != nil {
			tc = *j.TotalCompletions
		}
		out.ReplicatedJob = &api.ReplicatedJob{MaxConcurrent: mc, TotalCompletions: tc}
	}
	if m.GlobalJob != nil {
		out.GlobalJob = &api.GlobalJob{}
	}
	if out == (api.ServiceMode{}) {
		// No mode: Docker makes a replicated service of one task.
		out.Replicated = &api.ReplicatedService{Replicas: 1}
	}
	return out
}

func taskSpecFromDocker(u *unsupported, path string, d dswarm.TaskSpec) api.TaskSpec {
	var t api.TaskSpec
	switch d.Runtime {
	case "", dswarm.RuntimeContainer:
	default:
		u.add(path+".Runtime", "only containers run on Shoal, not "+string(d.Runtime))
	}
	if d.PluginSpec != nil {
		u.add(path+".PluginSpec", "plugins")
	}
	if d.NetworkAttachmentSpec != nil {
		u.add(path+".NetworkAttachmentSpec", "")
	}
	if c := d.ContainerSpec; c != nil {
		containerSpecFromDocker(u, path+".ContainerSpec", c, &t)
	}
	t.Resources = resourcesFromDocker(u, path+".Resources", d.Resources)
	if r := d.RestartPolicy; r != nil {
		rp := &api.RestartPolicy{Condition: api.RestartCondition(r.Condition), Delay: clonePtr(r.Delay)}
		if r.MaxAttempts != nil {
			rp.MaxAttempts = *r.MaxAttempts
		}
		if r.Window != nil {
			rp.Window = *r.Window
		}
		t.RestartPolicy = rp
	}
	if p := d.Placement; p != nil && (len(p.Constraints) > 0 || len(p.Preferences) > 0 || p.MaxReplicas > 0 || len(p.Platforms) > 0) {
		pl := &api.Placement{Constraints: slices.Clone(p.Constraints), MaxReplicas: p.MaxReplicas}
		for i, pref := range p.Preferences {
			if pref.Spread == nil {
				u.add(path+".Placement.Preferences["+itoa(i)+"]", "only spread preferences (--placement-pref spread=node.labels.KEY)")
				continue
			}
			pl.Preferences = append(pl.Preferences, api.PlacementPreference{Spread: pref.Spread.SpreadDescriptor})
		}
		for _, pf := range p.Platforms {
			pl.Platforms = append(pl.Platforms, api.Platform{OS: pf.OS, Architecture: pf.Architecture})
		}
		t.Placement = pl
	}
	for i, n := range d.Networks {
		if len(n.DriverOpts) > 0 {
			u.add(path+".Networks["+itoa(i)+"].DriverOpts", "--network name=...,driver-opt=...")
		}
		t.Networks = append(t.Networks, api.NetworkTarget{Target: n.Target, Aliases: slices.Clone(n.Aliases)})
	}
	if l := d.LogDriver; l != nil && (l.Name != "" || len(l.Options) > 0) {
		t.LogDriver = &api.Driver{Name: l.Name, Options: cloneMap(l.Options)}
	}
	t.ForceUpdate = d.ForceUpdate
	return t
}

func containerSpecFromDocker(u *unsupported, path string, c *dswarm.ContainerSpec, t *api.TaskSpec) {
	t.Image = c.Image
	t.Labels = cloneMap(c.Labels)
	t.Command = slices.Clone(c.Command)
	t.Args = slices.Clone(c.Args)
	t.Hostname = c.Hostname
	t.Env = slices.Clone(c.Env)
	t.Dir = c.Dir
	t.User = c.User
	t.Init = clonePtr(c.Init)
	t.StopSignal = c.StopSignal
	t.ReadOnly = c.ReadOnly
	t.StopGracePeriod = clonePtr(c.StopGracePeriod)
	if len(c.Groups) > 0 {
		u.add(path+".Groups", "--group")
	}
	if p := c.Privileges; p != nil {
		if p.CredentialSpec != nil {
			u.add(path+".Privileges.CredentialSpec", "--credential-spec")
		}
		if p.SELinuxContext != nil && *p.SELinuxContext != (dswarm.SELinuxContext{}) {
			u.add(path+".Privileges.SELinuxContext", "")
		}
		if p.Seccomp != nil && (p.Seccomp.Mode != "" || len(p.Seccomp.Profile) > 0) {
			u.add(path+".Privileges.Seccomp", "")
		}
		if p.AppArmor != nil && p.AppArmor.Mode != "" {
			u.add(path+".Privileges.AppArmor", "")
		}
		if p.NoNewPrivileges {
			u.add(path+".Privileges.NoNewPrivileges", "")
		}
	}
	if c.TTY {
		u.add(path+".TTY", "--tty")
	}
	if c.OpenStdin {
		u.add(path+".OpenStdin", "")
	}
	if len(c.Hosts) > 0 {
		u.add(path+".Hosts", "--host")
	}
	if d := c.DNSConfig; d != nil && (len(d.Nameservers) > 0 || len(d.Search) > 0 || len(d.Options) > 0) {
		u.add(path+".DNSConfig", "--dns, --dns-search, --dns-option")
	}
	if c.Isolation != "" && c.Isolation != container.IsolationDefault {
		u.add(path+".Isolation", "--isolation")
	}
	if len(c.Sysctls) > 0 {
		u.add(path+".Sysctls", "--sysctl")
	}
	if len(c.CapabilityAdd) > 0 {
		u.add(path+".CapabilityAdd", "--cap-add")
	}
	if len(c.CapabilityDrop) > 0 {
		u.add(path+".CapabilityDrop", "--cap-drop")
	}
	if len(c.Ulimits) > 0 {
		u.add(path+".Ulimits", "--ulimit")
	}
	if c.OomScoreAdj != 0 {
		u.add(path+".OomScoreAdj", "--oom-score-adj")
	}
	for i, m := range c.Mounts {
		if am, ok := mountFromDocker(u, path+".Mounts["+itoa(i)+"]", m); ok {
			t.Mounts = append(t.Mounts, am)
		}
	}
	if h := c.Healthcheck; h != nil && (len(h.Test) > 0 || h.Interval != 0 || h.Timeout != 0 || h.StartPeriod != 0 || h.StartInterval != 0 || h.Retries != 0) {
		if h.StartInterval != 0 {
			u.add(path+".Healthcheck.StartInterval", "--health-start-interval")
		}
		t.Healthcheck = &api.HealthConfig{Test: slices.Clone(h.Test), Interval: h.Interval, Timeout: h.Timeout, StartPeriod: h.StartPeriod, Retries: h.Retries}
	}
	for i, s := range c.Secrets {
		if s == nil {
			u.add(path+".Secrets["+itoa(i)+"]", "a null entry")
			continue
		}
		t.Secrets = append(t.Secrets, api.SecretReference{SecretID: s.SecretID, SecretName: s.SecretName, File: fileTargetFromDocker(s.File)})
	}
	for i, cf := range c.Configs {
		switch {
		case cf == nil:
			u.add(path+".Configs["+itoa(i)+"]", "a null entry")
			continue
		case cf.Runtime != nil:
			u.add(path+".Configs["+itoa(i)+"].Runtime", "configs as credential specs (Windows)")
			continue
		}
		var ft api.FileTarget
		if f := cf.File; f != nil {
			ft = api.FileTarget{Name: f.Name, UID: f.UID, GID: f.GID, Mode: uint32(f.Mode)}
		}
		t.Configs = append(t.Configs, api.ConfigReference{ConfigID: cf.ConfigID, ConfigName: cf.ConfigName, File: ft})
	}
}

func fileTargetFromDocker(f *dswarm.SecretReferenceFileTarget) api.FileTarget {
	if f == nil {
		return api.FileTarget{}
	}
	return api.FileTarget{Name: f.Name, UID: f.UID, GID: f.GID, Mode: uint32(f.Mode)}
}

func mountFromDocker(u *unsupported, path string, m mount.Mount) (api.Mount, bool) {
	out := api.Mount{Source: m.Source, Target: m.Target, ReadOnly: m.ReadOnly}
	n := len(u.fields)
	switch m.Type {
	case mount.TypeBind:
		out.Type = api.MountBind
	case mount.TypeVolume:
		out.Type = api.MountVolume
	case mount.TypeTmpfs:
		out.Type = api.MountTmpfs
	default:
		u.add(path+".Type", "mounts of type "+string(m.Type)+" (bind, volume and tmpfs are supported)")
	}
	if m.Consistency != "" && m.Consistency != mount.ConsistencyDefault {
		u.add(path+".Consistency", "--mount consistency=...")
	}
	if b := m.BindOptions; b != nil {
		if b.Propagation != "" {
			u.add(path+".BindOptions.Propagation", "--mount bind-propagation=...")
		}
		if b.NonRecursive || b.ReadOnlyNonRecursive || b.ReadOnlyForceRecursive {
			u.add(path+".BindOptions", "--mount bind-recursive=...")
		}
		if b.CreateMountpoint {
			u.add(path+".BindOptions.CreateMountpoint", "")
		}
	}
	if v := m.VolumeOptions; v != nil {
		out.NoCopy = v.NoCopy
		// docker stack deploy labels a stack's named volumes with the
		// stack's namespace, for docker volume ls to find them. Shoal's
		// volumes are directories on the node without labels (and Shoal
		// serves no volume API): that label alone passes, not kept.
		for _, k := range slices.Sorted(maps.Keys(v.Labels)) {
			if k != stackNamespaceLabel {
				u.add(path+".VolumeOptions.Labels", "--mount volume-label=...")
				break
			}
		}
		if v.Subpath != "" {
			u.add(path+".VolumeOptions.Subpath", "--mount volume-subpath=...")
		}
		if d := v.DriverConfig; d != nil && ((d.Name != "" && d.Name != "local") || len(d.Options) > 0) {
			u.add(path+".VolumeOptions.DriverConfig", "--mount volume-driver=..., volume-opt=...")
		}
	}
	if m.ImageOptions != nil {
		u.add(path+".ImageOptions", "")
	}
	if m.ClusterOptions != nil {
		u.add(path+".ClusterOptions", "cluster volumes")
	}
	if t := m.TmpfsOptions; t != nil {
		out.TmpfsSizeBytes = t.SizeBytes
		if t.Mode != 0 {
			u.add(path+".TmpfsOptions.Mode", "--mount tmpfs-mode=...")
		}
		if len(t.Options) > 0 {
			u.add(path+".TmpfsOptions.Options", "")
		}
	}
	return out, len(u.fields) == n
}

func resourcesFromDocker(u *unsupported, path string, r *dswarm.ResourceRequirements) *api.ResourceRequirements {
	if r == nil {
		return nil
	}
	if r.SwapBytes != nil {
		u.add(path+".SwapBytes", "")
	}
	if r.MemorySwappiness != nil {
		u.add(path+".MemorySwappiness", "")
	}
	var out api.ResourceRequirements
	if l := r.Limits; l != nil && *l != (dswarm.Limit{}) {
		out.Limits = &api.Resources{NanoCPUs: l.NanoCPUs, MemoryBytes: l.MemoryBytes, Pids: l.Pids}
	}
	if res := r.Reservations; res != nil && (res.NanoCPUs != 0 || res.MemoryBytes != 0 || len(res.GenericResources) > 0) {
		out.Reservations = &api.Resources{NanoCPUs: res.NanoCPUs, MemoryBytes: res.MemoryBytes}
		for i, g := range res.GenericResources {
			switch {
			case g.DiscreteResourceSpec != nil && g.NamedResourceSpec == nil:
				out.Reservations.Generic = append(out.Reservations.Generic, api.GenericResource{Kind: g.DiscreteResourceSpec.Kind, Value: g.DiscreteResourceSpec.Value})
			case g.NamedResourceSpec != nil && g.DiscreteResourceSpec == nil:
				out.Reservations.Generic = append(out.Reservations.Generic, api.GenericResource{Kind: g.NamedResourceSpec.Kind, Named: g.NamedResourceSpec.Value})
			default:
				u.add(path+".Reservations.GenericResources["+itoa(i)+"]", "exactly one of NamedResourceSpec and DiscreteResourceSpec")
			}
		}
	}
	if out.Limits == nil && out.Reservations == nil {
		return nil
	}
	return &out
}

func updateConfigFromDocker(c *dswarm.UpdateConfig) *api.UpdateConfig {
	if c == nil {
		return nil
	}
	return &api.UpdateConfig{Parallelism: c.Parallelism, Delay: c.Delay, Monitor: c.Monitor,
		FailureAction: api.FailureAction(c.FailureAction), MaxFailureRatio: float64(c.MaxFailureRatio), Order: api.UpdateOrder(c.Order)}
}

func endpointSpecFromDocker(e *dswarm.EndpointSpec) *api.EndpointSpec {
	if e == nil || (e.Mode == "" && len(e.Ports) == 0) {
		return nil
	}
	out := &api.EndpointSpec{Mode: api.EndpointMode(e.Mode)}
	for _, p := range e.Ports {
		out.Ports = append(out.Ports, portFromDocker(p))
	}
	return out
}

func portFromDocker(p dswarm.PortConfig) api.PortConfig {
	return api.PortConfig{Name: p.Name, Protocol: api.Protocol(p.Protocol), TargetPort: p.TargetPort,
		PublishedPort: p.PublishedPort, PublishMode: api.PublishMode(p.PublishMode)}
}

// ServiceSpecToDocker converts Shoal's service spec to Docker's. Shoal
// fields Docker has no place for (generic resources in limits, a process
// limit in reservations) are left out: updates through the Docker API
// keep them (see the handler's service update).
func ServiceSpecToDocker(s api.ServiceSpec) dswarm.ServiceSpec {
	return dswarm.ServiceSpec{
		Annotations:    annotationsToDocker(s.Annotations),
		TaskTemplate:   taskSpecToDocker(s.TaskTemplate),
		Mode:           modeToDocker(s.Mode),
		UpdateConfig:   updateConfigToDocker(s.UpdateConfig),
		RollbackConfig: updateConfigToDocker(s.RollbackConfig),
		EndpointSpec:   endpointSpecToDocker(s.EndpointSpec),
	}
}

func modeToDocker(m api.ServiceMode) dswarm.ServiceMode {
	var out dswarm.ServiceMode
	if r := m.Replicated; r != nil {
		out.Replicated = &dswarm.ReplicatedService{Replicas: ptr(r.Replicas)}
	}
	if m.Global != nil {
		out.Global = &dswarm.GlobalService{}
	}
	if j := m.ReplicatedJob; j != nil {
		out.ReplicatedJob = &dswarm.ReplicatedJob{MaxConcurrent: ptr(j.MaxConcurrent), TotalCompletions: ptr(j.TotalCompletions)}
	}
	if m.GlobalJob != nil {
		out.GlobalJob = &dswarm.GlobalJob{}
	}
	return out
}

func taskSpecToDocker(t api.TaskSpec) dswarm.TaskSpec {
	c := &dswarm.ContainerSpec{
		Image: t.Image, Labels: cloneMap(t.Labels), Command: slices.Clone(t.Command), Args: slices.Clone(t.Args),
		Hostname: t.Hostname, Env: slices.Clone(t.Env), Dir: t.Dir, User: t.User, Init: clonePtr(t.Init),
		StopSignal: t.StopSignal, ReadOnly: t.ReadOnly, StopGracePeriod: clonePtr(t.StopGracePeriod),
	}
	for _, m := range t.Mounts {
		dm := mount.Mount{Type: mount.Type(m.Type), Source: m.Source, Target: m.Target, ReadOnly: m.ReadOnly}
		if m.NoCopy {
			dm.VolumeOptions = &mount.VolumeOptions{NoCopy: true}
		}
		if m.TmpfsSizeBytes != 0 {
			dm.TmpfsOptions = &mount.TmpfsOptions{SizeBytes: m.TmpfsSizeBytes}
		}
		c.Mounts = append(c.Mounts, dm)
	}
	if h := t.Healthcheck; h != nil {
		c.Healthcheck = &container.HealthConfig{Test: slices.Clone(h.Test), Interval: h.Interval, Timeout: h.Timeout, StartPeriod: h.StartPeriod, Retries: h.Retries}
	}
	for _, s := range t.Secrets {
		c.Secrets = append(c.Secrets, &dswarm.SecretReference{SecretID: s.SecretID, SecretName: s.SecretName,
			File: &dswarm.SecretReferenceFileTarget{Name: s.File.Name, UID: s.File.UID, GID: s.File.GID, Mode: os.FileMode(s.File.Mode)}})
	}
	for _, cf := range t.Configs {
		c.Configs = append(c.Configs, &dswarm.ConfigReference{ConfigID: cf.ConfigID, ConfigName: cf.ConfigName,
			File: &dswarm.ConfigReferenceFileTarget{Name: cf.File.Name, UID: cf.File.UID, GID: cf.File.GID, Mode: os.FileMode(cf.File.Mode)}})
	}
	out := dswarm.TaskSpec{ContainerSpec: c, ForceUpdate: t.ForceUpdate}
	if r := t.Resources; r != nil {
		rr := &dswarm.ResourceRequirements{}
		if l := r.Limits; l != nil {
			rr.Limits = &dswarm.Limit{NanoCPUs: l.NanoCPUs, MemoryBytes: l.MemoryBytes, Pids: l.Pids}
		}
		if res := r.Reservations; res != nil {
			rr.Reservations = &dswarm.Resources{NanoCPUs: res.NanoCPUs, MemoryBytes: res.MemoryBytes, GenericResources: genericToDocker(res.Generic)}
		}
		out.Resources = rr
	}
	if r := t.RestartPolicy; r != nil {
		out.RestartPolicy = &dswarm.RestartPolicy{Condition: dswarm.RestartPolicyCondition(r.Condition), Delay: clonePtr(r.Delay),
			MaxAttempts: ptr(r.MaxAttempts), Window: ptr(r.Window)}
	}
	if p := t.Placement; p != nil {
		pl := &dswarm.Placement{Constraints: slices.Clone(p.Constraints), MaxReplicas: p.MaxReplicas}
		for _, pref := range p.Preferences {
			pl.Preferences = append(pl.Preferences, dswarm.PlacementPreference{Spread: &dswarm.SpreadOver{SpreadDescriptor: pref.Spread}})
		}
		for _, pf := range p.Platforms {
			pl.Platforms = append(pl.Platforms, dswarm.Platform{OS: pf.OS, Architecture: pf.Architecture})
		}
		out.Placement = pl
	}
	for _, n := range t.Networks {
		out.Networks = append(out.Networks, dswarm.NetworkAttachmentConfig{Target: n.Target, Aliases: slices.Clone(n.Aliases)})
	}
	if l := t.LogDriver; l != nil {
		out.LogDriver = &dswarm.Driver{Name: l.Name, Options: cloneMap(l.Options)}
	}
	return out
}

func genericToDocker(gs []api.GenericResource) []dswarm.GenericResource {
	var out []dswarm.GenericResource
	for _, g := range gs {
		if g.Named != "" {
			out = append(out, dswarm.GenericResource{NamedResourceSpec: &dswarm.NamedGenericResource{Kind: g.Kind, Value: g.Named}})
		} else {
			out = append(out, dswarm.GenericResource{DiscreteResourceSpec: &dswarm.DiscreteGenericResource{Kind: g.Kind, Value: g.Value}})
		}
	}
	return out
}

func updateConfigToDocker(c *api.UpdateConfig) *dswarm.UpdateConfig {
	if c == nil {
		return nil
	}
	return &dswarm.UpdateConfig{Parallelism: c.Parallelism, Delay: c.Delay, Monitor: c.Monitor,
		FailureAction: dswarm.FailureAction(c.FailureAction), MaxFailureRatio: float32(c.MaxFailureRatio), Order: dswarm.UpdateOrder(c.Order)}
}

func endpointSpecToDocker(e *api.EndpointSpec) *dswarm.EndpointSpec {
	if e == nil {
		return nil
	}
	out := &dswarm.EndpointSpec{Mode: dswarm.ResolutionMode(e.Mode)}
	for _, p := range e.Ports {
		out.Ports = append(out.Ports, portToDocker(p))
	}
	return out
}

func portToDocker(p api.PortConfig) dswarm.PortConfig {
	return dswarm.PortConfig{Name: p.Name, Protocol: network.IPProtocol(p.Protocol), TargetPort: p.TargetPort,
		PublishedPort: p.PublishedPort, PublishMode: dswarm.PortConfigPublishMode(p.PublishMode)}
}

// ServiceToDocker converts a service to Docker's form (without
// ServiceStatus, which the list computes from the tasks).
func ServiceToDocker(s *api.Service) dswarm.Service {
	out := dswarm.Service{
		ID:   s.ID,
		Meta: metaToDocker(s.Meta),
		Spec: ServiceSpecToDocker(s.Spec),
	}
	if s.PreviousSpec != nil {
		ps := ServiceSpecToDocker(*s.PreviousSpec)
		out.PreviousSpec = &ps
	}
	out.Endpoint = endpointToDocker(s)
	if st := s.UpdateStatus; st != nil {
		us := &dswarm.UpdateStatus{State: dswarm.UpdateState(st.State), Message: st.Message}
		if !st.StartedAt.IsZero() {
			us.StartedAt = ptr(st.StartedAt)
		}
		if !st.CompletedAt.IsZero() {
			us.CompletedAt = ptr(st.CompletedAt)
		}
		out.UpdateStatus = us
	}
	if s.Spec.Mode.IsJob() {
		js := &dswarm.JobStatus{}
		if j := s.JobStatus; j != nil {
			js.JobIteration = dswarm.Version{Index: j.JobIteration}
			js.LastExecution = j.LastExecution
		}
		out.JobStatus = js
	}
	return out
}

// endpointToDocker is what the managers allocated; until they allocate
// (Shoal's allocator comes with its networks), the spec's ports that name
// a published port.
func endpointToDocker(s *api.Service) dswarm.Endpoint {
	var out dswarm.Endpoint
	if es := endpointSpecToDocker(s.Spec.EndpointSpec); es != nil {
		out.Spec = *es
	}
	if e := s.Endpoint; e != nil {
		if es := endpointSpecToDocker(&e.Spec); es != nil {
			out.Spec = *es
		}
		for _, p := range e.Ports {
			out.Ports = append(out.Ports, portToDocker(p))
		}
		for _, v := range e.VirtualIPs {
			out.VirtualIPs = append(out.VirtualIPs, dswarm.EndpointVirtualIP{NetworkID: v.NetworkID, Addr: parsePrefix(v.Addr)})
		}
		return out
	}
	for _, p := range out.Spec.Ports {
		if p.PublishedPort != 0 {
			if p.Protocol == "" {
				p.Protocol = network.TCP
			}
			if p.PublishMode == "" {
				p.PublishMode = dswarm.PortConfigPublishModeIngress
			}
			out.Ports = append(out.Ports, p)
		}
	}
	return out
}

// parsePrefix reads an address or a prefix (Docker shows VIPs as
// prefixes); the zero prefix for neither.
func parsePrefix(s string) netip.Prefix {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a, a.BitLen())
	}
	return netip.Prefix{}
}

func metaToDocker(m api.Meta) dswarm.Meta {
	return dswarm.Meta{Version: dswarm.Version{Index: m.Version}, CreatedAt: m.CreatedAt, UpdatedAt: m.UpdatedAt}
}

// annotationsToDocker gives Labels as an empty map rather than null, as
// dockerd does (the CLI adds labels to the map it reads).
func annotationsToDocker(a api.Annotations) dswarm.Annotations {
	l := maps.Clone(a.Labels)
	if l == nil {
		l = map[string]string{}
	}
	return dswarm.Annotations{Name: a.Name, Labels: l}
}

func itoa(i int) string { return strconv.Itoa(i) }

func ptr[T any](v T) *T { return &v }

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

func cloneMap[M ~map[K]V, K comparable, V any](m M) M {
	if len(m) == 0 {
		return nil
	}
	return maps.Clone(m)
}

// durationOr is d, or def when d is zero.
func durationOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}
