package main

import (
	"context"
	"strings"
	"testing"
)

// Two-node mode's flags: bad values are refused with the flag's name, and
// the witness and delay need the fence command.
func TestFenceFlagsBadInput(t *testing.T) {
	base := []string{"init", "--tasks=false", "--data-plane=false", "--listen-addr", "127.0.0.1:0", "--advertise-addr", "127.0.0.1"}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--fence-command", "true", "--fence-witness", "gateway"}, `--fence-witness "gateway": want host:port`},
		{[]string{"--fence-command", "true", "--fence-delay", "-1s"}, "--fence-delay -1s: must not be negative"},
		{[]string{"--fence-witness", "192.0.2.1:53"}, "need --fence-command"},
		{[]string{"--fence-delay", "soon"}, "fence-delay"},
		{[]string{"--fence-command", "true", "--fence-delay", "3s"}, "--fence-delay 3s must exceed --fence-timeout 3s"},
		{[]string{"--fence-command", "true", "--fence-timeout", "-1s"}, "--fence-timeout -1s: must not be negative"},
	} {
		args := append(append([]string{}, base...), "--data-dir", t.TempDir())
		args = append(args, c.args...)
		var out syncBuffer
		err := run(context.Background(), rootNamespaceSafe(args), &out, &out)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("shoald %s: %v, want an error with %q\n%s", strings.Join(args, " "), err, c.want, out.String())
		}
	}
}
