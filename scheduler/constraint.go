package scheduler

import (
	"errors"
	"fmt"
	"strings"
)

// ErrBadConstraint is wrapped by constraint parse errors.
var ErrBadConstraint = errors.New("scheduler: bad constraint")

// Constraint is a parsed placement constraint.
type Constraint struct {
	Key   string // as written: node.labels.zone
	Equal bool   // == (true) or != (false)
	Value string
	kind  constraintKind
	label string // for label keys
}

type constraintKind int

const (
	keyNodeID constraintKind = iota
	keyHostname
	keyRole
	keyOS
	keyArch
	keyNodeLabel
	keyEngineLabel
)

// ParseConstraint parses KEY==VALUE or KEY!=VALUE, where KEY is node.id,
// node.hostname, node.role, node.platform.os, node.platform.arch,
// node.labels.NAME or engine.labels.NAME. It is Shoal's one constraint
// grammar: the API validates specs with it (api.CheckConstraint). Keys are
// matched without regard to case, as are values; label names keep theirs.
func ParseConstraint(s string) (Constraint, error) {
	eq := strings.Index(s, "==")
	ne := strings.Index(s, "!=")
	var c Constraint
	var op int
	switch {
	case eq < 0 && ne < 0:
		return c, fmt.Errorf("%w %q: no operator; write KEY==VALUE or KEY!=VALUE", ErrBadConstraint, s)
	case ne < 0 || (eq >= 0 && eq < ne):
		op, c.Equal = eq, true
	default:
		op = ne
	}
	c.Key = strings.TrimSpace(s[:op])
	c.Value = strings.TrimSpace(s[op+2:])
	if c.Value == "" {
		return c, fmt.Errorf("%w %q: no value after the operator", ErrBadConstraint, s)
	}
	if strings.Contains(c.Value, "==") || strings.Contains(c.Value, "!=") {
		return c, fmt.Errorf("%w %q: more than one operator", ErrBadConstraint, s)
	}
	switch k := strings.ToLower(c.Key); {
	case k == "node.id":
		c.kind = keyNodeID
	case k == "node.hostname":
		c.kind = keyHostname
	case k == "node.role":
		c.kind = keyRole
		if v := strings.ToLower(c.Value); v != "manager" && v != "worker" {
			return c, fmt.Errorf("%w %q: node.role is manager or worker", ErrBadConstraint, s)
		}
	case k == "node.platform.os":
		c.kind = keyOS
	case k == "node.platform.arch":
		c.kind = keyArch
	case strings.HasPrefix(k, "node.labels.") && len(k) > len("node.labels."):
		c.kind, c.label = keyNodeLabel, c.Key[len("node.labels."):]
	case strings.HasPrefix(k, "engine.labels.") && len(k) > len("engine.labels."):
		c.kind, c.label = keyEngineLabel, c.Key[len("engine.labels."):]
	default:
		return c, fmt.Errorf("%w %q: unknown key %q (node.id, node.hostname, node.role, node.platform.os, node.platform.arch, node.labels.NAME, engine.labels.NAME)", ErrBadConstraint, s, c.Key)
	}
	if c.label != "" && strings.ContainsAny(c.label, " \t\n=!") {
		return c, fmt.Errorf("%w %q: label name %q must not contain spaces, '=' or '!'", ErrBadConstraint, s, c.label)
	}
	return c, nil
}

// Match reports whether a node satisfies the constraint. Values compare
// without regard to case, as in Docker; a missing label never equals a
// value (so != holds).
func (c Constraint) Match(n *Node) bool {
	var have string
	var ok = true
	switch c.kind {
	case keyNodeID:
		have = n.ID
	case keyHostname:
		have = n.Hostname
	case keyRole:
		have = n.Role
	case keyOS:
		have = n.OS
	case keyArch:
		have = normArch(n.Arch)
		return strings.EqualFold(have, normArch(c.Value)) == c.Equal
	case keyNodeLabel:
		have, ok = n.Labels[c.label]
	case keyEngineLabel:
		have, ok = n.EngineLabels[c.label]
	}
	return (ok && strings.EqualFold(have, c.Value)) == c.Equal
}

func (c Constraint) String() string {
	op := "!="
	if c.Equal {
		op = "=="
	}
	return c.Key + op + c.Value
}

// normArch maps the names kernels report to the names images use.
func normArch(a string) string {
	switch strings.ToLower(a) {
	case "x86_64", "x86-64":
		return "amd64"
	case "aarch64":
		return "arm64"
	case "armhf", "armv7l":
		return "arm"
	}
	return strings.ToLower(a)
}
