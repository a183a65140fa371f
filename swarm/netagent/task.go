package netagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/shoalproject/shoal/netmesh"
	"github.com/shoalproject/shoal/swarm/api"
)

// taskRecord is what StateDir keeps of a task's network: enough for a
// restarted agent to pick it up, to free its gateway address, and to know
// which networks its namespace is on.
type taskRecord struct {
	ID       string           `json:"id"`
	Networks []taskAttachment `json:"networks,omitempty"`
	// Gateway is the task's address on the gateway network; zero for a
	// task on internal networks only.
	Gateway netip.Addr `json:"gateway,omitzero"`
}

type taskAttachment struct {
	NetworkID string     `json:"networkID"`
	Addr      netip.Addr `json:"addr"`
	IfName    string     `json:"ifName"`
}

// taskState is a task the node has state for; live once TaskNetwork ran in
// this process (its DNS server and load balancer run here).
type taskState struct {
	rec  taskRecord
	live bool
	dns  *netmesh.DNS
	lb   *netmesh.ServiceLB
	vips map[vipKey]netmesh.VIPService
}

func (ts *taskState) networkIDs() []string {
	ids := make([]string, 0, len(ts.rec.Networks))
	for _, at := range ts.rec.Networks {
		ids = append(ids, at.NetworkID)
	}
	return ids
}

// stopLive stops the task's DNS server and load balancer (deleting its
// rules); the namespace and links stay.
func (ts *taskState) stopLive() error {
	var errs []error
	if ts.dns != nil {
		errs = append(errs, ts.dns.Close())
	}
	if ts.lb != nil {
		errs = append(errs, ts.lb.Close())
	}
	ts.dns, ts.lb, ts.vips, ts.live = nil, nil, nil, false
	return errors.Join(errs...)
}

// MaxTaskIDLength bounds task IDs, which name files in StateDir.
const MaxTaskIDLength = 128

func checkTaskID(id string) error {
	if id == "" || len(id) > MaxTaskIDLength || id == "." || id == ".." || strings.HasPrefix(id, ".") {
		return fmt.Errorf("%w: ID %q", ErrBadTask, id)
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("%w: ID %q has a character other than letters, digits, '-', '_' and '.'", ErrBadTask, id)
		}
	}
	return nil
}

// NetNSPath is where a task's network namespace is mounted.
func (a *Agent) NetNSPath(taskID string) string { return filepath.Join(a.StateDir, netnsDir, taskID) }

// ResolvConfPath is where a task's resolv.conf is written.
func (a *Agent) ResolvConfPath(taskID string) string {
	return filepath.Join(a.StateDir, resolvDir, taskID+".conf")
}

func (a *Agent) recordPath(taskID string) string {
	return filepath.Join(a.StateDir, tasksDir, taskID+".json")
}

// loadTasks reads what an earlier agent left: task records, namespaces
// and resolv.conf files. A task with any of them is known, until Prune or
// ReleaseTask.
func (a *Agent) loadTasks() error {
	a.tasks = map[string]*taskState{}
	a.gwUsed = map[netip.Addr]string{}
	know := func(id string) *taskState {
		ts := a.tasks[id]
		if ts == nil {
			ts = &taskState{rec: taskRecord{ID: id}}
			a.tasks[id] = ts
		}
		return ts
	}
	for _, d := range []struct{ dir, suffix string }{{tasksDir, ".json"}, {netnsDir, ""}, {resolvDir, ".conf"}} {
		entries, err := os.ReadDir(a.dir(d.dir))
		if err != nil {
			return fmt.Errorf("netagent: read state: %w", err)
		}
		for _, e := range entries {
			id, ok := strings.CutSuffix(e.Name(), d.suffix)
			if !ok || checkTaskID(id) != nil {
				continue // temporary files, strangers
			}
			ts := know(id)
			if d.dir != tasksDir {
				continue
			}
			b, err := os.ReadFile(filepath.Join(a.dir(d.dir), e.Name()))
			var rec taskRecord
			if err == nil {
				err = json.Unmarshal(b, &rec)
			}
			if err != nil || rec.ID != id {
				a.logger().Warn("netagent: damaged task record ignored", "task", id, "err", err)
				continue
			}
			ts.rec = rec
			if rec.Gateway.IsValid() {
				if other, taken := a.gwUsed[rec.Gateway]; taken {
					a.logger().Warn("netagent: gateway address recorded for two tasks", "addr", rec.Gateway, "task", id, "other", other)
				}
				a.gwUsed[rec.Gateway] = id
			}
		}
	}
	return nil
}

// gatewaySubnet is the gateway network's subnet.
func (a *Agent) gatewaySubnet() netip.Prefix {
	if a.GatewaySubnet.IsValid() {
		return a.GatewaySubnet.Masked()
	}
	return netmesh.DefaultGatewaySubnet
}

// allocGateway hands out a free address of the gateway subnet, from a
// cursor that moves forward (an address just freed is not reused at once).
// The node has the first address; network and broadcast are not used.
func (a *Agent) allocGateway(taskID string) (netip.Addr, error) {
	sn := a.gatewaySubnet()
	b := sn.Addr().As4()
	base := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	n := uint32(1)<<(32-sn.Bits()) - 3 // less network, node and broadcast
	for i := range n {
		off := (a.gwCursor+i)%n + 2
		v := base + off
		addr := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
		if _, used := a.gwUsed[addr]; !used {
			a.gwUsed[addr] = taskID
			a.gwCursor = (a.gwCursor + i + 1) % n
			return addr, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("netagent: gateway subnet %s: %w", sn, netmesh.ErrPoolExhausted)
}

func (a *Agent) saveRecord(rec taskRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(a.recordPath(rec.ID), b, 0o600); err != nil {
		return fmt.Errorf("netagent: task %s: save record: %w", rec.ID, err)
	}
	return nil
}

// TaskNetwork gives a task its network: a namespace (mounted under
// StateDir) attached to each of the task's networks with its assigned
// address (eth0, eth1, ... in order) and, unless every network of the task
// is internal, to the gateway network (the next ethN, the default route);
// a DNS server at 127.0.0.11 in it, answering the names of the task's
// networks and forwarding the others; VIP load balancing; and a
// resolv.conf pointing at that server. It returns the namespace's path and
// the resolv.conf's, for the container runtime (agent/containerd
// Executor.Network has this signature).
//
// It is idempotent: for a task whose namespace exists (a restarted agent
// adopting a running container), what exists is kept as it is and only
// what is missing is made again. The task's networks must be in the last
// view applied (ErrUnknownNetwork otherwise).
func (a *Agent) TaskNetwork(ctx context.Context, t *api.Task) (netnsPath, resolvConf string, err error) {
	if t == nil {
		return "", "", fmt.Errorf("%w: nil", ErrBadTask)
	}
	if err := checkTaskID(t.ID); err != nil {
		return "", "", err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.usable(); err != nil {
		return "", "", err
	}
	path, resolv := a.NetNSPath(t.ID), a.ResolvConfPath(t.ID)
	ts := a.tasks[t.ID]
	if ts != nil && ts.live {
		return path, resolv, nil
	}

	rec := taskRecord{ID: t.ID}
	internalOnly := len(t.Networks) > 0
	for i, na := range t.Networks {
		ni := a.view.nets[na.NetworkID]
		if ni == nil {
			return "", "", fmt.Errorf("%w: task %s: network %s", ErrUnknownNetwork, t.ID, na.NetworkID)
		}
		if slices.ContainsFunc(rec.Networks, func(at taskAttachment) bool { return at.NetworkID == na.NetworkID }) {
			return "", "", fmt.Errorf("%w: task %s is on network %s twice", ErrBadTask, t.ID, na.NetworkID)
		}
		addr, ok := firstAddr(na.Addresses, ni.n.Subnet)
		if !ok {
			return "", "", fmt.Errorf("%w: task %s: no address of network %s's subnet %s among %q", ErrBadTask, t.ID, na.NetworkID, ni.n.Subnet, na.Addresses)
		}
		rec.Networks = append(rec.Networks, taskAttachment{NetworkID: na.NetworkID, Addr: addr, IfName: fmt.Sprintf("eth%d", i)})
		internalOnly = internalOnly && ni.internal
	}
	fresh := ts == nil
	if fresh {
		ts = &taskState{}
	} else if len(ts.rec.Networks) > 0 && !slices.Equal(ts.rec.Networks, rec.Networks) {
		a.logger().Warn("netagent: task's networks differ from its record: the new ones are wired", "task", t.ID,
			"recorded", ts.rec.Networks, "now", rec.Networks)
	}
	rec.Gateway = ts.rec.Gateway
	switch {
	case internalOnly && rec.Gateway.IsValid():
		delete(a.gwUsed, rec.Gateway)
		rec.Gateway = netip.Addr{}
	case !internalOnly && !rec.Gateway.IsValid():
		gw, err := a.allocGateway(t.ID)
		if err != nil {
			return "", "", fmt.Errorf("netagent: task %s: %w", t.ID, err)
		}
		rec.Gateway = gw
	}
	// The record goes first: whatever a crash leaves, the next agent knows
	// the task (Prune removes it) and its gateway address is not given
	// twice.
	if !sameRecord(ts.rec, rec) {
		if err := a.saveRecord(rec); err != nil {
			if fresh && rec.Gateway.IsValid() {
				delete(a.gwUsed, rec.Gateway)
			}
			return "", "", err
		}
	}
	ts.rec = rec
	a.tasks[t.ID] = ts

	made := false
	if !isNetNS(path) {
		os.Remove(path) // a file left without its mount
		if err := createNetNS(path); err != nil {
			return "", "", err
		}
		made = true
	}
	defer func() {
		if err == nil {
			return
		}
		ts.stopLive()
		if made {
			// Nothing ran in it yet: all of it goes, for a clean retry.
			a.releaseLocked(ctx, t.ID)
		}
	}()
	for _, at := range rec.Networks {
		if err := a.ensureNetwork(at.NetworkID); err != nil {
			return "", "", fmt.Errorf("netagent: task %s: %w", t.ID, err)
		}
		if err := a.overlay.Attach(a.view.nets[at.NetworkID].n, path, at.IfName, at.Addr); err != nil {
			return "", "", fmt.Errorf("netagent: task %s: attach to network %s as %s: %w", t.ID, at.NetworkID, at.IfName, err)
		}
	}
	if rec.Gateway.IsValid() {
		ifName := fmt.Sprintf("eth%d", len(rec.Networks))
		if err := a.gateway.Attach(path, ifName, rec.Gateway); err != nil {
			return "", "", fmt.Errorf("netagent: task %s: attach to the gateway network as %s: %w", t.ID, ifName, err)
		}
	}
	ts.lb = &netmesh.ServiceLB{NetNS: path, Logger: a.Logger}
	if err := ts.lb.Start(ctx); err != nil {
		ts.lb = nil
		return "", "", fmt.Errorf("netagent: task %s: load balancer: %w", t.ID, err)
	}
	ts.vips = map[vipKey]netmesh.VIPService{}
	if err := a.syncTaskLB(ctx, ts); err != nil {
		return "", "", err
	}
	dns := &netmesh.DNS{Addr: DNSAddr, Registry: a.registry, Networks: ts.networkIDs(), Upstreams: a.ups, Logger: a.Logger}
	if err := inNetNS(path, func() error { return dns.Start(ctx) }); err != nil {
		return "", "", fmt.Errorf("netagent: task %s: DNS server: %w", t.ID, err)
	}
	ts.dns = dns
	if err := writeFileAtomic(resolv, []byte(DefaultResolvConf), 0o644); err != nil {
		return "", "", fmt.Errorf("netagent: task %s: resolv.conf: %w", t.ID, err)
	}
	ts.live = true
	if err := a.syncPorts(ctx); err != nil {
		a.logger().Warn("netagent: published ports after wiring a task", "task", t.ID, "err", err)
	}
	a.logger().Info("netagent: task wired", "task", t.ID, "netns", path, "networks", len(rec.Networks), "gateway", rec.Gateway, "adopted", !made)
	return path, resolv, nil
}

func sameRecord(x, y taskRecord) bool {
	return x.ID == y.ID && x.Gateway == y.Gateway && slices.Equal(x.Networks, y.Networks)
}

// ReleaseTask removes everything of a task: its DNS server and load
// balancer, its links, its namespace, its resolv.conf and record, its
// gateway address, and its host-mode published ports. Networks no other
// task needs are removed too. Releasing an unknown task does nothing.
func (a *Agent) ReleaseTask(ctx context.Context, taskID string) error {
	if err := checkTaskID(taskID); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.usable(); err != nil {
		return err
	}
	return a.releaseLocked(ctx, taskID)
}

func (a *Agent) releaseLocked(ctx context.Context, taskID string) error {
	path := a.NetNSPath(taskID)
	var errs []error
	ts := a.tasks[taskID]
	if ts != nil {
		errs = append(errs, ts.stopLive())
		// The host ends of the links go explicitly: a container still
		// holding the namespace would keep them alive.
		for _, at := range ts.rec.Networks {
			if err := a.overlay.Detach(netmesh.OverlayNetwork{ID: at.NetworkID}, path); err != nil {
				errs = append(errs, fmt.Errorf("netagent: task %s: detach from %s: %w", taskID, at.NetworkID, err))
			}
		}
	}
	if err := a.gateway.Detach(path); err != nil {
		errs = append(errs, fmt.Errorf("netagent: task %s: detach from the gateway network: %w", taskID, err))
	}
	errs = append(errs, deleteNetNS(path))
	for _, f := range []string{a.ResolvConfPath(taskID), a.recordPath(taskID)} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if ts != nil {
		if gw := ts.rec.Gateway; gw.IsValid() && a.gwUsed[gw] == taskID {
			delete(a.gwUsed, gw)
		}
		delete(a.tasks, taskID)
		errs = append(errs, a.syncPorts(ctx), a.syncNetworks())
		a.logger().Info("netagent: task released", "task", taskID)
	}
	return errors.Join(errs...)
}

// Prune releases every task the node has state for (from this agent or an
// earlier one) that keep does not name: the worker calls it once it knows
// its tasks (those assigned and those whose containers still run), so that
// namespaces of tasks that ended while no agent ran do not pile up.
func (a *Agent) Prune(ctx context.Context, keep map[string]bool) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.usable(); err != nil {
		return err
	}
	var errs []error
	for _, id := range slices.Sorted(maps.Keys(a.tasks)) {
		if !keep[id] {
			a.logger().Info("netagent: pruning a task's network", "task", id)
			errs = append(errs, a.releaseLocked(ctx, id))
		}
	}
	return errors.Join(errs...)
}

// Tasks lists the tasks the node has network state for, sorted.
func (a *Agent) Tasks() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Sorted(maps.Keys(a.tasks))
}
