package bextlock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	bextlock "github.com/bext-locking/bext-locking/hosts/go"
)

// sharedPair is two Lockers of the memory plugin seeing the same locks, as
// two processes would through a shared backend.
func sharedPair(t *testing.T) (a, b *bextlock.Locker) {
	p := openMemory(t)
	ns := uniqueName("pair")
	return newLocker(t, p, map[string]any{"namespace": ns}), newLocker(t, p, map[string]any{"namespace": ns})
}

// waitDone fails the test if ctx is not cancelled within a generous bound:
// a hang guard, not a speed assertion.
func waitDone(t *testing.T, ctx context.Context, why string) {
	t.Helper()
	select {
	case <-ctx.Done():
	case <-time.After(15 * time.Second):
		t.Fatalf("the context was not cancelled after %s", why)
	}
}

func TestRunExclusiveRunsHoldsAndReleases(t *testing.T) {
	a, b := sharedPair(t)
	key := uniqueName("run")
	calls := 0
	ran, err := bextlock.RunExclusive(context.Background(), a, key, 5*time.Second, func(ctx context.Context) error {
		calls++
		h, ok := bextlock.HandleFromContext(ctx)
		if !ok || h.Key() != key {
			t.Errorf("HandleFromContext: %v %v", h, ok)
		}
		if _, ok := h.Fence(); !ok {
			t.Errorf("the memory backend fences, the handle has none")
		}
		mustContend(t, b, key)
		return nil
	})
	if !ran || err != nil || calls != 1 {
		t.Fatalf("ran %v, err %v, fn called %d times", ran, err, calls)
	}
	h := mustLock(t, b, key, time.Second) // released on return
	_ = b.Release(h)
	if _, ok := bextlock.HandleFromContext(context.Background()); ok {
		t.Error("a handle in a plain context")
	}
}

func TestRunExclusiveSkipsWhenContended(t *testing.T) {
	a, b := sharedPair(t)
	key := uniqueName("busy")
	h := mustLock(t, b, key, time.Minute)
	ran, err := bextlock.RunExclusive(context.Background(), a, key, time.Second, func(context.Context) error {
		t.Error("fn ran under contention")
		return nil
	})
	if ran || err != nil {
		t.Errorf("want (false, nil), got (%v, %v)", ran, err)
	}
	if err := b.Renew(h); err != nil {
		t.Errorf("the holder was disturbed: %v", err)
	}
}

func TestRunExclusiveBackendErrorIsNotContention(t *testing.T) {
	a, _ := sharedPair(t)
	fn := func(context.Context) error {
		t.Error("fn ran")
		return nil
	}
	if ran, err := bextlock.RunExclusive(context.Background(), a, "", time.Second, fn); ran || !errors.Is(err, bextlock.ErrInvalid) {
		t.Errorf("empty key: want (false, ErrInvalid), got (%v, %v)", ran, err)
	}
	a.Close()
	if ran, err := bextlock.RunExclusive(context.Background(), a, "k", time.Second, fn); ran || !errors.Is(err, bextlock.ErrClosed) {
		t.Errorf("closed locker: want (false, ErrClosed), got (%v, %v)", ran, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if ran, err := bextlock.RunExclusive(ctx, a, "k", time.Second, fn); ran || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: want (false, context.Canceled), got (%v, %v)", ran, err)
	}
}

func TestRunExclusiveReturnsFnError(t *testing.T) {
	a, b := sharedPair(t)
	key := uniqueName("fnerr")
	boom := errors.New("boom")
	ran, err := bextlock.RunExclusive(context.Background(), a, key, time.Second, func(context.Context) error { return boom })
	if !ran || err != boom {
		t.Errorf("want (true, boom), got (%v, %v)", ran, err)
	}
	h := mustLock(t, b, key, time.Second)
	_ = b.Release(h)
}

// TestRunExclusiveRenewsPastTTL holds a 900ms lock for 2s: the background
// renewals must keep everyone else out, and must not cancel fn.
func TestRunExclusiveRenewsPastTTL(t *testing.T) {
	a, b := sharedPair(t)
	key := uniqueName("renew")
	ran, err := bextlock.RunExclusive(context.Background(), a, key, 900*time.Millisecond, func(ctx context.Context) error {
		end := time.Now().Add(2 * time.Second)
		for time.Now().Before(end) {
			if ctx.Err() != nil {
				t.Fatal("fn's context was cancelled while the lock was kept")
			}
			mustContend(t, b, key)
			time.Sleep(50 * time.Millisecond)
		}
		return nil
	})
	if !ran || err != nil {
		t.Fatalf("ran %v, err %v", ran, err)
	}
	h := mustLock(t, b, key, time.Second)
	_ = b.Release(h)
}

// TestRunExclusiveCancelsWhenLockLost takes the lock away from under fn (it
// is released through another Locker and taken by another holder). The next
// renew fails, which must cancel fn's context, and RunExclusive must report
// the loss without disturbing the new holder.
func TestRunExclusiveCancelsWhenLockLost(t *testing.T) {
	a, b := sharedPair(t)
	key := uniqueName("lost")
	var thief *bextlock.Handle
	ran, err := bextlock.RunExclusive(context.Background(), a, key, 300*time.Millisecond, func(ctx context.Context) error {
		h, _ := bextlock.HandleFromContext(ctx)
		if err := b.Release(h); err != nil {
			t.Errorf("release through the other locker: %v", err)
		}
		thief = mustLock(t, b, key, time.Minute)
		waitDone(t, ctx, "another holder took the lock")
		return ctx.Err()
	})
	if !ran {
		t.Fatal("fn did not run")
	}
	var lost *bextlock.LockLostError
	if !errors.As(err, &lost) || !errors.Is(err, bextlock.ErrLockLost) {
		t.Fatalf("want a *LockLostError, got %T %v", err, err)
	}
	if !errors.Is(err, bextlock.ErrBackend) || lost.Key != key || !errors.Is(lost.FnErr, context.Canceled) {
		t.Errorf("the loss should carry the renew's ErrBackend and fn's error: %+v", lost)
	}
	// Neither further renewals nor the final release touched the new holder.
	mustContend(t, a, key)
	if err := b.Renew(thief); err != nil {
		t.Errorf("the new holder lost its lock: %v", err)
	}
	_ = b.Release(thief)
}

// TestRunExclusiveCancelsWhenLockerClosed: a renew that fails because the
// Locker is gone is a loss too.
func TestRunExclusiveCancelsWhenLockerClosed(t *testing.T) {
	a, _ := sharedPair(t)
	ran, err := bextlock.RunExclusive(context.Background(), a, uniqueName("closed"), 300*time.Millisecond, func(ctx context.Context) error {
		if err := a.Close(); err != nil {
			t.Error(err)
		}
		waitDone(t, ctx, "the locker was closed")
		return nil
	})
	if !ran || !errors.Is(err, bextlock.ErrLockLost) || !errors.Is(err, bextlock.ErrClosed) {
		t.Fatalf("want (true, ErrLockLost wrapping ErrClosed), got (%v, %v)", ran, err)
	}
}

func TestRunExclusiveParentCancelKeepsLockUntilFnReturns(t *testing.T) {
	a, b := sharedPair(t)
	key := uniqueName("parent")
	ctx, cancel := context.WithCancel(context.Background())
	ran, err := bextlock.RunExclusive(ctx, a, key, 900*time.Millisecond, func(ctx context.Context) error {
		cancel()
		waitDone(t, ctx, "the parent was cancelled")
		mustContend(t, b, key) // still ours while fn winds down
		return ctx.Err()
	})
	if !ran || !errors.Is(err, context.Canceled) || errors.Is(err, bextlock.ErrLockLost) {
		t.Errorf("want (true, context.Canceled), got (%v, %v)", ran, err)
	}
	h := mustLock(t, b, key, time.Second)
	_ = b.Release(h)
}

func TestRunExclusiveReleasesWhenFnPanics(t *testing.T) {
	a, b := sharedPair(t)
	key := uniqueName("panics")
	func() {
		defer func() {
			if r := recover(); r != "fn panicked" {
				t.Errorf("recovered %v", r)
			}
		}()
		_, _ = bextlock.RunExclusive(context.Background(), a, key, time.Minute, func(context.Context) error {
			panic("fn panicked")
		})
	}()
	h := mustLock(t, b, key, time.Second)
	_ = b.Release(h)
}
