package stack

import (
	"errors"
	"fmt"
	"maps"
	"regexp"

	"github.com/shoalproject/shoal/swarm/api"
)

// Docker's stack labels, so that tools that know Docker's stacks find
// Shoal's.
const (
	// LabelNamespace is on every service, network, secret and config of a
	// stack (and on its containers), with the stack's name as its value.
	LabelNamespace = "com.docker.stack.namespace"
	// LabelImage is on every service of a stack: the image as the file
	// names it (before Options.MapImage).
	LabelImage = "com.docker.stack.image"
)

// MaxNameLength bounds a stack's name; service names (NAME_service) must
// fit in 63 characters.
const MaxNameLength = 48

// Stack is what Load makes of Compose files: the specs of the objects a
// deploy creates or updates, all labelled with the stack's namespace, and
// the names of the external objects they use.
type Stack struct {
	// Name is the stack's name (the namespace): objects are named
	// NAME_KEY unless the file gives them a name.
	Name string `json:"name"`
	// Services, Networks, Secrets and Configs are sorted by name.
	Services []api.ServiceSpec `json:"services,omitempty"`
	Networks []api.NetworkSpec `json:"networks,omitempty"`
	Secrets  []api.SecretSpec  `json:"secrets,omitempty"`
	Configs  []api.ConfigSpec  `json:"configs,omitempty"`
	// ExternalNetworks, ExternalSecrets and ExternalConfigs are the names
	// of objects the services use that the stack does not own (external:
	// true); Deploy refuses to start when one of them does not exist.
	ExternalNetworks []string `json:"externalNetworks,omitempty"`
	ExternalSecrets  []string `json:"externalSecrets,omitempty"`
	ExternalConfigs  []string `json:"externalConfigs,omitempty"`
	// Warnings are the keys Shoal ignored and the changes it made, for the
	// caller to print (Docker prints "Ignoring unsupported options: ...").
	Warnings []Warning `json:"warnings,omitempty"`
}

// Service returns the spec of the service named name (the full name,
// NAME_KEY), or nil.
func (s *Stack) Service(name string) *api.ServiceSpec {
	for i := range s.Services {
		if s.Services[i].Name == name {
			return &s.Services[i]
		}
	}
	return nil
}

// Network returns the spec of the network named name, or nil.
func (s *Stack) Network(name string) *api.NetworkSpec {
	for i := range s.Networks {
		if s.Networks[i].Name == name {
			return &s.Networks[i]
		}
	}
	return nil
}

// Validate checks the stack's name and runs every spec through the API's
// Validate, so a stack the cluster would refuse is refused before any
// change. Errors name the object and wrap api.ErrInvalidSpec.
func (s *Stack) Validate() error {
	if err := CheckName(s.Name); err != nil {
		return err
	}
	var errs []error
	seen := map[string]bool{}
	check := func(kind, name string, err error) {
		if seen[kind+"/"+name] {
			errs = append(errs, fmt.Errorf("stack: %s %s: %w: declared twice", kind, name, api.ErrInvalidSpec))
		}
		seen[kind+"/"+name] = true
		if err != nil {
			errs = append(errs, fmt.Errorf("stack: %s %s: %w", kind, name, err))
		}
	}
	for i := range s.Networks {
		check("network", s.Networks[i].Name, s.Networks[i].Validate())
	}
	for i := range s.Secrets {
		check("secret", s.Secrets[i].Name, s.Secrets[i].Validate())
	}
	for i := range s.Configs {
		check("config", s.Configs[i].Name, s.Configs[i].Validate())
	}
	for i := range s.Services {
		check("service", s.Services[i].Name, s.Services[i].Validate())
	}
	return errors.Join(errs...)
}

// nameRE is what a stack name may be: it prefixes object names, which
// must start and end with a letter or digit.
var nameRE = regexp.MustCompile(`^[a-zA-Z0-9](?:[a-zA-Z0-9_.-]*[a-zA-Z0-9])?$`)

// CheckName reports whether name can name a stack.
func CheckName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: a stack needs a name", ErrInvalidName)
	case len(name) > MaxNameLength:
		return fmt.Errorf("%w: %q is longer than %d characters", ErrInvalidName, name, MaxNameLength)
	case !nameRE.MatchString(name):
		return fmt.Errorf("%w: %q must start and end with a letter or digit and contain only letters, digits, '_', '.' and '-'", ErrInvalidName, name)
	}
	return nil
}

// scope names an object of the stack as Docker does: NAME_KEY.
func scope(stack, key string) string { return stack + "_" + key }

// withNamespace returns labels plus the stack's namespace label, in a new
// map.
func withNamespace(labels map[string]string, stack string) map[string]string {
	out := make(map[string]string, len(labels)+1)
	maps.Copy(out, labels)
	out[LabelNamespace] = stack
	return out
}
