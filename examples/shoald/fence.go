package main

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/spf13/pflag"

	"github.com/shoalproject/shoal/swarm"
)

// fenceFlags turn on two-node mode (swarm.TwoNode) on a manager: with
// exactly two managers and no arbiter, when the other one is lost this one
// runs --fence-command to power it off or cut it off, and goes on alone
// only once the command exits 0. Both managers need it.
type fenceFlags struct {
	Command string
	Delay   time.Duration
	Timeout time.Duration
	Witness []string
}

func (f *fenceFlags) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&f.Command, "fence-command", "", "two-node mode: shell command that powers off or isolates the other manager "+
		"(run with /bin/sh -c; the peer is in $SHOAL_FENCE_PEER_ID and $SHOAL_FENCE_PEER_ADDR; exit 0 only once it is off)")
	fs.DurationVar(&f.Delay, "fence-delay", 0, "two-node mode: how long the manager that led last waits before fencing its lost follower "+
		"(the follower of a lost leader fences at once, so after a cut between two live managers the follower wins; 0: the SDK's default); "+
		"more than --fence-timeout plus a second")
	fs.DurationVar(&f.Timeout, "fence-timeout", 0, "two-node mode: how long the fence command may take before it counts as failed (0: the SDK's default); under --fence-delay minus a second")
	fs.StringSliceVar(&f.Witness, "fence-witness", nil, "two-node mode: host:port this manager must reach before it fences (e.g. the default gateway's DNS port); repeatable")
}

// twoNode is the node's two-node mode; nil without --fence-command.
func (f *fenceFlags) twoNode() (*swarm.TwoNode, error) {
	var errs []error
	if f.Delay < 0 {
		errs = append(errs, fmt.Errorf("--fence-delay %v: must not be negative", f.Delay))
	}
	if f.Timeout < 0 {
		errs = append(errs, fmt.Errorf("--fence-timeout %v: must not be negative", f.Timeout))
	}
	if d, t := cmpOr(f.Delay, swarm.DefaultFenceDelay), cmpOr(f.Timeout, swarm.DefaultFenceTimeout); f.Delay >= 0 && f.Timeout >= 0 && t+time.Second >= d {
		errs = append(errs, fmt.Errorf("--fence-delay %v must exceed --fence-timeout %v by more than a second (one manager's fence must end before the other's starts)", d, t))
	}
	for _, w := range f.Witness {
		if _, _, err := net.SplitHostPort(w); err != nil {
			errs = append(errs, fmt.Errorf("--fence-witness %q: want host:port (a TCP port that answers)", w))
		}
	}
	if f.Command == "" && (f.Delay != 0 || f.Timeout != 0 || len(f.Witness) > 0) {
		errs = append(errs, errors.New("--fence-delay, --fence-timeout and --fence-witness need --fence-command (two-node mode)"))
	}
	if err := errors.Join(errs...); err != nil || f.Command == "" {
		return nil, err
	}
	tn := &swarm.TwoNode{Fencer: &swarm.CommandFencer{Path: "/bin/sh", Args: []string{"-c", f.Command}}, Delay: f.Delay, Timeout: f.Timeout}
	if len(f.Witness) > 0 {
		tn.Witness = swarm.DialWitness(f.Witness...)
	}
	return tn, nil
}

func cmpOr(v, def time.Duration) time.Duration {
	if v == 0 {
		return def
	}
	return v
}
