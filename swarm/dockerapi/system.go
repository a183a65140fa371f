package dockerapi

import (
	"fmt"
	"net"
	"net/http"
	"runtime"
	"sort"
	"time"

	dswarm "github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/api/types/system"
	"golang.org/x/sys/unix"

	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// ping answers HEAD and GET /_ping with the headers the CLI reads:
// API-Version (set on every answer), OSType, Docker-Experimental and
// Swarm (active/manager or active/worker; the CLI hides the swarm
// commands on a node that is not a manager).
func (h *Handler) ping(w http.ResponseWriter, r *http.Request) error {
	hd := w.Header()
	hd.Set("Cache-Control", "no-cache, no-store, must-revalidate")
	hd.Set("Pragma", "no-cache")
	hd.Set("Swarm", h.swarmHeader())
	hd.Set("Content-Type", "text/plain; charset=utf-8")
	if r.Method == http.MethodHead {
		hd.Set("Content-Length", "0")
		w.WriteHeader(http.StatusOK)
		return nil
	}
	w.WriteHeader(http.StatusOK)
	_, err := w.Write([]byte("OK"))
	return err
}

func (h *Handler) swarmHeader() string {
	switch {
	case h.Self == nil:
		return "active/manager"
	case h.locked():
		return "locked"
	case h.Self.Role() == "manager":
		return "active/manager"
	}
	return "active/worker"
}

func (h *Handler) locked() bool {
	u, ok := h.Self.(Unlocker)
	return ok && u.Locked()
}

func kernelVersion() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

func (h *Handler) serverVersion(w http.ResponseWriter, r *http.Request) error {
	v := h.version()
	kv := kernelVersion()
	return writeJSON(w, http.StatusOK, system.VersionResponse{
		Platform: system.PlatformInfo{Name: "Shoal"},
		Components: []system.ComponentVersion{{Name: "Engine", Version: v, Details: map[string]string{
			"ApiVersion": MaxAPIVersion, "MinAPIVersion": MinAPIVersion, "GitCommit": "", "GoVersion": runtime.Version(),
			"Os": runtime.GOOS, "Arch": runtime.GOARCH, "KernelVersion": kv, "Experimental": "false", "BuildTime": "",
		}}},
		Version:       v,
		APIVersion:    MaxAPIVersion,
		MinAPIVersion: MinAPIVersion,
		GoVersion:     runtime.Version(),
		Os:            runtime.GOOS,
		Arch:          runtime.GOARCH,
		KernelVersion: kv,
	})
}

// info answers docker info: this node and, on a manager, the cluster.
func (h *Handler) info(w http.ResponseWriter, r *http.Request) error {
	desc := swarm.DetectDescription(api.NodeDescription{})
	out := system.Info{
		OSType:          runtime.GOOS,
		OperatingSystem: "Shoal",
		KernelVersion:   kernelVersion(),
		ServerVersion:   h.version(),
		Plugins:         system.PluginsInfo{Volume: []string{}, Network: []string{}, Authorization: []string{}, Log: []string{}},
		SystemTime:      time.Now().Format(time.RFC3339Nano),
		Labels:          []string{},
		SecurityOptions: []string{},
		Warnings: []string{"WARNING: this is Shoal, which serves the swarm part of the Docker Engine API: " +
			"swarm, node and service commands work; containers, images, volumes and builds are not available here"},
	}
	sw := dswarm.Info{LocalNodeState: dswarm.LocalNodeStateActive, RemoteManagers: []dswarm.Peer{}}
	if h.Self != nil {
		sw.NodeID = h.Self.ID()
		if host, _, err := net.SplitHostPort(h.Self.Addr()); err == nil {
			sw.NodeAddr = host
		}
		if h.locked() {
			sw.LocalNodeState = dswarm.LocalNodeStateLocked
		}
	}
	isManager := h.Self == nil || h.Self.Role() == "manager"
	if isManager && h.Backend != nil && sw.LocalNodeState == dswarm.LocalNodeStateActive {
		sw.ControlAvailable = true
		warnings, err := h.clusterInfo(r, &sw, &desc)
		if err != nil {
			sw.Error = messageOf(err)
		}
		// What the managers see wrong with the cluster (two managers and
		// no arbiter, an arbiter unreachable), as dockerd's warnings.
		for _, w := range warnings {
			out.Warnings = append(out.Warnings, "WARNING: "+w)
		}
	}
	out.ID, out.Name = sw.NodeID, desc.Hostname
	out.Architecture = desc.Platform.Architecture
	out.NCPU = int(desc.Resources.NanoCPUs / 1e9)
	out.MemTotal = desc.Resources.MemoryBytes
	out.GenericResources = genericToDocker(desc.Resources.Generic)
	for k, v := range desc.Engine.Labels {
		out.Labels = append(out.Labels, k+"="+v)
	}
	sort.Strings(out.Labels)
	out.Swarm = sw
	return writeJSON(w, http.StatusOK, out)
}

// clusterInfo fills the swarm section of docker info on a manager, and
// the node's description as the managers know it, and returns the
// cluster's warnings.
func (h *Handler) clusterInfo(r *http.Request, sw *dswarm.Info, desc *api.NodeDescription) ([]string, error) {
	ctx := r.Context()
	c, err := h.Backend.Cluster(ctx)
	if err != nil {
		return nil, err
	}
	ci := clusterInfoToDocker(c)
	sw.Cluster = &ci
	nodes, err := h.Backend.Nodes(ctx, swarm.Filter{})
	if err != nil {
		return c.Warnings, err
	}
	sw.Nodes = len(nodes)
	for _, n := range nodes {
		if n.ManagerStatus != nil || n.Spec.Role == api.RoleManager {
			sw.Managers++
		}
		if ms := n.ManagerStatus; ms != nil {
			sw.RemoteManagers = append(sw.RemoteManagers, dswarm.Peer{NodeID: n.ID, Addr: ms.Addr})
		}
		if n.ID == sw.NodeID {
			*desc = swarm.DetectDescription(n.Description)
			if sw.NodeAddr == "" {
				sw.NodeAddr = n.Status.Addr
			}
		}
	}
	sort.Slice(sw.RemoteManagers, func(i, j int) bool { return sw.RemoteManagers[i].NodeID < sw.RemoteManagers[j].NodeID })
	return c.Warnings, nil
}

// swarmInit answers docker swarm init and join: a Shoal node is always
// in its cluster.
func (h *Handler) swarmInit(w http.ResponseWriter, r *http.Request) error {
	return &httpError{status: http.StatusServiceUnavailable,
		msg: fmt.Sprintf("This node is already part of a swarm (Shoal node %s). A Shoal node inits or joins its cluster when it starts; to move it to another swarm, make it leave first.", h.selfID())}
}

func (h *Handler) selfID() string {
	if h.Self == nil {
		return "?"
	}
	return h.Self.ID()
}
