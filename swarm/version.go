package swarm

import (
	"runtime/debug"
	"sync"
)

const modulePath = "github.com/shoalproject/shoal"

// Version is the version of Shoal built into this program: the module's
// version when it is a dependency or a tagged build, else "dev" with the
// commit it was built from ("dev+3f2a1b9c0d4e", "-dirty" when the tree had
// changes), or plain "dev". Nodes report it as their engine version.
func Version() string { return version() }

var version = sync.OnceValue(func() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	if bi.Main.Path == modulePath && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	for _, d := range bi.Deps {
		if d.Path == modulePath {
			return d.Version
		}
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch {
		case s.Key == "vcs.revision" && len(s.Value) >= 12:
			rev = "+" + s.Value[:12]
		case s.Key == "vcs.modified" && s.Value == "true":
			dirty = "-dirty"
		}
	}
	if rev == "" {
		return "dev"
	}
	return "dev" + rev + dirty
})
