package bextlock

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrLockLost matches the error RunExclusive returns when the lock was lost
// while fn ran.
var ErrLockLost = errors.New("bextlock: lock lost")

// LockLostError reports that RunExclusive lost its lock while fn ran: a
// renew failed, or no renew succeeded within the TTL. The context given to
// fn was cancelled at that moment.
type LockLostError struct {
	// Key is the key that was held.
	Key string
	// Err is why: the failed renew's error (usually matching ErrBackend), or
	// a note that the lease ran out before a renew came back.
	Err error
	// FnErr is what fn returned after its context was cancelled.
	FnErr error
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

// RunExclusive runs fn only if it can take key right away, and holds the lock
// for as long as fn runs.
//
// It returns ran == false with a nil error when someone else holds the key,
// and ran == false with an error when the backend failed (or ctx was already
// done). Otherwise fn runs with a context derived from ctx, while a goroutine
// renews the lock every ttl/3. If a renew fails, or no renew succeeds before
// the lease would have ended, the lock is treated as lost: fn's context is
// cancelled at once and the lock is never renewed again (retrying could make
// two holders). fn must stop its work when its context is done.
//
// After fn returns the renewals stop and the lock is released. The error is
// then, in order: a [*LockLostError] (matching ErrLockLost) if the lock was
// lost, else fn's error, else the release error.
//
// Cancelling ctx cancels fn's context too, but the lock is kept (and renewed)
// until fn returns, since fn may still be working.
func RunExclusive(ctx context.Context, l *Locker, key string, ttl time.Duration, fn func(ctx context.Context) error) (ran bool, err error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	// The lease is measured from before the request went out, so our idea of
	// when it ends is never later than the backend's.
	acquired := time.Now()
	h, ok, err := l.TryLock(key, ttl)
	if err != nil || !ok {
		return false, err
	}
	runCtx, cancel := context.WithCancel(context.WithValue(ctx, handleKey{}, h))
	defer cancel()
	w := &keeper{locker: l, handle: h, cancel: cancel, stop: make(chan struct{}), done: make(chan struct{})}
	go w.run(acquired)

	finish := func() (lost, releaseErr error) {
		close(w.stop)
		<-w.done
		return w.lost, l.Release(h)
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
		return true, &LockLostError{Key: key, Err: lost, FnErr: fnErr}
	case fnErr != nil:
		return true, fnErr
	}
	return true, releaseErr
}

// keeper renews one handle in the background until told to stop, and
// declares the lock lost on the first failed renew or when the lease runs
// out without a successful one.
type keeper struct {
	locker *Locker
	handle *Handle
	cancel context.CancelFunc
	stop   chan struct{}
	done   chan struct{}
	lost   error // written before done is closed
}

type renewResult struct {
	started time.Time
	err     error
}

func (w *keeper) run(acquired time.Time) {
	defer close(w.done)
	ttl := w.handle.TTL()
	interval := ttl / 3
	if interval <= 0 {
		interval = time.Millisecond
	}
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	// deadline is when the lease ends by our clock: a renew only extends it
	// if it was sent before then, since a later one cannot vouch for the gap.
	deadline := acquired.Add(ttl)
	expiry := time.NewTimer(time.Until(deadline))
	defer expiry.Stop()
	results := make(chan renewResult, 1)
	inFlight := false
	// Never return with a renew in flight: the caller releases next, and
	// RunExclusive should leave no call of its own behind.
	defer func() {
		if inFlight {
			<-results
		}
	}()
	for {
		select {
		case <-w.stop:
			return
		case <-ticker.C:
			if inFlight {
				continue // a slow backend: the expiry timer watches it
			}
			inFlight = true
			started := time.Now()
			go func() { results <- renewResult{started, w.locker.Renew(w.handle)} }()
		case r := <-results:
			inFlight = false
			if r.err != nil {
				w.lose(r.err)
				return
			}
			if r.started.After(deadline) {
				w.lose(fmt.Errorf("the %v lease ran out before a renew was sent", ttl))
				return
			}
			if !expiry.Stop() {
				<-expiry.C
			}
			deadline = r.started.Add(ttl)
			expiry.Reset(time.Until(deadline))
		case <-expiry.C:
			w.lose(fmt.Errorf("the %v lease ran out before a renew succeeded", ttl))
			return
		}
	}
}

func (w *keeper) lose(err error) {
	w.lost = err
	w.cancel()
}
