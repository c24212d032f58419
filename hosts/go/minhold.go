package bextlock

// The minimum hold of RunExclusive (WithMinHold): after fn returns early,
// the lock is kept, its lease set once with the renew_for slot of ABI 1.2
// to end when the hold does ([Locker.RenewFor]).

import (
	"fmt"
	"time"
)

// CapabilityRenewTTL is the capability a plugin lists when it can set a held
// lease's remaining time once: what [WithMinHold] needs.
const CapabilityRenewTTL = "renew_ttl"

// WithMinHold keeps the lock for at least d after it was taken, even when fn
// returns sooner (ShedLock's lockAtLeastFor): a job that several nodes fire
// at slightly different times (clocks or schedulers that disagree) then runs
// once, not once per node. When fn returns early the lock is not released:
// its lease is set to end when the hold does (plus the backend's clock-drift
// allowance), it is no longer renewed, and RunExclusive returns at once. d
// may be longer than the TTL; 0 releases as usual.
//
// The plugin must list "renew_ttl" in its capabilities: RunExclusive checks
// before locking and otherwise fails with ErrUnsupported without running fn.
// A hold that cannot be set after fn ran is reported as the release error
// would be (the lease then ends with its TTL).
func WithMinHold(d time.Duration) ExclusiveOption {
	return func(o *exclusiveOptions) { o.minHold = d }
}

// checkMinHold refuses a minimum hold the plugin cannot keep, before
// anything is locked.
func checkMinHold(l *Locker, minHold time.Duration) error {
	if minHold <= 0 {
		return nil
	}
	name := l.plugin.name
	if minHold > maxTTL {
		return invalidError(name, "renew_for", "a minimum hold of %v is longer than the longest lease (%v)", minHold, maxTTL)
	}
	d, err := l.plugin.Describe()
	if err != nil {
		return err
	}
	if !d.Has(CapabilityRenewTTL) {
		return &Error{
			Plugin: name, Op: "renew_for", Status: StatusUnsupported, Code: "unsupported",
			Message: fmt.Sprintf("plugin `%s` cannot keep a lock past the job for a minimum hold: it does not list the `%s` capability (setting a held lease's remaining time once)", name, CapabilityRenewTTL),
		}
	}
	return nil
}

// releaseOrHold releases h, or, when minHold has not passed since lockedAt,
// sets its lease to end when the hold does and leaves it held. The keeper
// has stopped renewing before this runs.
func releaseOrHold(l *Locker, h *Handle, lockedAt time.Time, minHold time.Duration) error {
	left := minHold - time.Since(lockedAt)
	if minHold <= 0 || left <= 0 {
		return l.Release(h)
	}
	drift, err := l.plugin.clockDrift()
	if err != nil {
		drift = RedlockDrift
	}
	left += drift.Allowance(left)
	ms := int64((left + time.Millisecond - 1) / time.Millisecond)
	if max := int64(maxTTL / time.Millisecond); ms > max {
		ms = max
	}
	return l.RenewFor(h, time.Duration(ms)*time.Millisecond)
}
