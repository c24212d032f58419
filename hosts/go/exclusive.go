package bextlock

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"
)

// ErrLockLost matches the error RunExclusive returns when the lock was lost
// while fn ran.
var ErrLockLost = errors.New("bextlock: lock lost")

// LockLostError reports that RunExclusive lost its lock while fn ran: a
// renew failed, no renew was confirmed by the deadline to stop, or the
// process was paused past it. The context given to fn was cancelled at that
// moment, which is at the latest the stop margin before LeaseEnd.
type LockLostError struct {
	// Key is the key that was held.
	Key string
	// Err is why: the failed renew's error (usually matching ErrBackend), or
	// a note that no renew was confirmed in time, or that the process was
	// paused (the note then says "paused").
	Err error
	// FnErr is what fn returned after its context was cancelled.
	FnErr error
	// LeaseEnd is when the lease ends (or ended) by this process's clock:
	// nothing the lock protects may run after it.
	LeaseEnd time.Time
}

func (e *LockLostError) Error() string {
	return fmt.Sprintf("bextlock: lock on %q lost while the work ran: %v", e.Key, e.Err)
}

// Is makes errors.Is(err, ErrLockLost) true.
func (e *LockLostError) Is(target error) bool { return target == ErrLockLost }

// Unwrap returns the reason the lock was lost.
func (e *LockLostError) Unwrap() error { return e.Err }

type handleKey struct{}

// HandleFromContext returns the handle RunExclusive holds while it runs fn,
// from the context fn was given; use it to read the fence token.
func HandleFromContext(ctx context.Context) (*Handle, bool) {
	h, ok := ctx.Value(handleKey{}).(*Handle)
	return h, ok
}

// ClockDrift is how much sooner than this process's clock a backend may end
// a lease: Rate × TTL + FixedMs milliseconds. A plugin states its own in its
// describe answer ([Description.ClockDrift]); RedlockDrift otherwise.
type ClockDrift struct {
	// Rate is the fastest the backend's clock may run relative to ours,
	// minus one: 0.01 for 1 %. From 0 up to (not including) 1.
	Rate float64 `json:"rate"`
	// FixedMs is added on top, in milliseconds.
	FixedMs uint64 `json:"fixed_ms"`
}

// RedlockDrift is Redlock's allowance, 1 % of the TTL plus 2 ms: what a
// backend that expires leases on a server's clock gets.
var RedlockDrift = ClockDrift{Rate: 0.01, FixedMs: 2}

// Allowance is what to take off a lease of ttl, rounded up to the
// microsecond.
func (d ClockDrift) Allowance(ttl time.Duration) time.Duration {
	us := math.Ceil(ttl.Seconds() * d.Rate * 1e6)
	return time.Duration(us)*time.Microsecond + time.Duration(d.FixedMs)*time.Millisecond
}

func (d ClockDrift) check() error {
	if math.IsNaN(d.Rate) || d.Rate < 0 || d.Rate >= 1 {
		return fmt.Errorf("clock drift rate %v is not in [0, 1)", d.Rate)
	}
	if time.Duration(d.FixedMs)*time.Millisecond > maxTTL {
		return fmt.Errorf("clock drift fixed_ms %d is above the TTL limit", d.FixedMs)
	}
	return nil
}

// ExclusiveOption changes how RunExclusive keeps its lock.
type ExclusiveOption func(*exclusiveOptions)

type exclusiveOptions struct {
	stopMargin time.Duration // 0: a third of the TTL
	drift      *ClockDrift   // nil: the plugin's own, or RedlockDrift
	minHold    time.Duration // 0: release when fn returns (minhold.go)
}

// WithStopMargin sets how long before the lease end fn's context is
// cancelled at the latest: the time fn has to stop. Default: a third of the
// TTL. It must leave the renew sent at a third of the TTL time to be
// confirmed; RunExclusive refuses one that does not (ErrInvalid).
func WithStopMargin(margin time.Duration) ExclusiveOption {
	return func(o *exclusiveOptions) { o.stopMargin = margin }
}

// WithClockDrift overrides the backend's clock-drift allowance (by default
// the one its plugin states, or RedlockDrift).
func WithClockDrift(d ClockDrift) ExclusiveOption {
	return func(o *exclusiveOptions) { o.drift = &d }
}

// pauseMin is the least lateness that counts as a pause; a tenth of the TTL
// if that is more.
const pauseMin = 50 * time.Millisecond

// RunExclusive runs fn only if it can take key right away, and holds the lock
// for as long as fn runs.
//
// It returns ran == false with a nil error when someone else holds the key,
// and ran == false with an error when the backend failed (or ctx was already
// done, or the options do not fit ttl). Otherwise fn runs with a context
// derived from ctx, while a goroutine renews the lock every ttl/3.
//
// The lease is counted from just before each request was sent, less the
// backend's clock-drift allowance: leaseEnd = sent + ttl − drift. fn's
// context is cancelled, at the latest, the stop margin (a third of the TTL
// by default; see [WithStopMargin]) before leaseEnd: when a renew fails,
// when no renew has been confirmed by then (a backend that hangs), or at
// once when this process was paused past that deadline (SIGSTOP, a
// suspended machine). The lock is then never renewed again (retrying could
// make two holders). fn must stop its work when its context is done; if it
// does so within the stop margin, it is done before anyone else can hold
// the lock. A fenced resource protects against a process frozen as a whole.
//
// After fn returns the renewals stop and the lock is released (a lost lock
// is not: it is no longer ours). The error is then, in order: a
// [*LockLostError] (matching ErrLockLost) if the lock was lost, else fn's
// error, else the release error.
//
// With [WithMinHold], a lock taken less than the hold ago is kept rather
// than released, until the hold ends.
//
// Cancelling ctx cancels fn's context too, but the lock is kept (and renewed)
// until fn returns, since fn may still be working.
func RunExclusive(ctx context.Context, l *Locker, key string, ttl time.Duration, fn func(ctx context.Context) error, opts ...ExclusiveOption) (ran bool, err error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	var o exclusiveOptions
	for _, opt := range opts {
		opt(&o)
	}
	t, err := newTimeline(l, ttl, o)
	if err != nil {
		return false, err
	}
	if err := checkMinHold(l, o.minHold); err != nil {
		return false, err
	}
	// The lease is measured from before the request went out, so our idea of
	// when it ends is never later than the backend's.
	acquired := time.Now()
	h, ok, err := l.TryLock(key, ttl)
	if err != nil || !ok {
		return false, err
	}
	lockedAt := time.Now()
	runCtx, cancel := context.WithCancel(context.WithValue(ctx, handleKey{}, h))
	defer cancel()
	w := &keeper{locker: l, handle: h, t: t, cancel: cancel, stop: make(chan struct{}), done: make(chan struct{})}
	go w.run(acquired)

	finish := func() (lost error, releaseErr error) {
		close(w.stop)
		<-w.done
		if w.lost != nil {
			return w.lost, nil
		}
		return nil, releaseOrHold(l, h, lockedAt, o.minHold)
	}
	finished := false
	defer func() {
		if !finished { // fn panicked: still stop renewing and give the lock back
			_, _ = finish()
		}
	}()
	fnErr := fn(runCtx)
	finished = true
	lost, releaseErr := finish()
	switch {
	case lost != nil:
		return true, &LockLostError{Key: key, Err: lost, FnErr: fnErr, LeaseEnd: w.leaseEnd}
	case fnErr != nil:
		return true, fnErr
	}
	return true, releaseErr
}

// timeline holds the lease's fixed numbers.
type timeline struct {
	ttl, drift, lease, margin, stopAfter, every, pause time.Duration
}

func newTimeline(l *Locker, ttl time.Duration, o exclusiveOptions) (timeline, error) {
	name := l.plugin.name
	var drift ClockDrift
	if o.drift != nil {
		drift = *o.drift
	} else {
		var err error
		if drift, err = l.plugin.clockDrift(); err != nil {
			return timeline{}, err
		}
	}
	if err := drift.check(); err != nil {
		return timeline{}, invalidError(name, "try_lock", "%v", err)
	}
	t := timeline{ttl: ttl, drift: drift.Allowance(ttl), margin: o.stopMargin, every: ttl / 3, pause: ttl / 10}
	if t.margin <= 0 {
		t.margin = ttl / 3
	}
	if t.every <= 0 {
		t.every = time.Millisecond
	}
	if t.pause < pauseMin {
		t.pause = pauseMin
	}
	t.lease = ttl - t.drift
	t.stopAfter = t.lease - t.margin
	if t.stopAfter <= t.every {
		return timeline{}, invalidError(name, "try_lock",
			"a stop margin of %v leaves no time to renew a %v lease: the context would be cancelled %v in, before the first renew at %v (the lease counts as %v: the TTL less %v for clock drift)",
			t.margin, ttl, t.stopAfter, t.every, t.lease, t.drift)
	}
	return t, nil
}

// keeper renews one handle in the background until told to stop, and
// declares the lock lost on the first failed renew, when no renew has been
// confirmed by the deadline to stop, or after a pause past that deadline.
type keeper struct {
	locker   *Locker
	handle   *Handle
	t        timeline
	cancel   context.CancelFunc
	stop     chan struct{}
	done     chan struct{}
	lost     error     // written before done is closed
	leaseEnd time.Time // likewise
}

type renewResult struct {
	started time.Time
	err     error
}

func (w *keeper) run(acquired time.Time) {
	defer close(w.done)
	t := w.t
	ticker := time.NewTicker(t.every)
	defer ticker.Stop()
	w.leaseEnd = acquired.Add(t.lease)
	deadline := acquired.Add(t.stopAfter)
	expiry := time.NewTimer(time.Until(deadline))
	defer expiry.Stop()
	results := make(chan renewResult, 1)
	inFlight := false
	// Never return with a renew in flight while the lock is held: the caller
	// releases next, and no renew may follow the release. After a loss there
	// is no release, and a hung renew may take the backend's whole timeout:
	// its result lands in the buffered channel and is dropped.
	defer func() {
		if inFlight && w.lost == nil {
			<-results
		}
	}()
	// Wall-clock time the monotonic clock did not see (a suspended machine)
	// shortens the lease by as much.
	last := time.Now()
	for {
		var fired time.Time // the expiry timer's scheduled instant, if it fired
		tick := false
		select {
		case <-w.stop:
			return
		case <-ticker.C:
			tick = true
		case r := <-results:
			inFlight = false
			if r.err != nil {
				w.lose(r.err)
				return
			}
			if !time.Now().Before(deadline) {
				w.lose(w.late(deadline, "no renew was confirmed by the deadline to stop"))
				return
			}
			deadline = r.started.Add(t.stopAfter)
			w.leaseEnd = r.started.Add(t.lease)
			if !expiry.Stop() {
				<-expiry.C
			}
			expiry.Reset(time.Until(deadline))
		case fired = <-expiry.C:
		}
		now := time.Now()
		if hidden := now.Round(0).Sub(last.Round(0)) - now.Sub(last); hidden >= t.pause {
			deadline = deadline.Add(-hidden)
			w.leaseEnd = w.leaseEnd.Add(-hidden)
		}
		last = now
		if !now.Before(deadline) || !fired.IsZero() {
			w.lose(w.late(deadline, "no renew was confirmed by the deadline to stop"))
			return
		}
		if tick && !inFlight {
			inFlight = true
			go func() { results <- renewResult{now, w.locker.Renew(w.handle)} }()
		}
	}
}

// late explains a passed deadline: a pause if it passed long before this
// goroutine got to run.
func (w *keeper) late(deadline time.Time, what string) error {
	past := time.Since(deadline)
	if past >= w.t.pause {
		return fmt.Errorf("the process was paused (stopped, swapped out or starved of CPU, or the machine suspended): it got to run again %v after the deadline to stop, so the lease may have passed to another holder; it is not renewed", past.Round(time.Millisecond))
	}
	return fmt.Errorf("%s, %v before the %v lease ends (counted as %v for clock drift)", what, w.t.margin, w.t.ttl, w.t.lease)
}

func (w *keeper) lose(err error) {
	w.lost = err
	w.cancel()
}
