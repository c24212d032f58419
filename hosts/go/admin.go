package bextlock

import (
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"
)

// LockInfo is what Inspect reports about a key: a snapshot, which may
// change right after it is taken.
//
// The optional fields are nil when the key is not held or when the backend
// does not know them. Times are measured by the backend's clock (the one
// that expires the leases), so they can differ from the holder's view by the
// clock drift. The lock id is never reported: it is the right to release.
type LockInfo struct {
	// Key is the key asked about.
	Key string
	// Held is whether some holder's lease is running now.
	Held bool
	// Fence is the holder's fence, as its Handle shows it.
	Fence *uint64
	// Owner is the owner the holder gave (see [Locker.SetOwner]).
	Owner *string
	// ExpiresIn is how long the lease still runs.
	ExpiresIn *time.Duration
	// HeldFor is how long ago the holder acquired the lock (renewals do
	// not reset it).
	HeldFor *time.Duration
}

// lockInfoJSON is inspect's answer on the wire.
type lockInfoJSON struct {
	Key         *string `json:"key"`
	Held        *bool   `json:"held"`
	Fence       *uint64 `json:"fence"`
	Owner       *string `json:"owner"`
	ExpiresInMs *uint64 `json:"expires_in_ms"`
	HeldForMs   *uint64 `json:"held_for_ms"`
}

// ms turns an optional count of milliseconds into a duration.
func ms(v *uint64) *time.Duration {
	if v == nil {
		return nil
	}
	d := time.Duration(*v) * time.Millisecond
	return &d
}

// String describes the key's state for logs.
func (i LockInfo) String() string {
	if !i.Held {
		return fmt.Sprintf("%q: free", i.Key)
	}
	s := fmt.Sprintf("%q: held", i.Key)
	if i.Owner != nil {
		s += fmt.Sprintf(" by %q", *i.Owner)
	}
	if i.Fence != nil {
		s += fmt.Sprintf(", fence %d", *i.Fence)
	}
	if i.ExpiresIn != nil {
		s += fmt.Sprintf(", expires in %v", *i.ExpiresIn)
	}
	if i.HeldFor != nil {
		s += fmt.Sprintf(", held for %v", *i.HeldFor)
	}
	return s
}

// ForceReleased is what ForceRelease did.
type ForceReleased struct {
	// Released is whether a lock was broken. False for a free key, or when
	// the holder's fence was not the one asked for.
	Released bool `json:"released"`
	// Fence is the fence of the holder that was broken, when the backend
	// fences.
	Fence *uint64 `json:"fence,omitempty"`
}

// Stats are a Locker's counts since it was created, as the plugin's stats
// slot reports them. They are counted inside the plugin, identically for
// every backend and every host, and read without a lock, so a snapshot
// taken while calls run may be off by the calls in flight.
type Stats struct {
	// Acquired counts try_lock calls that took the lock.
	Acquired uint64 `json:"acquired"`
	// Contended counts try_lock calls that found the key held.
	Contended uint64 `json:"contended"`
	// Errors counts try_lock, renew, release and force_release calls
	// answered with an error, by code: "invalid_argument", "backend",
	// "panic", "unsupported" (a code added later adds a key).
	Errors map[string]uint64 `json:"errors"`
	// Renewed counts renew calls that restarted the lease.
	Renewed uint64 `json:"renewed"`
	// RenewFailures counts renew calls that failed (also in Errors): each
	// is a lock lost or that could not be confirmed.
	RenewFailures uint64 `json:"renew_failures"`
	// Released counts release calls answered OK.
	Released uint64 `json:"released"`
	// ForceReleased counts locks broken by force_release.
	ForceReleased uint64 `json:"force_released"`
	// Latency holds the histograms of the time spent inside each call.
	Latency Latencies `json:"latency_us"`
}

// Latencies are per-call histograms with fixed bucket bounds.
type Latencies struct {
	// BoundsMicros are the upper bounds of the buckets in microseconds,
	// fixed by the ABI (1 µs to 5 s). A call that took t counts in the
	// first bucket whose bound b has t <= b.
	BoundsMicros []uint64 `json:"bounds"`
	// TryLock, Renew and Release hold one count per bound plus a last one
	// for slower calls (+Inf); counts are per bucket, not cumulative.
	TryLock []uint64 `json:"try_lock"`
	Renew   []uint64 `json:"renew"`
	Release []uint64 `json:"release"`
}

// check says what is wrong with a stats answer, or nil.
func (s Stats) check() error {
	l := s.Latency
	if len(l.BoundsMicros) == 0 {
		return fmt.Errorf("latency_us.bounds is empty")
	}
	for name, counts := range map[string][]uint64{"try_lock": l.TryLock, "renew": l.Renew, "release": l.Release} {
		if len(counts) != len(l.BoundsMicros)+1 {
			return fmt.Errorf("latency_us.%s has %d buckets, want %d (one per bound and +Inf)", name, len(counts), len(l.BoundsMicros)+1)
		}
	}
	return nil
}

type keyRequest struct {
	Key string `json:"key"`
}

type forceReleaseRequest struct {
	Key     string  `json:"key"`
	IfFence *uint64 `json:"if_fence,omitempty"`
}

// Inspect reports who holds key: whether it is held, the holder's fence and
// owner, how long the lease still runs and how long it has been held, by the
// backend's clock. A key nobody holds (never locked, released, expired) is
// Held false, not an error.
//
// It fails with ErrUnsupported when the plugin has no inspect slot (a
// plugin built for ABI 1.0; nothing is called then) or its backend or mode
// cannot inspect, and with ErrInvalid for a bad key.
func (l *Locker) Inspect(key string) (LockInfo, error) {
	name := l.plugin.name
	if !utf8.ValidString(key) {
		return LockInfo{}, invalidError(name, "inspect", "the key is not valid UTF-8")
	}
	out, err := l.optionalCall(slotInspect, keyRequest{Key: key})
	if err != nil {
		return LockInfo{}, err
	}
	var w lockInfoJSON
	if err := json.Unmarshal(out, &w); err != nil || w.Key == nil || w.Held == nil {
		return LockInfo{}, protocolError(name, "inspect", int32(StatusOK), "not an inspect answer (want key and held): %s", out)
	}
	if *w.Key != key {
		return LockInfo{}, protocolError(name, "inspect", int32(StatusOK), "the answer is for key %q, not %q", *w.Key, key)
	}
	return LockInfo{
		Key: *w.Key, Held: *w.Held, Fence: w.Fence, Owner: w.Owner,
		ExpiresIn: ms(w.ExpiresInMs), HeldFor: ms(w.HeldForMs),
	}, nil
}

// ForceRelease breaks the lock on key, whoever holds it: for an operator
// freeing a lock whose holder is stuck. Afterwards the broken holder's Renew
// fails, its Release is a no-op, and the next acquisition gets a higher
// fence, so a fenced resource refuses the broken holder's late writes. It
// does not stop the broken holder's process.
//
// Prefer ForceReleaseIfFence with the fence Inspect showed, so that a newer
// holder is never broken by mistake. Errors as for Inspect.
func (l *Locker) ForceRelease(key string) (ForceReleased, error) {
	return l.forceRelease(key, nil)
}

// ForceReleaseIfFence breaks the lock on key only when its holder's fence is
// exactly fence; otherwise (another holder, or a free key) it reports
// Released false. A mode that hands out no fences answers ErrUnsupported.
func (l *Locker) ForceReleaseIfFence(key string, fence uint64) (ForceReleased, error) {
	return l.forceRelease(key, &fence)
}

func (l *Locker) forceRelease(key string, ifFence *uint64) (ForceReleased, error) {
	name := l.plugin.name
	if !utf8.ValidString(key) {
		return ForceReleased{}, invalidError(name, "force_release", "the key is not valid UTF-8")
	}
	out, err := l.optionalCall(slotForceRelease, forceReleaseRequest{Key: key, IfFence: ifFence})
	if err != nil {
		return ForceReleased{}, err
	}
	var w struct {
		Released *bool   `json:"released"`
		Fence    *uint64 `json:"fence"`
	}
	if err := json.Unmarshal(out, &w); err != nil || w.Released == nil {
		return ForceReleased{}, protocolError(name, "force_release", int32(StatusOK), "not a force_release answer (want released): %s", out)
	}
	return ForceReleased{Released: *w.Released, Fence: w.Fence}, nil
}

// Stats returns the Locker's counters and latency histograms since it was
// created (see [Stats]); [Stats.WritePrometheus] renders them for a
// /metrics page. It fails with ErrUnsupported when the plugin has no stats
// slot (a plugin built for ABI 1.0), and with ErrClosed after Close.
func (l *Locker) Stats() (Stats, error) {
	out, err := l.optionalCall(slotStats, nil)
	if err != nil {
		return Stats{}, err
	}
	var s Stats
	if err := json.Unmarshal(out, &s); err != nil {
		return Stats{}, protocolError(l.plugin.name, "stats", int32(StatusOK), "not a stats answer: %v", err)
	}
	if err := s.check(); err != nil {
		return Stats{}, protocolError(l.plugin.name, "stats", int32(StatusOK), "%v", err)
	}
	return s, nil
}

// optionalCall runs a slot of ABI 1.1 with request (nil: none) and returns
// its JSON answer on OK. A slot the plugin lacks is ErrUnsupported, found
// without calling anything.
func (l *Locker) optionalCall(s slot, request any) ([]byte, error) {
	name := l.plugin.name
	if !hasSlot(l.plugin.vt, s) {
		// Closed is still closed, whatever the plugin has.
		l.mu.RLock()
		closed := l.inst == nil
		l.mu.RUnlock()
		if closed {
			return nil, ErrClosed
		}
		return nil, unsupportedError(l.plugin, s.String())
	}
	var req []byte
	if request != nil {
		var err error
		if req, err = json.Marshal(request); err != nil {
			return nil, invalidError(name, s.String(), "cannot encode the request: %v", err)
		}
	}
	status, out, hasOut, err := l.call(s, req)
	switch {
	case err != nil:
		return nil, err
	case status < 0:
		return nil, statusError(name, s.String(), status, out, hasOut)
	case status != int32(StatusOK):
		return nil, protocolError(name, s.String(), status, "unexpected status %d", status)
	case !hasOut:
		return nil, protocolError(name, s.String(), status, "OK without an answer")
	}
	return out, nil
}
