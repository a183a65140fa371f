// Package clitest is the test kit of command-line sessions (the docker CLI
// and shoalctl against Shoal): the transcript's command lines and output,
// and checks of what a command printed.
//
//	fmt.Fprintf(&log, "$ docker %s\n%s", clitest.ShellQuote(args), clitest.FoldRepeats(out))
//	clitest.MustContain(t, "docker node ls", out, "Leader")
package clitest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// ShellQuote joins args as a shell would read them back: arguments with
// spaces, quotes or shell characters in single quotes.
func ShellQuote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " '\"{}*$|&;<>()") {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		} else {
			q[i] = a
		}
	}
	return strings.Join(q, " ")
}

// FoldRepeats folds runs of equal lines (the redraws of a progress
// display: "verify: Waiting 4 seconds ...") into one with a count.
func FoldRepeats(s string) string {
	if s == "" {
		return ""
	}
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	var b strings.Builder
	for i := 0; i < len(lines); {
		j := i
		for j < len(lines) && lines[j] == lines[i] {
			j++
		}
		b.WriteString(lines[i])
		if j-i > 1 {
			fmt.Fprintf(&b, "   [x%d]", j-i)
		}
		b.WriteString("\n")
		i = j
	}
	return b.String()
}

// MustContain fails t unless s holds every part.
func MustContain(t testing.TB, what, s string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(s, p) {
			t.Fatalf("%s: %q not in:\n%s", what, p, s)
		}
	}
}

// SaveTranscript logs the session's transcript when t ends, and writes it
// to $SHOAL_DOCKERAPI_TRANSCRIPT/NAME.txt when that is set (the closing
// notes show them).
func SaveTranscript(t testing.TB, name string, log *strings.Builder) {
	t.Cleanup(func() {
		t.Logf("CLI session (%s):\n%s", name, log.String())
		if dir := os.Getenv("SHOAL_DOCKERAPI_TRANSCRIPT"); dir != "" {
			os.WriteFile(filepath.Join(dir, name+".txt"), []byte(log.String()), 0o644)
		}
	})
}
