package bextlock

import (
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// maxTTL is BEXT_LOCKING_MAX_TTL_MS, 365 days.
const maxTTL = 365 * 24 * time.Hour

// Locker is an instance of a backend, created by [Plugin.New].
//
// All methods are safe for concurrent use by multiple goroutines. Close
// waits for calls in flight, and calls made after it return ErrClosed.
//
// Locks are not reentrant: TryLock on a key that this Locker already holds
// reports contention.
type Locker struct {
	plugin *Plugin

	// mu is held shared by every plugin call and exclusively by Close, so
	// destroy never races a call on the instance (the ABI forbids it).
	mu   sync.RWMutex
	inst *cInstance // nil once closed

	// owner is what TryLock sends (a string; "" sends none).
	owner atomic.Value

	// waits are the lock_wait calls in flight, by wait id, so Close can
	// cancel them before it takes mu (a wait holds mu shared while it
	// blocks); closing is set by Close under waitsMu.
	waitsMu sync.Mutex
	waits   map[uint64]struct{}
	closing bool

	// logf, set by SetLogf, is told once when waits poll.
	logf        atomic.Value
	pollingOnce sync.Once
	pollingWhy  atomic.Value
}

// Owner is what TryLock (and RunExclusive) send as the lock's owner:
// [DefaultOwner] ("hostname:pid") unless SetOwner changed it.
func (l *Locker) Owner() string {
	s, _ := l.owner.Load().(string)
	return s
}

// SetOwner changes the owner TryLock sends from now on, say to
// "hostname:pid:job-name". The owner is stored with the lock by a plugin
// with the "owner" capability, and shown by Inspect and `bext-lock status`;
// it is for people, proves nothing, and two holders may give the same one.
// "" sends no owner. It must be valid UTF-8 of at most MaxOwnerBytes bytes,
// else ErrInvalid and the owner is unchanged.
func (l *Locker) SetOwner(owner string) error {
	if err := checkOwner(owner); err != nil {
		return invalidError(l.plugin.name, "try_lock", "%v", err)
	}
	l.owner.Store(owner)
	return nil
}

// Plugin returns the plugin this Locker's instance belongs to.
func (l *Locker) Plugin() *Plugin { return l.plugin }

type lockRequest struct {
	Key   string `json:"key"`
	TTLMs int64  `json:"ttl_ms"`
	Owner string `json:"owner,omitempty"`
}

// TryLock tries once to take key for ttl, without waiting.
//
// It returns the handle and true when the lock was acquired; nil, false and
// a nil error when someone else holds the key (contention is not an error);
// and an error only when the backend is broken or the request is refused.
// Keep the distinction: treating an error as contention hides an outage, and
// treating contention as an error pages someone for nothing.
//
// key must be 1 to 1024 bytes of valid UTF-8. ttl is sent in whole
// milliseconds (truncated) and must be between 1ms and 365 days. The
// request carries the Locker's [Locker.Owner] ("hostname:pid" by default).
func (l *Locker) TryLock(key string, ttl time.Duration) (*Handle, bool, error) {
	return l.TryLockAs(key, ttl, l.Owner())
}

// TryLockAs is TryLock with an explicit owner for this acquisition ("" sends
// none): valid UTF-8 of at most MaxOwnerBytes bytes, else ErrInvalid naming
// the owner. A plugin built for ABI 1.0, or without the "owner" capability,
// ignores it.
func (l *Locker) TryLockAs(key string, ttl time.Duration, owner string) (*Handle, bool, error) {
	name := l.plugin.name
	if err := checkOwner(owner); err != nil {
		return nil, false, invalidError(name, "try_lock", "%v", err)
	}
	// encoding/json would quietly turn invalid UTF-8 into U+FFFD, mapping
	// different keys onto one lock.
	if !utf8.ValidString(key) {
		return nil, false, invalidError(name, "try_lock", "the key is not valid UTF-8")
	}
	if ttl < time.Millisecond {
		return nil, false, invalidError(name, "try_lock", "ttl %v is shorter than 1ms", ttl)
	}
	req, err := json.Marshal(lockRequest{Key: key, TTLMs: int64(ttl / time.Millisecond), Owner: owner})
	if err != nil {
		return nil, false, invalidError(name, "try_lock", "cannot encode the request: %v", err)
	}
	sent := time.Now()
	status, out, hasOut, err := l.call(slotTryLock, req)
	if err != nil {
		return nil, false, err
	}
	switch Status(status) {
	case StatusContended:
		return nil, false, nil
	case StatusOK:
	default:
		if status < 0 {
			return nil, false, statusError(name, "try_lock", status, out, hasOut)
		}
		return nil, false, protocolError(name, "try_lock", status, "unexpected status %d", status)
	}
	if !hasOut {
		return nil, false, protocolError(name, "try_lock", status, "OK without a handle")
	}
	h, perr := parseHandle(out)
	if perr == nil && h.key != key {
		perr = fmt.Errorf("the handle is for key %q, not %q", h.key, key)
	}
	if perr != nil {
		// We may hold a lock we cannot describe: give it back rather than
		// leave it to expire.
		_, _, _, _ = l.call(slotRelease, out)
		return nil, false, protocolError(name, "try_lock", status, "%v: %s", perr, out)
	}
	h.sent = sent
	return h, true, nil
}

// Renew restarts the handle's TTL. An error means the lock can no longer be
// trusted to be ours: ErrBackend when the backend says it is not held by
// this handle any more (expired, released or taken over) or could not be
// reached. Do not retry a failed renew into a second holder; stop the
// protected work instead.
func (l *Locker) Renew(h *Handle) error {
	return l.handleCall(slotRenew, h)
}

// Release gives the lock back. Releasing a lock that is no longer ours
// (expired, taken over) succeeds and touches nothing.
func (l *Locker) Release(h *Handle) error {
	return l.handleCall(slotRelease, h)
}

func (l *Locker) handleCall(s slot, h *Handle) error {
	name := l.plugin.name
	if h == nil || len(h.raw) == 0 {
		return invalidError(name, s.String(), "no handle")
	}
	status, out, hasOut, err := l.call(s, h.raw)
	switch {
	case err != nil:
		return err
	case status < 0:
		return statusError(name, s.String(), status, out, hasOut)
	case status != int32(StatusOK):
		return protocolError(name, s.String(), status, "unexpected status %d", status)
	}
	return nil
}

// call runs one slot under the shared lock, so Close waits for it.
func (l *Locker) call(s slot, input []byte) (status int32, out []byte, hasOut bool, err error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.inst == nil {
		return 0, nil, false, ErrClosed
	}
	status, out, hasOut = callSlot(l.plugin.vt, s, l.inst, input)
	return status, out, hasOut, nil
}

// Close shuts the instance down: it cancels the waits in flight (their Lock
// returns ErrClosed), waits for calls in flight, runs the
// plugin's cleanup (closing connections, stopping background work) and frees
// the instance. Locks still held are not released; they expire with their
// TTL. Later calls return ErrClosed; closing again is a no-op.
//
// The error is cleanup's; the instance is freed either way.
func (l *Locker) Close() error {
	l.cancelWaits()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.inst == nil {
		return nil
	}
	vt, name := l.plugin.vt, l.plugin.name
	status, out, hasOut := callCleanup(vt, l.inst)
	callDestroy(vt, l.inst)
	l.inst = nil
	switch {
	case status < 0:
		return statusError(name, "cleanup", status, out, hasOut)
	case status != int32(StatusOK):
		return protocolError(name, "cleanup", status, "unexpected status %d", status)
	}
	return nil
}
