package api

// Secret is sensitive data given to the tasks that reference it. Its data is
// encrypted in the managers' Raft store, sent only to nodes running such a
// task, and kept in memory (tmpfs) there. The API never returns it.
type Secret struct {
	Meta
	Spec SecretSpec `json:"spec"`
}

// SecretSpec names a secret and holds its data.
type SecretSpec struct {
	Annotations
	// Data is the secret; at most MaxSecretSize bytes.
	Data []byte `json:"data,omitempty"`
}

// Config is non-sensitive data given to the tasks that reference it.
type Config struct {
	Meta
	Spec ConfigSpec `json:"spec"`
}

// ConfigSpec names a config and holds its data.
type ConfigSpec struct {
	Annotations
	Data []byte `json:"data,omitempty"`
}

// MaxSecretSize is the largest secret or config, as in Docker (500 KiB).
const MaxSecretSize = 500 << 10

// Redacted returns a copy without the data, as the API shows secrets.
func (s *Secret) Redacted() *Secret {
	c := *s
	c.Spec.Data = nil
	return &c
}
