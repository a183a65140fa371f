package ca

import (
	"crypto/x509"
	"math/rand/v2"
	"time"
)

// window returns the bounds of the renewal window of a validity d > 0, as
// offsets from its start: ceil(50%) and floor(80%), in integers (no float
// rounding, no overflow).
func window(d time.Duration) (from, to time.Duration) {
	return d - d/2, d/5*4 + d%5*4/5
}

// RenewAt returns when to renew a certificate valid from notBefore to
// notAfter: an instant drawn uniformly between 50% and 80% of its
// validity, as Docker's rule: late enough not to renew needlessly, early
// enough to retry for weeks, and spread so that nodes that joined together
// do not all renew together. rnd is the source of randomness; nil uses math/rand/v2's
// global one (the jitter is not a secret). For an empty or inverted
// validity it returns notBefore (renew now).
func RenewAt(notBefore, notAfter time.Time, rnd *rand.Rand) time.Time {
	d := notAfter.Sub(notBefore)
	if d <= 0 {
		return notBefore
	}
	from, to := window(d)
	span := to - from
	var jitter int64
	if span > 0 {
		if rnd != nil {
			jitter = rnd.Int64N(int64(span) + 1)
		} else {
			jitter = rand.Int64N(int64(span) + 1)
		}
	}
	return notBefore.Add(from + time.Duration(jitter))
}

// NeedsRenewal reports whether a certificate is overdue for renewal at
// now: it is missing, outside its validity, or past 80% of it (the latest
// instant RenewAt picks). A renewal loop sleeps until RenewAt; a node that
// starts with a certificate for which NeedsRenewal is true renews at once.
func NeedsRenewal(cert *x509.Certificate, now time.Time) bool {
	if cert == nil || now.Before(cert.NotBefore) || !now.Before(cert.NotAfter) {
		return true
	}
	_, to := window(cert.NotAfter.Sub(cert.NotBefore))
	return !now.Before(cert.NotBefore.Add(to))
}
