package dockerapi

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/moby/moby/api/types/events"

	"github.com/shoalproject/shoal/raftstore"
	"github.com/shoalproject/shoal/swarm"
	"github.com/shoalproject/shoal/swarm/api"
)

// The object types Shoal's events carry that Docker shows (tasks are
// not events in Docker).
var eventTypes = []string{"service", "node", "network", "secret", "config"}

// nameKeys are the filters that match an event's actor by ID prefix or
// name, whatever its type (dockerd's semantics).
var nameKeys = []string{"container", "image", "volume", "network", "plugin", "daemon", "secret", "config", "service", "node"}

// sinceSlack is how far in the past ?since= may be and still mean "now":
// Shoal keeps events by Raft index, not by time, and does not replay.
const sinceSlack = 2 * time.Second

// events answers docker events: swarm object changes in Docker's form,
// streamed until the client goes, or until ?until=.
func (h *Handler) events(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	q := r.URL.Query()
	f, err := parseFilters(q.Get("filters"))
	if err != nil {
		return err
	}
	if err := f.accept(append([]string{"type", "event", "scope", "label"}, nameKeys...)...); err != nil {
		return err
	}
	now := time.Now()
	since, err := parseEventTime(q.Get("since"), now)
	if err != nil {
		return err
	}
	until, err := parseEventTime(q.Get("until"), now)
	if err != nil {
		return err
	}
	if !since.IsZero() && since.Before(now.Add(-sinceSlack)) {
		return badRequest("not supported by Shoal yet: events from the past (since %s); Shoal streams events from now: leave out --since", since.Format(time.RFC3339))
	}
	types := eventTypes
	if vs := f["type"]; len(vs) > 0 {
		types = nil
		for _, t := range eventTypes {
			if slices.Contains(vs, t) {
				types = append(types, t)
			}
		}
	}
	var ch <-chan swarm.Event
	if len(types) > 0 {
		if ch, err = h.Backend.Events(ctx, 0, types...); err != nil {
			return err
		}
	}
	if !until.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, until)
		defer cancel()
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	rc.Flush()
	enc := json.NewEncoder(w)
	seen := map[string]map[string]string{} // last attributes of each object, for .old/.new
	var last uint64
	wait := 100 * time.Millisecond
	for {
		var ev swarm.Event
		var ok bool
		select {
		case <-ctx.Done():
			return nil
		case ev, ok = <-ch:
		}
		if !ok {
			// The stream to the managers ended: resume where it stopped
			// (from now if the managers no longer keep that index).
			if ch, last = h.resubscribe(ctx, last, types, &wait); ch == nil {
				return nil
			}
			continue
		}
		wait = 100 * time.Millisecond
		last = ev.Index
		msg, keep := toDockerEvent(ev, seen)
		if !keep || !f.matchEvent(msg) || (!since.IsZero() && msg.TimeNano < since.UnixNano()) {
			continue // since in the future: from then on
		}
		if enc.Encode(msg) != nil || rc.Flush() != nil {
			return nil
		}
	}
}

// resubscribe watches again after index last, retrying with backoff while
// the managers cannot be reached; nil when ctx ends.
func (h *Handler) resubscribe(ctx context.Context, last uint64, types []string, wait *time.Duration) (<-chan swarm.Event, uint64) {
	for ctx.Err() == nil {
		ch, err := h.Backend.Events(ctx, last, types...)
		if err == nil {
			return ch, last
		}
		if errors.Is(err, raftstore.ErrResync) {
			last = 0
			continue
		}
		h.logger().Debug("dockerapi: events: watching again", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(*wait):
		}
		*wait = min(2**wait, 2*time.Second)
	}
	return nil, 0
}

// parseEventTime reads dockerd's event times: Unix seconds with optional
// nanoseconds ("1700000000.000000001"), RFC 3339, or a duration before
// now ("10m").
func parseEventTime(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if sec, frac, _ := strings.Cut(s, "."); sec != "" {
		if n, err := strconv.ParseInt(sec, 10, 64); err == nil && n >= 0 && n < math.MaxInt64/1_000_000_000 {
			var ns int64
			if frac != "" {
				frac = (frac + "000000000")[:9]
				if ns, err = strconv.ParseInt(frac, 10, 64); err != nil {
					return time.Time{}, badRequest("invalid time %q", s)
				}
			}
			return time.Unix(n, ns), nil
		}
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	return time.Time{}, badRequest("invalid time %q: Unix seconds, RFC 3339 or a duration", s)
}

// toDockerEvent converts a Shoal event: the actor's name and, on updates,
// what changed (Docker's KEY.old and KEY.new attributes) when the stream
// saw the object before.
func toDockerEvent(ev swarm.Event, seen map[string]map[string]string) (events.Message, bool) {
	msg := events.Message{Type: events.Type(ev.Type), Action: events.Action(ev.Action), Scope: "swarm",
		Actor: events.Actor{ID: ev.ID, Attributes: map[string]string{}}}
	at := time.Now()
	var attrs map[string]string
	var labels map[string]string
	switch ev.Type {
	case "service":
		var s api.Service
		if json.Unmarshal(ev.Object, &s) != nil {
			return msg, false
		}
		attrs = map[string]string{"name": s.Spec.Name, "image": s.Spec.TaskTemplate.Image}
		if r := s.Spec.Mode.Replicated; r != nil {
			attrs["replicas"] = strconv.FormatUint(r.Replicas, 10)
		}
		if s.UpdateStatus != nil {
			attrs["updatestate"] = string(s.UpdateStatus.State)
		}
		labels = s.Spec.Labels
		if ev.Action != "remove" && !s.UpdatedAt.IsZero() {
			at = s.UpdatedAt
		}
	case "node":
		var n api.Node
		if json.Unmarshal(ev.Object, &n) != nil {
			return msg, false
		}
		name := n.Spec.Name
		if name == "" {
			name = n.Description.Hostname
		}
		attrs = map[string]string{"name": name, "availability": string(n.Spec.Availability), "role": string(n.Spec.Role), "state": string(n.Status.State)}
		labels = n.Spec.Labels
		if ev.Action != "remove" && !n.UpdatedAt.IsZero() {
			at = n.UpdatedAt
		}
	case "network":
		var n api.Network
		if json.Unmarshal(ev.Object, &n) != nil {
			return msg, false
		}
		attrs, labels = map[string]string{"name": n.Spec.Name}, n.Spec.Labels
		if ev.Action != "remove" && !n.UpdatedAt.IsZero() {
			at = n.UpdatedAt
		}
	case "secret", "config":
		// Meta and annotations only: a secret's data never leaves the
		// managers' store (nor does the event stream hold it).
		var o struct {
			api.Meta
			Spec struct{ api.Annotations } `json:"spec"`
		}
		if json.Unmarshal(ev.Object, &o) != nil {
			return msg, false
		}
		attrs, labels = map[string]string{"name": o.Spec.Name}, o.Spec.Labels
		if ev.Action != "remove" && !o.UpdatedAt.IsZero() {
			at = o.UpdatedAt
		}
	default:
		return msg, false
	}
	msg.Actor.Attributes["name"] = attrs["name"]
	key := ev.Type + "/" + ev.ID
	if old, ok := seen[key]; ok && ev.Action == "update" {
		for k, v := range attrs {
			if k != "name" && old[k] != v {
				msg.Actor.Attributes[k+".old"], msg.Actor.Attributes[k+".new"] = old[k], v
			}
		}
	}
	if ev.Action == "remove" {
		delete(seen, key)
	} else {
		seen[key] = attrs
	}
	for k, v := range labels {
		if _, taken := msg.Actor.Attributes[k]; !taken {
			msg.Actor.Attributes[k] = v
		}
	}
	msg.Time, msg.TimeNano = at.Unix(), at.UnixNano()
	return msg, true
}

// matchEvent applies dockerd's event filters.
func (f filters) matchEvent(m events.Message) bool {
	if vs := f["type"]; len(vs) > 0 && !slices.Contains(vs, string(m.Type)) {
		return false
	}
	if vs := f["event"]; len(vs) > 0 && !slices.Contains(vs, string(m.Action)) {
		return false
	}
	if vs := f["scope"]; len(vs) > 0 && !slices.Contains(vs, m.Scope) {
		return false
	}
	if !labelsMatch(m.Actor.Attributes, f["label"]) {
		return false
	}
	for _, k := range nameKeys {
		vs := f[k]
		if len(vs) == 0 {
			continue
		}
		if !anyPrefix(m.Actor.ID, vs) && !slices.Contains(vs, m.Actor.Attributes["name"]) {
			return false
		}
	}
	return true
}
