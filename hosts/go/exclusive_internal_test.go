package bextlock

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func openMemoryInternal(t *testing.T) *Locker {
	dir := os.Getenv("BEXT_TARGET_DIR")
	if dir == "" {
		dir = filepath.Join("..", "..", "target", "debug")
	}
	p, err := Open(filepath.Join(dir, "libbext_locking_memory.so"))
	if err != nil {
		t.Fatalf("%v (run `cargo build -p bext-locking-memory`)", err)
	}
	l, err := p.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// stalled runs fn under RunExclusive with every renew blocked (by holding
// the Locker's lock, which each call needs) and returns how long after the
// call's start fn's context was cancelled, with RunExclusive's error.
func stalled(t *testing.T, ttl time.Duration, opts ...ExclusiveOption) (time.Duration, error) {
	l := openMemoryInternal(t)
	start := time.Now()
	var cancelled time.Duration
	ran, err := RunExclusive(context.Background(), l, "stalled", ttl, func(ctx context.Context) error {
		l.mu.Lock() // renewals now block
		defer l.mu.Unlock()
		select {
		case <-ctx.Done():
			cancelled = time.Since(start)
		case <-time.After(15 * time.Second):
			t.Fatal("the context was not cancelled while the renew hung")
		}
		return nil
	}, opts...)
	if !ran {
		t.Fatalf("fn did not run: %v", err)
	}
	return cancelled, err
}

// TestRunExclusiveHungRenewCancelsBeforeTheLeaseEnds: the context must be
// cancelled at the deadline to stop (a third of the TTL before the lease
// end by default), not when the lease has run out, and without waiting for
// the stuck renew. The memory plugin states no clock drift, so the lease
// counts as the whole TTL: 1500 ms, the deadline at 1000 ms.
func TestRunExclusiveHungRenewCancelsBeforeTheLeaseEnds(t *testing.T) {
	ttl := 1500 * time.Millisecond
	at, err := stalled(t, ttl)
	var lost *LockLostError
	if !errors.As(err, &lost) || !strings.Contains(err.Error(), "no renew was confirmed") {
		t.Fatalf("want a loss for want of a renew, got %v", err)
	}
	// Not before the deadline; before the lease end with 500 ms to spare
	// for a loaded machine.
	if at < ttl*2/3 || at >= ttl {
		t.Fatalf("cancelled %v after the start: want within [%v, %v)", at, ttl*2/3, ttl)
	}
	if lost.LeaseEnd.IsZero() || time.Until(lost.LeaseEnd) > ttl {
		t.Errorf("LeaseEnd %v", lost.LeaseEnd)
	}
}

func TestRunExclusiveStopMarginAndDriftAreOptions(t *testing.T) {
	ttl := 1200 * time.Millisecond
	// 1200 ms less 100 ms of drift, less a 300 ms margin: cancelled at 800 ms.
	at, err := stalled(t, ttl, WithStopMargin(300*time.Millisecond), WithClockDrift(ClockDrift{FixedMs: 100}))
	if !errors.Is(err, ErrLockLost) {
		t.Fatalf("want a loss, got %v", err)
	}
	if at < 800*time.Millisecond || at >= 1100*time.Millisecond {
		t.Fatalf("cancelled %v after the start: want within [800ms, 1.1s)", at)
	}
}

func TestRunExclusiveRefusesOptionsThatLeaveNoTimeToRenew(t *testing.T) {
	l := openMemoryInternal(t)
	fn := func(context.Context) error {
		t.Error("fn ran")
		return nil
	}
	for _, opt := range []ExclusiveOption{
		WithStopMargin(2 * time.Second),
		WithClockDrift(ClockDrift{Rate: 1}),
	} {
		ran, err := RunExclusive(context.Background(), l, "k", 3*time.Second, fn, opt)
		if ran || !errors.Is(err, ErrInvalid) {
			t.Errorf("want (false, ErrInvalid), got (%v, %v)", ran, err)
		}
	}
	if h, ok, err := l.TryLock("k", time.Second); !ok || err != nil {
		t.Fatalf("refused options took the lock: %v %v", ok, err)
	} else {
		_ = l.Release(h)
	}
}

func TestDescribeStatesTheClockDrift(t *testing.T) {
	l := openMemoryInternal(t)
	d, err := l.Plugin().Describe()
	if err != nil {
		t.Fatal(err)
	}
	if d.ClockDrift == nil || *d.ClockDrift != (ClockDrift{}) {
		t.Fatalf("memory states no drift, got %+v", d.ClockDrift)
	}
	if got := RedlockDrift.Allowance(30 * time.Second); got != 302*time.Millisecond {
		t.Errorf("Redlock allowance for 30s: %v", got)
	}
	if (Description{}).ClockDriftOrDefault() != RedlockDrift {
		t.Error("no stated drift must mean Redlock's")
	}
}
