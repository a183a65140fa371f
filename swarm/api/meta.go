package api

import "time"

// Meta is what every stored object has: identity, version and timestamps.
// Version is the Raft index of the object's last change; writes based on an
// older version are refused, so two managers cannot overwrite each other.
type Meta struct {
	ID        string    `json:"id"`
	Version   uint64    `json:"version"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// ObjectID returns the ID (for the replicated store).
func (m *Meta) ObjectID() string { return m.ID }

// ObjectVersion returns the version (for the replicated store).
func (m *Meta) ObjectVersion() uint64 { return m.Version }

// SetObjectVersion sets the version; the store calls it when a change commits.
func (m *Meta) SetObjectVersion(v uint64) { m.Version = v }

// Annotations name an object and label it.
type Annotations struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
}

// Platform is an operating system and CPU architecture, as in an image index.
type Platform struct {
	OS           string `json:"os,omitempty"`
	Architecture string `json:"architecture,omitempty"`
}

// Driver names a driver and its options (log drivers, network drivers).
type Driver struct {
	Name    string            `json:"name"`
	Options map[string]string `json:"options,omitempty"`
}
