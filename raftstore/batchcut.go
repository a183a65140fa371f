package raftstore

// Cut ends the batch's current log entry: the changes added after it go
// in later entries, proposed once they fill (or the batch ends). A caller
// that commits a large change in steps (the leader's reconcile pass
// creating a big service) cuts after each step, so that no entry holds
// parts of two steps and each step's entries apply while it builds the
// next. A batch with nothing added since the last cut proposes nothing.
func (b *Batch) Cut() error {
	if b.err != nil {
		return b.err
	}
	b.err = b.flush()
	return b.err
}
