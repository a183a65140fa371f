// Package agent will run tasks on a node: the Executor interface, a
// containerd executor (images from OCI tarballs or a registry, health
// checks, logs, secrets on tmpfs, resource limits, adoption after restart)
// and a fake executor for simulations. Not built yet.
package agent
