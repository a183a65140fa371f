package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("module x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestResolveAnchorFromModuleRootAndWorktree: the default -swarmkit path
// (beside the checkout) is found from a subdirectory of the module and
// from a linked git worktree placed elsewhere, and a missing harness is
// an error naming where it looked.
func TestResolveAnchorFromModuleRootAndWorktree(t *testing.T) {
	top := t.TempDir()
	main := filepath.Join(top, "work", "main")
	writeFile(t, filepath.Join(main, "go.mod"))
	writeFile(t, filepath.Join(main, "examples", "x", "keep"))
	writeFile(t, filepath.Join(top, "work", "shared", "anchors", "h", "main.go"))
	want := filepath.Join(top, "work", "shared", "anchors", "h")

	t.Chdir(filepath.Join(main, "examples", "x"))
	if got, err := resolveAnchor("../shared/anchors/h", "main.go"); err != nil || got != want {
		t.Fatalf("from a module subdirectory: %q, %v; want %q", got, err, want)
	}

	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git: the worktree case needs it")
	}
	git := func(dir string, args ...string) {
		cmd := exec.Command("git", append([]string{"-C", dir, "-c", "user.name=t", "-c", "user.email=t@t"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v %s", args, err, out)
		}
	}
	git(main, "init", "-q")
	git(main, "add", ".")
	git(main, "commit", "-qm", "x")
	wt := filepath.Join(top, "elsewhere", "wt")
	git(main, "worktree", "add", "-q", wt)
	t.Chdir(filepath.Join(wt, "examples", "x"))
	if got, err := resolveAnchor("../shared/anchors/h", "main.go"); err != nil || got != want {
		t.Fatalf("from a worktree: %q, %v; want %q", got, err, want)
	}
	if _, err := resolveAnchor("../shared/anchors/none", "main.go"); err == nil || !strings.Contains(err.Error(), "-swarmkit") {
		t.Fatalf("a missing harness: %v", err)
	}
}
