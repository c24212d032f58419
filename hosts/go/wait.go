package bextlock

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// The pauses of the polling fallback: from pollFirst, doubling up to
// pollMax, with jitter, as every other host polls.
const (
	pollFirst = 10 * time.Millisecond
	pollMax   = 250 * time.Millisecond
)

// nextWaitID numbers the waits of this process: ids must be unique per
// instance, and one counter for all instances is simplest.
var nextWaitID uint64

type waitRequest struct {
	Key    string `json:"key"`
	TTLMs  int64  `json:"ttl_ms"`
	Owner  string `json:"owner,omitempty"`
	WaitMs int64  `json:"wait_ms"`
	WaitID uint64 `json:"wait_id"`
}

type cancelRequest struct {
	WaitID uint64 `json:"wait_id"`
}

type renewForRequest struct {
	Handle json.RawMessage `json:"handle"`
	TTLMs  int64           `json:"ttl_ms"`
}

// SetLogf sets where the Locker says, once, that its waits poll try_lock
// rather than wait on the backend's notification (a plugin built before ABI
// 1.2, or a backend whose lock_wait is unsupported), e.g. log.Printf. nil,
// the default, says nothing; [Locker.PollingReason] tells the same.
func (l *Locker) SetLogf(logf func(format string, args ...any)) {
	l.logf.Store(logFunc{logf})
}

type logFunc struct{ f func(string, ...any) }

// PollingReason is why this Locker's waits poll try_lock, or "" when no
// wait has had to (yet): "it has no lock_wait slot (ABI 1.1)", or "its
// lock_wait is unsupported here: ..." with the backend's reason.
func (l *Locker) PollingReason() string {
	s, _ := l.pollingWhy.Load().(string)
	return s
}

func (l *Locker) notePolling(why string) {
	l.pollingOnce.Do(func() {
		l.pollingWhy.Store(why)
		if f, _ := l.logf.Load().(logFunc); f.f != nil {
			f.f("bextlock: plugin `%s`: waiting by polling try_lock: %s", l.plugin.name, why)
		}
	})
}

// Lock waits for key until the lock is ours, ctx is done, or the backend
// fails, and returns the handle. It sends the Locker's [Locker.Owner].
//
// It returns (h, nil) once acquired; (nil, ctx.Err()) when ctx is cancelled
// or its deadline passes first; (nil, ErrClosed) when the Locker is closed
// meanwhile; and (nil, err) when the backend fails or the request is refused
// (as [Locker.TryLock], an error is never contention and contention is never
// an error). A ctx without a deadline waits as long as it takes.
//
// On a plugin with the ABI 1.2 lock_wait slot the wait blocks on the
// backend's own notification, and a cancelled ctx ends it through the
// plugin's cancel_wait (within 100 ms, leaving nothing on the server). On an
// older plugin, or a backend whose lock_wait is unsupported, it polls
// TryLock with jittered backoff from 10 ms to 250 ms; [Locker.SetLogf] and
// [Locker.PollingReason] say so. The handle's [Handle.Sent] is when the
// request that took the lock left: date the lease from it.
func (l *Locker) Lock(ctx context.Context, key string, ttl time.Duration) (*Handle, error) {
	return l.LockAs(ctx, key, ttl, l.Owner())
}

// LockAs is Lock with an explicit owner for this acquisition ("" sends
// none), checked as [Locker.TryLockAs] checks it.
func (l *Locker) LockAs(ctx context.Context, key string, ttl time.Duration, owner string) (*Handle, error) {
	name := l.plugin.name
	if err := checkOwner(owner); err != nil {
		return nil, invalidError(name, "lock_wait", "%v", err)
	}
	if !utf8.ValidString(key) {
		return nil, invalidError(name, "lock_wait", "the key is not valid UTF-8")
	}
	if ttl < time.Millisecond {
		return nil, invalidError(name, "lock_wait", "ttl %v is shorter than 1ms", ttl)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if hasSlot(l.plugin.vt, slotLockWait) {
		h, err, unsupported := l.lockWait(ctx, key, ttl, owner)
		if unsupported == "" {
			return h, err
		}
		l.notePolling("its lock_wait is unsupported here: " + unsupported)
	} else {
		l.notePolling(fmt.Sprintf("it has no lock_wait slot (ABI 1.%d)", abiMinor(l.plugin.vt)))
	}
	return l.pollLock(ctx, key, ttl, owner)
}

// register records a wait in flight, unless the Locker is closing.
func (l *Locker) register(id uint64) bool {
	l.waitsMu.Lock()
	defer l.waitsMu.Unlock()
	if l.closing {
		return false
	}
	if l.waits == nil {
		l.waits = make(map[uint64]struct{})
	}
	l.waits[id] = struct{}{}
	return true
}

func (l *Locker) unregister(id uint64) {
	l.waitsMu.Lock()
	delete(l.waits, id)
	l.waitsMu.Unlock()
}

// cancelWaits makes every later wait fail and cancels those in flight, so
// Close does not wait for them to time out.
func (l *Locker) cancelWaits() {
	l.waitsMu.Lock()
	l.closing = true
	ids := make([]uint64, 0, len(l.waits))
	for id := range l.waits {
		ids = append(ids, id)
	}
	l.waitsMu.Unlock()
	for _, id := range ids {
		l.cancelWait(id)
	}
}

// cancelWait calls the plugin's cancel_wait for id. An id the plugin does
// not know is a no-op there (and remembered for a while, so a cancel that
// overtakes its wait still ends it).
func (l *Locker) cancelWait(id uint64) {
	if !hasSlot(l.plugin.vt, slotCancelWait) {
		return
	}
	req, _ := json.Marshal(cancelRequest{WaitID: id})
	_, _, _, _ = l.call(slotCancelWait, req)
}

// waitMs is how long one lock_wait call may wait: until ctx's deadline
// (rounded up, so the call does not return just before it), or the longest
// wait the ABI allows.
func waitMs(ctx context.Context) int64 {
	longest := int64(maxTTL / time.Millisecond)
	deadline, ok := ctx.Deadline()
	if !ok {
		return longest
	}
	left := time.Until(deadline)
	if left <= 0 {
		return 0
	}
	ms := int64((left + time.Millisecond - 1) / time.Millisecond)
	if ms > longest {
		return longest
	}
	return ms
}

// lockWait waits through the lock_wait slot. unsupported is the backend's
// reason when its lock_wait cannot wait (the caller then polls).
func (l *Locker) lockWait(ctx context.Context, key string, ttl time.Duration, owner string) (h *Handle, err error, unsupported string) {
	name := l.plugin.name
	for {
		id := atomic.AddUint64(&nextWaitID, 1)
		req, err := json.Marshal(waitRequest{
			Key: key, TTLMs: int64(ttl / time.Millisecond), Owner: owner, WaitMs: waitMs(ctx), WaitID: id,
		})
		if err != nil {
			return nil, invalidError(name, "lock_wait", "cannot encode the request: %v", err), ""
		}
		if !l.register(id) {
			return nil, ErrClosed, ""
		}
		// A cancelled ctx ends the wait through cancel_wait, from another
		// goroutine, while this one is blocked in the plugin.
		done := make(chan struct{})
		watcher := make(chan struct{})
		go func() {
			defer close(watcher)
			select {
			case <-ctx.Done():
				l.cancelWait(id)
			case <-done:
			}
		}()
		status, out, hasOut, sentAgo, callErr := l.callWait(req)
		returned := time.Now()
		close(done)
		<-watcher
		l.unregister(id)
		if callErr != nil {
			return nil, callErr, ""
		}
		switch Status(status) {
		case StatusOK:
			if !hasOut {
				return nil, protocolError(name, "lock_wait", status, "OK without a handle"), ""
			}
			h, perr := parseHandle(out)
			if perr == nil && h.key != key {
				perr = fmt.Errorf("the handle is for key %q, not %q", h.key, key)
			}
			if perr != nil {
				_, _, _, _ = l.call(slotRelease, out)
				return nil, protocolError(name, "lock_wait", status, "%v: %s", perr, out), ""
			}
			h.sent = returned.Add(-sentAgo)
			return h, nil, ""
		case StatusContended, StatusCancelled:
			if err := ctx.Err(); err != nil {
				return nil, err, ""
			}
			if l.isClosing() {
				return nil, ErrClosed, ""
			}
			// The longest wait passed with ctx still live: wait again.
			continue
		}
		if status < 0 {
			e := statusError(name, "lock_wait", status, out, hasOut)
			if Status(status) == StatusUnsupported {
				return nil, nil, e.Message
			}
			return nil, e, ""
		}
		return nil, protocolError(name, "lock_wait", status, "unexpected status %d", status), ""
	}
}

func (l *Locker) isClosing() bool {
	l.waitsMu.Lock()
	defer l.waitsMu.Unlock()
	return l.closing
}

// callWait runs lock_wait under the shared lock, as call does.
func (l *Locker) callWait(input []byte) (status int32, out []byte, hasOut bool, sentAgo time.Duration, err error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.inst == nil {
		return 0, nil, false, 0, ErrClosed
	}
	status, out, hasOut, sentAgo = callLockWait(l.plugin.vt, l.inst, input)
	return status, out, hasOut, sentAgo, nil
}

// pollLock is the fallback: TryLock with jittered exponential backoff until
// the lock is ours, ctx is done or TryLock fails.
func (l *Locker) pollLock(ctx context.Context, key string, ttl time.Duration, owner string) (*Handle, error) {
	backoff := pollFirst
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		h, ok, err := l.TryLockAs(key, ttl, owner)
		if err != nil {
			return nil, err
		}
		if ok {
			return h, nil
		}
		// Full jitter on the upper half: waiters that collided once do not
		// collide again in step.
		half := backoff / 2
		pause := half + time.Duration(rand.Int63n(int64(half)+1))
		if backoff *= 2; backoff > pollMax {
			backoff = pollMax
		}
		timer.Reset(pause)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timer.C:
		}
	}
}

// RenewFor sets the held lease's remaining time to d, once (ABI 1.2
// renew_for, capability "renew_ttl"); a later Renew restarts it at the
// handle's TTL again. An error means the lock can no longer be trusted to
// be ours, as for [Locker.Renew], except ErrUnsupported: the plugin has no
// renew_for slot (built before ABI 1.2; found without calling anything) or
// its backend cannot set a remaining time.
func (l *Locker) RenewFor(h *Handle, d time.Duration) error {
	name := l.plugin.name
	if h == nil || len(h.raw) == 0 {
		return invalidError(name, "renew_for", "no handle")
	}
	if d < time.Millisecond || d > maxTTL {
		return invalidError(name, "renew_for", "ttl %v is not between 1ms and 365 days", d)
	}
	if !hasSlot(l.plugin.vt, slotRenewFor) {
		l.mu.RLock()
		closed := l.inst == nil
		l.mu.RUnlock()
		if closed {
			return ErrClosed
		}
		return unsupportedError(l.plugin, "renew_for")
	}
	req, err := json.Marshal(renewForRequest{Handle: h.raw, TTLMs: int64(d / time.Millisecond)})
	if err != nil {
		return invalidError(name, "renew_for", "cannot encode the request: %v", err)
	}
	status, out, hasOut, err := l.call(slotRenewFor, req)
	switch {
	case err != nil:
		return err
	case status < 0:
		return statusError(name, "renew_for", status, out, hasOut)
	case status != int32(StatusOK):
		return protocolError(name, "renew_for", status, "unexpected status %d", status)
	}
	return nil
}
