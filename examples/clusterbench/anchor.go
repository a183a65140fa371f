package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// resolveAnchor finds a reference program given by a relative path such
// as ../shared/anchors/swarmkit-sched, which names a place beside the
// module's checkout, whatever directory the bench runs from: it tries the
// path from the working directory, then from the module root (the nearest
// directory above with a go.mod), then from the main checkout when the
// module root is a linked git worktree (whose checkout is elsewhere, so
// "beside it" means beside the main one). An absolute path is taken as it
// is. want is a file that must be in the directory.
func resolveAnchor(path, want string) (string, error) {
	if filepath.IsAbs(path) {
		return path, statIn(path, want)
	}
	var tried []string
	for _, base := range anchorBases() {
		dir := filepath.Clean(filepath.Join(base, path))
		if statIn(dir, want) == nil {
			return dir, nil
		}
		tried = append(tried, dir)
	}
	return "", fmt.Errorf("no %s in any of %s: give the directory with -swarmkit", want, strings.Join(tried, ", "))
}

func statIn(dir, want string) error {
	_, err := os.Stat(filepath.Join(dir, want))
	return err
}

// anchorBases are the directories a relative anchor path is tried from,
// in order, without repeats.
func anchorBases() []string {
	var bases []string
	add := func(d string) {
		for _, b := range bases {
			if b == d {
				return
			}
		}
		if d != "" {
			bases = append(bases, d)
		}
	}
	wd, err := os.Getwd()
	if err != nil {
		return nil
	}
	add(wd)
	root, err := moduleRoot(wd)
	if err != nil {
		return bases
	}
	add(root)
	// In a linked worktree, .git is a file and the common dir is the main
	// checkout's .git directory.
	out, err := exec.Command("git", "-C", root, "rev-parse", "--path-format=absolute", "--git-common-dir").Output()
	if err == nil {
		add(filepath.Dir(strings.TrimSpace(string(out))))
	}
	return bases
}

// moduleRoot is the nearest directory at or above dir holding a go.mod.
func moduleRoot(dir string) (string, error) {
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}
