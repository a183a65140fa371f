package api

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/shoalproject/shoal/scheduler"
)

// ErrInvalidSpec is wrapped by every *ValidationError.
var ErrInvalidSpec = errors.New("api: invalid spec")

// Problem is one thing wrong with a spec, at a field path such as
// "spec.taskTemplate.resources.limits.memoryBytes".
type Problem struct {
	Path    string `json:"path"`
	Message string `json:"message"`
}

func (p Problem) String() string { return p.Path + ": " + p.Message }

// ValidationError lists every problem found, not only the first, so a user
// fixes a spec in one go.
type ValidationError struct {
	Problems []Problem `json:"problems"`
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.String()
	}
	return "invalid spec: " + strings.Join(parts, "; ")
}

func (e *ValidationError) Unwrap() error { return ErrInvalidSpec }

type validator struct {
	root     string
	problems []Problem
}

func newValidator(root string) *validator { return &validator{root: root} }

func (v *validator) add(field, msg string) {
	p := v.root
	if field != "" {
		p += "." + field
	}
	v.problems = append(v.problems, Problem{Path: p, Message: msg})
}

func (v *validator) addf(field, format string, args ...any) {
	v.add(field, fmt.Sprintf(format, args...))
}

func (v *validator) err() error {
	if len(v.problems) == 0 {
		return nil
	}
	return &ValidationError{Problems: v.problems}
}

func pathIdx(field string, i int) string { return fmt.Sprintf("%s[%d]", field, i) }

// nameRE is what Docker accepts for service, network, secret and config
// names: usable as a DNS label.
var nameRE = regexp.MustCompile(`^[a-zA-Z0-9](?:[a-zA-Z0-9_.-]*[a-zA-Z0-9])?$`)

func (v *validator) name(field, name string, maxLen int) {
	switch {
	case name == "":
		v.add(field, "is required")
	case len(name) > maxLen:
		v.addf(field, "must be at most %d characters, got %d", maxLen, len(name))
	case !nameRE.MatchString(name):
		v.addf(field, "%q must start and end with a letter or digit and contain only letters, digits, '_', '.' and '-'", name)
	}
}

func (v *validator) labels(field string, labels map[string]string) {
	for k := range labels {
		if k == "" || strings.ContainsAny(k, " \t\n=") {
			v.addf(field, "label key %q must be non-empty with no spaces or '='", k)
		}
	}
}

func (v *validator) cidr(field, s string) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		v.addf(field, "%q is not a CIDR subnet such as 10.0.0.0/24", s)
	} else if p.Masked() != p {
		v.addf(field, "%q has host bits set; did you mean %s?", s, p.Masked())
	}
}

// overlaySubnet refuses subnets an overlay network cannot use: not IPv4,
// wider than /8 or narrower than /30, or in ranges with another meaning
// (this host, loopback, link-local, multicast, reserved), where a route
// on every node would cut the nodes off from something else.
func (v *validator) overlaySubnet(field, s string) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return // cidr said so
	}
	switch {
	case !p.Addr().Is4():
		v.addf(field, "%s is not IPv4: overlay networks are IPv4", p)
	case p.Bits() < 8 || p.Bits() > 30:
		v.addf(field, "%s: the prefix length must be between /8 and /30", p)
	default:
		for _, r := range reservedSubnets {
			if r.Overlaps(p) {
				v.addf(field, "%s overlaps %s, which is not for overlay networks: choose a private range such as 10.0.0.0/8", p, r)
				break
			}
		}
	}
}

var reservedSubnets = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),      // this host
	netip.MustParsePrefix("127.0.0.0/8"),    // loopback
	netip.MustParsePrefix("169.254.0.0/16"), // link-local
	netip.MustParsePrefix("224.0.0.0/4"),    // multicast
	netip.MustParsePrefix("240.0.0.0/4"),    // reserved, broadcast
}

func (v *validator) nonNegative(field string, d time.Duration) {
	if d < 0 {
		v.add(field, "must not be negative")
	}
}

// Validate reports every problem of the spec, with DefaultMaxReplicas as
// the bound on replicas and job completions.
func (s *ServiceSpec) Validate() error { return s.ValidateWithin(DefaultMaxReplicas) }

// ValidateWithin reports every problem of the spec, with maxReplicas (the
// cluster's OrchestrationConfig.MaxReplicas) as the bound on replicas, job
// completions and concurrency.
func (s *ServiceSpec) ValidateWithin(maxReplicas uint64) error {
	v := newValidator("spec")
	v.name("name", s.Name, 63)
	v.labels("labels", s.Labels)
	s.Mode.validate(v)
	s.Mode.bound(v, maxReplicas)
	s.TaskTemplate.validate(v, "taskTemplate")
	if s.UpdateConfig != nil {
		s.UpdateConfig.validate(v, "updateConfig")
	}
	if s.RollbackConfig != nil {
		s.RollbackConfig.validate(v, "rollbackConfig")
		if s.RollbackConfig.FailureAction == ActionRollback {
			v.add("rollbackConfig.failureAction", `"rollback" is not allowed for a rollback; use pause or continue`)
		}
	}
	if s.EndpointSpec != nil {
		s.EndpointSpec.validate(v, "endpointSpec")
	}
	if s.Mode.IsJob() && s.UpdateConfig != nil {
		v.add("updateConfig", "jobs cannot have an update config")
	}
	return v.err()
}

func (m *ServiceMode) validate(v *validator) {
	n := 0
	for _, set := range []bool{m.Replicated != nil, m.Global != nil, m.ReplicatedJob != nil, m.GlobalJob != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		v.addf("mode", "exactly one of replicated, global, replicatedJob, globalJob must be set, got %d", n)
	}
	if j := m.ReplicatedJob; j != nil && j.MaxConcurrent > j.TotalCompletions && j.TotalCompletions > 0 {
		v.add("mode.replicatedJob.maxConcurrent", "must not exceed totalCompletions")
	}
}

// bound refuses task counts over max: one spec must not make the leader
// create millions of tasks.
func (m *ServiceMode) bound(v *validator, max uint64) {
	over := func(field string, n uint64) {
		if n > max {
			v.addf(field, "must be at most %d, got %d (the cluster's orchestration.maxReplicas; raise it to allow more)", max, n)
		}
	}
	if r := m.Replicated; r != nil {
		over("mode.replicated.replicas", r.Replicas)
	}
	if j := m.ReplicatedJob; j != nil {
		over("mode.replicatedJob.totalCompletions", j.TotalCompletions)
		over("mode.replicatedJob.maxConcurrent", j.MaxConcurrent)
	}
}

func (u *UpdateConfig) validate(v *validator, f string) {
	v.nonNegative(f+".delay", u.Delay)
	v.nonNegative(f+".monitor", u.Monitor)
	if !(u.MaxFailureRatio >= 0 && u.MaxFailureRatio <= 1) { // NaN fails both
		v.addf(f+".maxFailureRatio", "must be between 0 and 1, got %g", u.MaxFailureRatio)
	}
	switch u.FailureAction {
	case "", ActionPause, ActionContinue, ActionRollback:
	default:
		v.addf(f+".failureAction", "must be pause, continue or rollback, got %q", u.FailureAction)
	}
	switch u.Order {
	case "", StopFirst, StartFirst:
	default:
		v.addf(f+".order", "must be stop-first or start-first, got %q", u.Order)
	}
}

func (e *EndpointSpec) validate(v *validator, f string) {
	switch e.Mode {
	case "", EndpointVIP, EndpointDNSRR:
	default:
		v.addf(f+".mode", "must be vip or dnsrr, got %q", e.Mode)
	}
	seen := map[string]int{}
	for i, p := range e.Ports {
		pf := f + "." + pathIdx("ports", i)
		switch p.Protocol {
		case "", TCP, UDP, SCTP:
		default:
			v.addf(pf+".protocol", "must be tcp, udp or sctp, got %q", p.Protocol)
		}
		switch p.PublishMode {
		case "", PublishIngress, PublishHost:
		default:
			v.addf(pf+".publishMode", "must be ingress or host, got %q", p.PublishMode)
		}
		if p.TargetPort == 0 || p.TargetPort > 65535 {
			v.addf(pf+".targetPort", "must be 1-65535, got %d", p.TargetPort)
		}
		if p.PublishedPort > 65535 {
			v.addf(pf+".publishedPort", "must be 0 (pick one) or 1-65535, got %d", p.PublishedPort)
		}
		if e.Mode == EndpointDNSRR && p.PublishMode != PublishHost {
			v.add(pf+".publishMode", "dnsrr services can only publish in host mode (the routing mesh needs a VIP)")
		}
		if p.PublishedPort != 0 {
			proto := p.Protocol
			if proto == "" {
				proto = TCP
			}
			k := fmt.Sprintf("%d/%s", p.PublishedPort, proto)
			if j, dup := seen[k]; dup {
				v.addf(pf+".publishedPort", "%s is already published by ports[%d]", k, j)
			}
			seen[k] = i
		}
	}
}

func (t *TaskSpec) validate(v *validator, f string) {
	if strings.TrimSpace(t.Image) == "" {
		v.add(f+".image", "is required (for example example/web:1.0)")
	} else if strings.ContainsAny(t.Image, " \t\n") {
		v.addf(f+".image", "%q must not contain spaces", t.Image)
	}
	for i, e := range t.Env {
		if e == "" || strings.HasPrefix(e, "=") {
			v.addf(f+"."+pathIdx("env", i), "%q must be KEY=VALUE or KEY", e)
		}
	}
	if t.Dir != "" && !path.IsAbs(t.Dir) {
		v.addf(f+".dir", "%q must be an absolute path", t.Dir)
	}
	v.labels(f+".labels", t.Labels)
	for k := range t.Labels {
		if strings.HasPrefix(k, ReservedLabelPrefix) {
			v.addf(f+".labels", "label %q: keys starting with %q are set by Shoal itself (which task and service a container is); choose another key", k, ReservedLabelPrefix)
		}
	}
	targets := map[string]bool{}
	for i, m := range t.Mounts {
		mf := f + "." + pathIdx("mounts", i)
		if !path.IsAbs(m.Target) {
			v.addf(mf+".target", "%q must be an absolute path", m.Target)
		} else if targets[path.Clean(m.Target)] {
			v.addf(mf+".target", "%q is mounted twice", m.Target)
		}
		targets[path.Clean(m.Target)] = true
		if m.NoCopy && m.Type != MountVolume {
			v.add(mf+".noCopy", "applies to volume mounts only")
		}
		switch m.Type {
		case MountBind:
			if !path.IsAbs(m.Source) {
				v.addf(mf+".source", "a bind mount needs an absolute host path, got %q", m.Source)
			}
		case MountVolume:
			if m.Source != "" && !nameRE.MatchString(m.Source) {
				v.addf(mf+".source", "volume name %q is not valid", m.Source)
			}
		case MountTmpfs:
			if m.Source != "" {
				v.add(mf+".source", "a tmpfs mount has no source")
			}
			if m.TmpfsSizeBytes < 0 {
				v.add(mf+".tmpfsSizeBytes", "must not be negative")
			}
		default:
			v.addf(mf+".type", "must be bind, volume or tmpfs, got %q", m.Type)
		}
	}
	for i, s := range t.Secrets {
		v.fileRef(f+"."+pathIdx("secrets", i), "secretName", s.SecretName+s.SecretID, s.File)
	}
	for i, c := range t.Configs {
		v.fileRef(f+"."+pathIdx("configs", i), "configName", c.ConfigName+c.ConfigID, c.File)
	}
	if h := t.Healthcheck; h != nil {
		hf := f + ".healthcheck"
		switch {
		case len(h.Test) == 0:
			v.add(hf+".test", `is required: ["CMD", ...], ["CMD-SHELL", "..."] or ["NONE"]`)
		case h.Test[0] == "NONE" || h.Test[0] == "CMD" || h.Test[0] == "CMD-SHELL":
			if h.Test[0] != "NONE" && len(h.Test) < 2 {
				v.addf(hf+".test", "%s needs a command", h.Test[0])
			}
		default:
			v.addf(hf+".test", `must start with "CMD", "CMD-SHELL" or "NONE", got %q`, h.Test[0])
		}
		for name, d := range map[string]time.Duration{"interval": h.Interval, "timeout": h.Timeout, "startPeriod": h.StartPeriod} {
			if d != 0 && d < time.Millisecond {
				v.addf(hf+"."+name, "must be 0 (default) or at least 1ms, got %v", d)
			}
		}
		if h.Retries < 0 {
			v.add(hf+".retries", "must not be negative")
		}
	}
	if t.StopGracePeriod != nil {
		v.nonNegative(f+".stopGracePeriod", *t.StopGracePeriod)
	}
	if r := t.Resources; r != nil {
		if r.Limits != nil {
			validateResources(v, f+".resources.limits", r.Limits)
			if r.Limits.MemoryBytes != 0 && r.Limits.MemoryBytes < MinMemoryLimit {
				v.addf(f+".resources.limits.memoryBytes", "must be >= 4MiB, got %d bytes", r.Limits.MemoryBytes)
			}
		}
		if r.Reservations != nil {
			validateResources(v, f+".resources.reservations", r.Reservations)
			if r.Limits != nil && r.Limits.MemoryBytes > 0 && r.Reservations.MemoryBytes > r.Limits.MemoryBytes {
				v.add(f+".resources.reservations.memoryBytes", "must not exceed the memory limit")
			}
			if r.Limits != nil && r.Limits.NanoCPUs > 0 && r.Reservations.NanoCPUs > r.Limits.NanoCPUs {
				v.add(f+".resources.reservations.nanoCPUs", "must not exceed the CPU limit")
			}
		}
	}
	if r := t.RestartPolicy; r != nil {
		switch r.Condition {
		case "", RestartNone, RestartOnFailure, RestartAny:
		default:
			v.addf(f+".restartPolicy.condition", "must be none, on-failure or any, got %q", r.Condition)
		}
		if r.Delay != nil {
			v.nonNegative(f+".restartPolicy.delay", *r.Delay)
		}
		v.nonNegative(f+".restartPolicy.window", r.Window)
	}
	if p := t.Placement; p != nil {
		for i, c := range p.Constraints {
			if err := CheckConstraint(c); err != nil {
				v.add(f+".placement."+pathIdx("constraints", i), err.Error())
			}
		}
		for i, pref := range p.Preferences {
			if !strings.HasPrefix(pref.Spread, "node.labels.") && !strings.HasPrefix(pref.Spread, "engine.labels.") || strings.HasSuffix(pref.Spread, ".") {
				v.addf(f+".placement."+pathIdx("preferences", i)+".spread", "%q must be node.labels.KEY or engine.labels.KEY", pref.Spread)
			}
		}
	}
	for i, n := range t.Networks {
		if n.Target == "" {
			v.add(f+"."+pathIdx("networks", i)+".target", "is required (a network name or ID)")
		}
	}
}

// fileRef checks a secret or config reference: named (by name or ID), and
// a file target without '..' and with a real mode.
func (v *validator) fileRef(f, nameField, nameOrID string, ft FileTarget) {
	if nameOrID == "" {
		v.add(f+"."+nameField, "is required")
	}
	if strings.Contains(ft.Name, "..") {
		v.addf(f+".file.name", "%q must not contain '..'", ft.Name)
	}
	if ft.Mode > 0o777 {
		v.addf(f+".file.mode", "%o is not a file mode", ft.Mode)
	}
}

func validateResources(v *validator, f string, r *Resources) {
	if r.NanoCPUs < 0 {
		v.add(f+".nanoCPUs", "must not be negative")
	}
	if r.MemoryBytes < 0 {
		v.add(f+".memoryBytes", "must not be negative")
	}
	if r.Pids < 0 {
		v.add(f+".pids", "must not be negative")
	}
	for i, g := range r.Generic {
		gf := f + "." + pathIdx("generic", i)
		if g.Kind == "" {
			v.add(gf+".kind", "is required")
		}
		if g.Value < 0 {
			v.add(gf+".value", "must not be negative")
		}
		if g.Value != 0 && g.Named != "" {
			v.add(gf, "is either a count (value) or a named unit (named), not both")
		}
	}
}

// CheckConstraint reports whether a placement constraint is well formed:
// KEY==VALUE or KEY!=VALUE with KEY one of node.id, node.hostname,
// node.role, node.platform.os, node.platform.arch, node.labels.NAME,
// engine.labels.NAME. It is the scheduler's grammar (one parser, so a spec
// the API accepts is one the scheduler understands).
func CheckConstraint(c string) error {
	_, err := scheduler.ParseConstraint(c)
	return err
}

// Validate reports every problem of the spec.
func (s *NetworkSpec) Validate() error {
	v := newValidator("spec")
	v.name("name", s.Name, 63)
	v.labels("labels", s.Labels)
	if s.Driver != "" && s.Driver != "overlay" {
		v.addf("driver", "must be overlay (the only driver of a swarm network), got %q", s.Driver)
	}
	if s.Ingress && s.Attachable {
		v.add("attachable", "the ingress network cannot be attachable")
	}
	if s.IPAM != nil {
		if s.IPAM.Subnet != "" {
			v.cidr("ipam.subnet", s.IPAM.Subnet)
			v.overlaySubnet("ipam.subnet", s.IPAM.Subnet)
		} else if s.IPAM.Gateway != "" {
			v.add("ipam.gateway", "a gateway needs its subnet (ipam.subnet)")
		}
		sub, subErr := netip.ParsePrefix(s.IPAM.Subnet)
		if s.IPAM.Gateway != "" {
			v.hostAddr("ipam.gateway", s.IPAM.Gateway, sub)
		}
		if s.IPAM.IPRange != "" {
			v.cidr("ipam.ipRange", s.IPAM.IPRange)
			r, err := netip.ParsePrefix(s.IPAM.IPRange)
			switch {
			case err != nil || r.Masked() != r:
			case s.IPAM.Subnet == "":
				v.add("ipam.ipRange", "an IP range needs its subnet (ipam.subnet)")
			case subErr == nil && (!sub.Contains(r.Addr()) || r.Bits() < sub.Bits()):
				v.addf("ipam.ipRange", "%s is not inside subnet %s", r, sub)
			case subErr == nil && r.Bits() >= 31:
				v.addf("ipam.ipRange", "%s holds no address to hand out: give a range of /30 or wider", r)
			}
		}
		if len(s.IPAM.AuxAddresses) > 0 && s.IPAM.Subnet == "" {
			v.add("ipam.auxAddresses", "auxiliary addresses need their subnet (ipam.subnet)")
		}
		if len(s.IPAM.AuxAddresses) > 256 {
			v.addf("ipam.auxAddresses", "%d addresses: at most 256", len(s.IPAM.AuxAddresses))
		}
		seen := map[string]string{}
		for _, name := range slices.Sorted(maps.Keys(s.IPAM.AuxAddresses)) {
			ad := s.IPAM.AuxAddresses[name]
			field := "ipam.auxAddresses[" + name + "]"
			if name == "" || len(name) > 255 {
				v.add(field, "a name of 1 to 255 characters")
			}
			if !v.hostAddr(field, ad, sub) {
				continue
			}
			if ad == s.IPAM.Gateway {
				v.addf(field, "%s is the gateway", ad)
			} else if other, dup := seen[ad]; dup {
				v.addf(field, "%s is also %s's address", ad, other)
			}
			seen[ad] = name
		}
	}
	return v.err()
}

// hostAddr checks that s is a host address of sub (when sub is valid): not
// its network or broadcast address. It reports whether s is an address.
func (v *validator) hostAddr(field, s string, sub netip.Prefix) bool {
	ad, err := netip.ParseAddr(s)
	if err != nil {
		v.addf(field, "%q is not an IP address", s)
		return false
	}
	if !sub.IsValid() {
		return true
	}
	if !sub.Contains(ad) {
		v.addf(field, "%s is not inside subnet %s", ad, sub)
	} else if ad == sub.Masked().Addr() || (ad.Is4() && sub.Bits() < 31 && ad == lastAddr(sub)) {
		v.addf(field, "%s is the network or broadcast address of %s: give a host address", ad, sub)
	}
	return true
}

// lastAddr is an IPv4 prefix's last address (its broadcast address).
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Validate reports every problem of the spec.
func (s *SecretSpec) Validate() error { return validateData(s.Annotations, s.Data) }

// Validate reports every problem of the spec.
func (s *ConfigSpec) Validate() error { return validateData(s.Annotations, s.Data) }

func validateData(a Annotations, data []byte) error {
	v := newValidator("spec")
	v.name("name", a.Name, 64)
	v.labels("labels", a.Labels)
	if len(data) == 0 {
		v.add("data", "is required")
	} else if len(data) > MaxSecretSize {
		v.addf("data", "must be at most 500 KiB, got %d bytes", len(data))
	}
	return v.err()
}
