package netmesh

// SetAfterConntrackDump sets the hook that runs between the conntrack flush's
// listing and its deletions (nil clears it).
func SetAfterConntrackDump(f func()) { afterConntrackDump = f }
