package bextlock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Leader election on one key: Campaign waits to hold the key and returns a
// Leadership; its term is the lock's fence, which rises with every leader,
// so a resource that remembers the highest term it saw refuses a deposed
// leader's late writes. The Leadership renews in the background exactly as
// RunExclusive does and cancels its context at the latest the stop margin
// before the lease could pass to the next leader. Observe reports leader
// changes by polling Inspect.

// CampaignOption changes how Campaign leads.
type CampaignOption func(*campaignOptions)

type campaignOptions struct {
	exclusive     exclusiveOptions
	allowUnfenced bool
}

// WithLeaseOptions applies RunExclusive's options (WithStopMargin,
// WithClockDrift) to the leadership's lease. WithMinHold does not apply.
func WithLeaseOptions(opts ...ExclusiveOption) CampaignOption {
	return func(o *campaignOptions) {
		for _, opt := range opts {
			opt(&o.exclusive)
		}
	}
}

// AllowUnfenced lets Campaign lead on a backend whose locks carry no fence.
// There is then no term, and a leader paused past its lease can act after
// the next one started; only the context's cancellation stands between them.
func AllowUnfenced() CampaignOption {
	return func(o *campaignOptions) { o.allowUnfenced = true }
}

// Campaign waits until this candidate leads key, ctx is done (its error is
// returned), or the backend fails. The owner recorded is the Locker's
// [Locker.Owner]. Each leader's lease lasts ttl and is renewed while it
// leads: a leader that dies is replaced at most ttl later.
//
// The wait is [Locker.Lock]'s: woken by the backend on a plugin with the
// lock_wait slot (a resign or a leader's expiry hands over at once), polled
// with jittered backoff on an older one.
//
// A lock without a fence is released at once and refused with
// ErrUnsupported unless [AllowUnfenced] is given.
func Campaign(ctx context.Context, l *Locker, key string, ttl time.Duration, opts ...CampaignOption) (*Leadership, error) {
	var o campaignOptions
	for _, opt := range opts {
		opt(&o)
	}
	t, err := newTimeline(l, ttl, o.exclusive)
	if err != nil {
		return nil, err
	}
	h, err := l.Lock(ctx, key, ttl)
	if err != nil {
		return nil, err
	}
	if _, fenced := h.Fence(); !fenced && !o.allowUnfenced {
		_ = l.Release(h)
		return nil, &Error{
			Plugin: l.plugin.name, Op: "lock_wait", Status: StatusUnsupported, Code: "unsupported",
			Message: fmt.Sprintf("plugin `%s` gave a lock without a fence: an election on it has no term that rises with each leader, so nothing can refuse a deposed (paused) leader's late writes; pass AllowUnfenced to lead without fencing", l.plugin.name),
		}
	}
	return lead(l, h, t, h.Sent()), nil
}

func lead(l *Locker, h *Handle, t timeline, sent time.Time) *Leadership {
	ctx, cancel := context.WithCancel(context.Background())
	w := &keeper{locker: l, handle: h, t: t, cancel: cancel, stop: make(chan struct{}), done: make(chan struct{})}
	go w.run(sent)
	return &Leadership{locker: l, handle: h, ctx: ctx, cancel: cancel, w: w}
}

// Leadership is a won campaign: the guarded lock of the leader.
type Leadership struct {
	locker *Locker
	handle *Handle
	ctx    context.Context
	cancel context.CancelFunc
	w      *keeper

	resign    sync.Once
	resignErr error
}

// Term is this leader's term, the lock's fence; ok is false only on an
// unfenced backend that was allowed.
func (ld *Leadership) Term() (term uint64, ok bool) { return ld.handle.Fence() }

// Handle is the lock held while leading.
func (ld *Leadership) Handle() *Handle { return ld.handle }

// Context is cancelled when the leadership is lost (a renew failed, none
// was confirmed in time, or the process was paused), at the latest the stop
// margin before the lease could pass to another leader; and on Resign.
func (ld *Leadership) Context() context.Context { return ld.ctx }

// Lost is why the leadership was lost, or nil while it is held (or after a
// clean Resign).
func (ld *Leadership) Lost() error {
	if ld.ctx.Err() == nil {
		return nil
	}
	// Cancelled: by the keeper, which closes done right after, or by Resign.
	<-ld.w.done
	return ld.w.lost
}

// Resign steps down: stops renewing and releases the key, so a waiting
// candidate takes over. It returns a [*LockLostError] (matching
// ErrLockLost) if the leadership had been lost already; calling it again
// returns the same answer.
func (ld *Leadership) Resign() error {
	ld.resign.Do(func() {
		close(ld.w.stop)
		<-ld.w.done
		defer ld.cancel()
		if ld.w.lost != nil {
			ld.resignErr = &LockLostError{Key: ld.handle.Key(), Err: ld.w.lost, LeaseEnd: ld.w.leaseEnd}
			return
		}
		ld.resignErr = ld.locker.Release(ld.handle)
	})
	return ld.resignErr
}

// Leader is who leads an election, as Inspect sees it (by the backend's
// clock), or an Inspect failure.
type Leader struct {
	// Held is whether anyone leads.
	Held bool
	// Owner is the leader's owner, when the plugin stores owners.
	Owner *string
	// Term is the leader's term (its fence), on fencing backends.
	Term *uint64
	// ExpiresIn is how long its lease still runs, if the plugin says.
	ExpiresIn *time.Duration
	// Err is set (and the rest empty) when Inspect failed.
	Err error
}

// CurrentLeader is who leads key now.
func CurrentLeader(l *Locker, key string) (Leader, error) {
	info, err := l.Inspect(key)
	if err != nil {
		return Leader{}, err
	}
	if !info.Held {
		return Leader{}, nil
	}
	return Leader{Held: true, Owner: info.Owner, Term: info.Fence, ExpiresIn: info.ExpiresIn}, nil
}

func (ld Leader) same(o Leader) bool {
	eqS := func(a, b *string) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }
	eqU := func(a, b *uint64) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }
	return ld.Held == o.Held && eqS(ld.Owner, o.Owner) && eqU(ld.Term, o.Term) && (ld.Err == nil) == (o.Err == nil)
}

// Observe reports the leader of key: the current one (or Held false) first,
// then each change of leader or term, looking with Inspect every interval
// (renewals, which only move the expiry, are not changes). A leader that
// came and went between two looks is missed; nothing is reported that did
// not happen. A failing Inspect is sent once per failing stretch (Err set)
// and the watch goes on, except ErrUnsupported (a plugin that cannot
// inspect), after which the channel closes. The channel closes when ctx is
// done.
func Observe(ctx context.Context, l *Locker, key string, interval time.Duration) <-chan Leader {
	if interval <= 0 {
		interval = 500 * time.Millisecond
	}
	ch := make(chan Leader, 1)
	go func() {
		defer close(ch)
		var last *Leader
		ticker := time.NewTicker(interval)
		defer ticker.Stop()
		for {
			now, err := CurrentLeader(l, key)
			if err != nil {
				now = Leader{Err: err}
			}
			if last == nil || !now.same(*last) {
				last = &now
				select {
				case ch <- now:
				case <-ctx.Done():
					return
				}
			}
			if errors.Is(err, ErrUnsupported) {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
			}
		}
	}()
	return ch
}
