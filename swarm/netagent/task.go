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
	"time"

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
	// busy is set while a TaskNetwork call wires the task outside the
	// agent's lock, and closed when it is done: other calls for the task
	// wait for it.
	busy chan struct{}
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

// saveRecord writes a task's record to path (its recordPath).
func saveRecord(path string, rec taskRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(path, b, 0o600); err != nil {
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
//
// Tasks are wired concurrently, up to TaskWiring at once: the agent's
// lock is held only to book the task (its record, its gateway address, its
// networks' devices) and to make it live; the namespace, its links, its
// load balancer's table and its DNS server are made without it (one task
// took ~0.3 s, and a node starting 50 tasks waited for them one by one).
// Calls for the same task wait for each other.
func (a *Agent) TaskNetwork(ctx context.Context, t *api.Task) (netnsPath, resolvConf string, err error) {
	if t == nil {
		return "", "", fmt.Errorf("%w: nil", ErrBadTask)
	}
	if err := checkTaskID(t.ID); err != nil {
		return "", "", err
	}
	began := time.Now()
	path, resolv := a.NetNSPath(t.ID), a.ResolvConfPath(t.ID)
	w, done, err := a.bookTask(ctx, t)
	if err != nil || done {
		return path, resolv, err
	}
	if err := a.wiringSlot(ctx); err != nil {
		return "", "", a.finishWiring(ctx, w, fmt.Errorf("netagent: task %s: %w", t.ID, err))
	}
	w.steps.slot = time.Since(began)
	werr := w.wire(ctx)
	a.releaseWiringSlot()
	if err := a.finishWiring(ctx, w, werr); err != nil {
		return "", "", err
	}
	a.logger().Info("netagent: task wired", "task", t.ID, "netns", path, "networks", len(w.rec.Networks), "gateway", w.rec.Gateway,
		"adopted", !w.made, "took", time.Since(began).Round(time.Millisecond))
	a.logger().Debug("netagent: task wiring steps", "task", t.ID, "wait", w.steps.slot.Round(time.Millisecond), "netns", w.steps.netns.Round(time.Millisecond),
		"links", w.steps.links.Round(time.Millisecond), "lb", w.steps.lb.Round(time.Millisecond), "dns", w.steps.dns.Round(time.Millisecond))
	return path, resolv, nil
}

// bookTask takes a task's wiring under the agent's lock: it waits while
// another call wires the same task, answers done for a task already live,
// and otherwise books the task (its record, its gateway address, which
// wire writes to disk before it makes anything), makes its networks'
// devices, and marks it busy until finishWiring.
func (a *Agent) bookTask(ctx context.Context, t *api.Task) (w *wiring, done bool, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.waitIdleLocked(ctx, t.ID); err != nil {
		return nil, false, err
	}
	ts := a.tasks[t.ID]
	if ts != nil && ts.live {
		return nil, true, nil
	}
	rec := taskRecord{ID: t.ID}
	internalOnly := len(t.Networks) > 0
	for i, na := range t.Networks {
		ni := a.view.nets[na.NetworkID]
		if ni == nil {
			return nil, false, fmt.Errorf("%w: task %s: network %s", ErrUnknownNetwork, t.ID, na.NetworkID)
		}
		if slices.ContainsFunc(rec.Networks, func(at taskAttachment) bool { return at.NetworkID == na.NetworkID }) {
			return nil, false, fmt.Errorf("%w: task %s is on network %s twice", ErrBadTask, t.ID, na.NetworkID)
		}
		addr, ok := firstAddr(na.Addresses, ni.n.Subnet)
		if !ok {
			return nil, false, fmt.Errorf("%w: task %s: no address of network %s's subnet %s among %q", ErrBadTask, t.ID, na.NetworkID, ni.n.Subnet, na.Addresses)
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
		// The old address stays booked until the new record is saved
		// (endWiringLocked): a wiring that fails before gives the task its
		// old record back, and the address must not be another's by then.
		rec.Gateway = netip.Addr{}
	case !internalOnly && !rec.Gateway.IsValid():
		gw, err := a.allocGateway(t.ID)
		if err != nil {
			return nil, false, fmt.Errorf("netagent: task %s: %w", t.ID, err)
		}
		rec.Gateway = gw
	}
	w = &wiring{ts: ts, rec: rec, path: a.NetNSPath(t.ID), resolv: a.ResolvConfPath(t.ID), record: a.recordPath(t.ID),
		overlay: a.overlay, gateway: a.gateway, registry: a.registry, ups: a.ups, logger: a.Logger,
		fresh: fresh, oldRec: ts.rec, save: !sameRecord(ts.rec, rec)}
	ts.rec = rec
	a.tasks[t.ID] = ts
	ts.busy = make(chan struct{})
	for _, at := range rec.Networks {
		// The network's devices are the node's, shared by its tasks: made
		// under the lock.
		if err := a.ensureNetwork(at.NetworkID); err != nil {
			err = fmt.Errorf("netagent: task %s: %w", t.ID, err)
			a.endWiringLocked(ctx, w, err)
			return nil, false, err
		}
		w.nets = append(w.nets, a.view.nets[at.NetworkID].n)
	}
	return w, false, nil
}

// waitIdleLocked waits until no TaskNetwork call wires the task, and
// checks that the agent is usable; a.mu is held, and released while it
// waits.
func (a *Agent) waitIdleLocked(ctx context.Context, taskID string) error {
	for {
		if err := a.usable(); err != nil {
			return err
		}
		ts := a.tasks[taskID]
		if ts == nil || ts.busy == nil {
			return nil
		}
		busy := ts.busy
		a.mu.Unlock()
		select {
		case <-busy:
		case <-ctx.Done():
		}
		a.mu.Lock()
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// finishWiring makes a wired task live (its load balancer set from the
// current view, the published ports synced), or undoes what the wiring
// made when it failed or the agent closed meanwhile; either way the task
// is no longer busy.
func (a *Agent) finishWiring(ctx context.Context, w *wiring, werr error) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if werr == nil {
		werr = a.usable()
	}
	if werr == nil {
		w.ts.lb, w.ts.dns, w.ts.vips = w.lb, w.dns, map[vipKey]netmesh.VIPService{}
		werr = a.syncTaskLB(ctx, w.ts)
	}
	if werr != nil {
		a.endWiringLocked(ctx, w, werr)
		return werr
	}
	w.ts.live = true
	a.endWiringLocked(ctx, w, nil)
	if err := a.syncPorts(ctx); err != nil {
		a.logger().Warn("netagent: published ports after wiring a task", "task", w.rec.ID, "err", err)
	}
	return nil
}

// endWiringLocked ends a task's wiring: on failure its DNS server and load
// balancer stop, and a namespace made for it goes with all the rest (nothing
// ran in it yet), for a clean retry. a.mu is held.
func (a *Agent) endWiringLocked(ctx context.Context, w *wiring, werr error) {
	close(w.ts.busy)
	w.ts.busy = nil
	if w.saved {
		// The new record is on disk: an address it no longer has is free.
		if old := w.oldRec.Gateway; old.IsValid() && old != w.rec.Gateway && a.gwUsed[old] == w.rec.ID {
			delete(a.gwUsed, old)
		}
	}
	if werr == nil {
		return
	}
	w.stop()
	w.ts.stopLive()
	if w.made && !a.closed {
		a.releaseLocked(context.WithoutCancel(ctx), w.rec.ID)
		return
	}
	if w.save && !w.saved {
		// Nothing of the new record reached the disk: the task is as it
		// was (unknown, for a new one), its new gateway address free.
		if gw := w.rec.Gateway; gw.IsValid() && gw != w.oldRec.Gateway && a.gwUsed[gw] == w.rec.ID {
			delete(a.gwUsed, gw)
		}
		if w.fresh {
			delete(a.tasks, w.rec.ID)
		} else {
			w.ts.rec = w.oldRec
			if gw := w.oldRec.Gateway; gw.IsValid() {
				a.gwUsed[gw] = w.rec.ID
			}
		}
	}
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
	// A task being wired goes once its wiring is over.
	if err := a.waitIdleLocked(ctx, taskID); err != nil {
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
		if !keep[id] && a.tasks[id].busy == nil { // one being wired is wanted
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
