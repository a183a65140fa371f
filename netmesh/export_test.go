package netmesh

// SetAfterDump sets the hook that runs between a conntrack flush's listing
// and its deletions (nil clears it).
func (m *RoutingMesh) SetAfterDump(f func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.afterDump = f
}
