package netagent

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/shoalproject/shoal/netmesh"
)

// DefaultTaskWiring is how many tasks an agent wires at once when
// TaskWiring is zero. Wiring a task is mostly waiting on the kernel and on
// an nft process; beyond a few at a time on a small node they only
// contend for its CPUs.
const DefaultTaskWiring = 8

// wiring is one task's wiring, made outside the agent's lock (see
// TaskNetwork): what bookTask gave it, and what it made.
type wiring struct {
	ts           *taskState
	rec          taskRecord
	path, resolv string
	nets         []netmesh.OverlayNetwork // the view's, for rec.Networks in order
	overlay      *netmesh.Overlay
	gateway      *netmesh.Gateway
	registry     *netmesh.Registry
	ups          []string
	logger       *slog.Logger

	// record is where rec goes on disk; save says it changed (from
	// oldRec; fresh: the task was unknown), saved that it was written.
	record             string
	oldRec             taskRecord
	fresh, save, saved bool

	made  bool // the namespace was made here (not adopted)
	lb    *netmesh.ServiceLB
	dns   *netmesh.DNS
	steps wiringSteps
}

// wiringSteps are the times of a wiring's steps, for the debug log.
type wiringSteps struct {
	slot, netns, links, lb, dns time.Duration
}

// wire writes the task's record, makes its namespace (unless it exists), its links, its load
// balancer's table, its DNS server and its resolv.conf. On failure, what
// it started is stopped by endWiringLocked.
func (w *wiring) wire(ctx context.Context) error {
	id := w.rec.ID
	t0 := time.Now()
	if w.save {
		// The record goes first: whatever a crash leaves, the next agent
		// knows the task (Prune removes it) and its gateway address is
		// not given twice.
		if err := saveRecord(w.record, w.rec); err != nil {
			return err
		}
		w.saved = true
	}
	if !isNetNS(w.path) {
		os.Remove(w.path) // a file left without its mount
		if err := createNetNS(w.path); err != nil {
			return err
		}
		w.made = true
	}
	t1 := time.Now()
	for i, at := range w.rec.Networks {
		if err := w.overlay.Attach(w.nets[i], w.path, at.IfName, at.Addr); err != nil {
			return fmt.Errorf("netagent: task %s: attach to network %s as %s: %w", id, at.NetworkID, at.IfName, err)
		}
	}
	if w.rec.Gateway.IsValid() {
		ifName := fmt.Sprintf("eth%d", len(w.rec.Networks))
		if err := w.gateway.Attach(w.path, ifName, w.rec.Gateway); err != nil {
			return fmt.Errorf("netagent: task %s: attach to the gateway network as %s: %w", id, ifName, err)
		}
	}
	t2 := time.Now()
	if len(w.rec.Networks) > 0 {
		// VIPs are on networks: a task on none has nothing to balance,
		// and its table would cost an nft run for nothing.
		lb := &netmesh.ServiceLB{NetNS: w.path, Logger: w.logger}
		if err := lb.Start(ctx); err != nil {
			return fmt.Errorf("netagent: task %s: load balancer: %w", id, err)
		}
		w.lb = lb
	}
	t3 := time.Now()
	networks := make([]string, 0, len(w.rec.Networks))
	for _, at := range w.rec.Networks {
		networks = append(networks, at.NetworkID)
	}
	dns := &netmesh.DNS{Addr: DNSAddr, Registry: w.registry, Networks: networks, Upstreams: w.ups, Logger: w.logger}
	if err := inNetNS(w.path, func() error { return dns.Start(ctx) }); err != nil {
		return fmt.Errorf("netagent: task %s: DNS server: %w", id, err)
	}
	w.dns = dns
	if err := writeFileAtomic(w.resolv, []byte(DefaultResolvConf), 0o644); err != nil {
		return fmt.Errorf("netagent: task %s: resolv.conf: %w", id, err)
	}
	w.steps.netns, w.steps.links, w.steps.lb, w.steps.dns = t1.Sub(t0), t2.Sub(t1), t3.Sub(t2), time.Since(t3)
	return nil
}

// stop stops what a failed wiring started.
func (w *wiring) stop() {
	if w.dns != nil {
		w.dns.Close()
	}
	if w.lb != nil {
		w.lb.Close()
	}
	w.dns, w.lb = nil, nil
}

// wiringSlot waits for one of the TaskWiring slots.
func (a *Agent) wiringSlot(ctx context.Context) error {
	a.slotsOnce.Do(func() {
		n := a.TaskWiring
		if n <= 0 {
			n = DefaultTaskWiring
		}
		a.slots = make(chan struct{}, n)
	})
	select {
	case a.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	n := a.wiringNow.Add(1)
	for {
		peak := a.wiringPeak.Load()
		if n <= peak || a.wiringPeak.CompareAndSwap(peak, n) {
			return nil
		}
	}
}

func (a *Agent) releaseWiringSlot() {
	a.wiringNow.Add(-1)
	<-a.slots
}
