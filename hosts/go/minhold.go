package bextlock

// The minimum hold of RunExclusive (WithMinHold): after fn returns early,
// the lock is kept, its lease set once with the renew_for slot of ABI 1.2
// to end when the hold does. The slot is called through its own small
// trampoline here, as cgo.go calls the others.

/*
#include <stddef.h>
#include "bext_locking.h"

typedef struct {
	int32_t status;
	char *out;
} blm_out;

// renew_for exists when struct_size covers it and it is not NULL; nothing
// past struct_size is read.
static blm_out blm_renew_for(const BextLockingVTable *vt, BextLockingInstance *instance, const char *input_json) {
	blm_out r = { BEXT_LOCKING_ERR_UNSUPPORTED, NULL };
	if (vt->struct_size < offsetof(BextLockingVTable, renew_for) + sizeof(vt->renew_for) || vt->renew_for == NULL) {
		return r;
	}
	r.status = vt->renew_for(instance, input_json, &r.out);
	return r;
}
*/
import "C"

import (
	"encoding/json"
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
	return l.renewForOnce(h, ms)
}

type renewForRequest struct {
	Handle json.RawMessage `json:"handle"`
	TTLMs  int64           `json:"ttl_ms"`
}

// renewForOnce calls the renew_for slot: the handle's lease ends ttlMs from
// now (later renewals would use its own TTL again).
func (l *Locker) renewForOnce(h *Handle, ttlMs int64) error {
	name := l.plugin.name
	if h == nil || len(h.raw) == 0 {
		return invalidError(name, "renew_for", "no handle")
	}
	req, err := json.Marshal(renewForRequest{Handle: h.raw, TTLMs: ttlMs})
	if err != nil {
		return invalidError(name, "renew_for", "cannot encode the request: %v", err)
	}
	in := cString(req)
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.inst == nil {
		return ErrClosed
	}
	r := C.blm_renew_for(l.plugin.vt, l.inst, charPtr(in))
	out, hasOut := takeString(l.plugin.vt, r.out)
	switch status := int32(r.status); {
	case status == int32(StatusUnsupported) && !hasOut:
		return unsupportedError(l.plugin, "renew_for")
	case status < 0:
		return statusError(name, "renew_for", status, out, hasOut)
	case status != int32(StatusOK):
		return protocolError(name, "renew_for", status, "unexpected status %d", status)
	}
	return nil
}
