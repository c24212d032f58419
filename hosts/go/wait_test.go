package bextlock_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	bextlock "github.com/bext-locking/bext-locking/hosts/go"
)

// waitPlugins are the plugins Lock is tested against: today's memory
// plugin (its lock_wait slot, or polling where it answers unsupported) and
// the fixtures built before ABI 1.2, on which Lock must fall back to
// polling TryLock.
var waitPlugins = []struct {
	lib     string
	minor   uint32
	polling string // the PollingReason a fixture must give; "" for memory
}{
	{"memory", 2, ""},
	{"fixture-abi-1-1", 1, "it has no lock_wait slot (ABI 1.1)"},
	{"fixture-abi-1-0", 0, "it has no lock_wait slot (ABI 1.0)"},
}

func TestLock(t *testing.T) {
	for _, wp := range waitPlugins {
		wp := wp
		t.Run(wp.lib, func(t *testing.T) {
			path := libPath(wp.lib)
			if _, err := os.Stat(path); err != nil {
				t.Fatalf("%s is missing: run `cargo build -p bext-locking-%s` (make go-test does)", path, wp.lib)
			}
			p, err := bextlock.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			if p.ABIMinor() != wp.minor {
				t.Errorf("ABIMinor %d, want %d", p.ABIMinor(), wp.minor)
			}
			if has := p.HasSlot("lock_wait"); has != (wp.minor >= 2) {
				t.Errorf("HasSlot(lock_wait) = %v", has)
			}
			ns := uniqueName("go-wait")
			pair := func(t *testing.T) (*bextlock.Locker, *bextlock.Locker) {
				return newLocker(t, p, map[string]any{"namespace": ns}), newLocker(t, p, map[string]any{"namespace": ns})
			}
			t.Run("free key", func(t *testing.T) { lockFreeKey(t, pair) })
			t.Run("hand-off", func(t *testing.T) { lockHandOff(t, pair) })
			t.Run("timeout", func(t *testing.T) { lockTimeout(t, pair) })
			t.Run("cancel", func(t *testing.T) { lockCancel(t, pair) })
			t.Run("close", func(t *testing.T) { lockClose(t, pair) })
			t.Run("bad input", func(t *testing.T) { lockBadInput(t, pair) })
			t.Run("renew_for", func(t *testing.T) { renewFor(t, p, pair, wp.minor) })
			t.Run("polling is said", func(t *testing.T) { pollingSaid(t, pair, wp.polling) })
		})
	}
}

type pairFn func(t *testing.T) (*bextlock.Locker, *bextlock.Locker)

func lockFreeKey(t *testing.T, pair pairFn) {
	a, b := pair(t)
	key := uniqueName("go-wait-free")
	before := time.Now()
	h, err := a.Lock(context.Background(), key, 10*time.Second)
	if err != nil || h == nil {
		t.Fatalf("Lock of a free key: %v, %v", h, err)
	}
	if h.Key() != key || h.TTL() != 10*time.Second {
		t.Errorf("handle %v", h)
	}
	// The lease is dated from when the winning request left: within the call.
	if h.Sent().Before(before.Add(-time.Millisecond)) || h.Sent().After(time.Now()) {
		t.Errorf("Sent %v is not within the call (started %v)", h.Sent(), before)
	}
	mustContend(t, b, key)
	if err := a.Release(h); err != nil {
		t.Fatal(err)
	}
}

func lockHandOff(t *testing.T, pair pairFn) {
	a, b := pair(t)
	key := uniqueName("go-wait-handoff")
	held := mustLock(t, a, key, 30*time.Second)
	type result struct {
		h   *bextlock.Handle
		err error
	}
	got := make(chan result, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go func() {
		h, err := b.Lock(ctx, key, 30*time.Second)
		got <- result{h, err}
	}()
	select {
	case r := <-got:
		t.Fatalf("Lock returned while the key was held: %v, %v", r.h, r.err)
	case <-time.After(150 * time.Millisecond):
	}
	released := time.Now()
	if err := a.Release(held); err != nil {
		t.Fatal(err)
	}
	r := <-got
	if r.err != nil || r.h == nil {
		t.Fatalf("the waiter did not get the lock after the release: %v", r.err)
	}
	if r.h.Sent().Before(released.Add(-time.Second)) {
		t.Errorf("the lease is dated %v, before the release at %v: dated from the start of the wait?", r.h.Sent(), released)
	}
	mustContend(t, a, key)
	if err := b.Release(r.h); err != nil {
		t.Fatal(err)
	}
}

func lockTimeout(t *testing.T, pair pairFn) {
	a, b := pair(t)
	key := uniqueName("go-wait-timeout")
	held := mustLock(t, a, key, 30*time.Second)
	defer a.Release(held)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	h, err := b.Lock(ctx, key, 30*time.Second)
	if h != nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock on a held key past the deadline: %v, %v; want context.DeadlineExceeded", h, err)
	}
	// A timed-out wait took nothing.
	mustContend(t, b, key)
	// An already-done context does not even try.
	h, err = b.Lock(ctx, key, 30*time.Second)
	if h != nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock with a done context: %v, %v", h, err)
	}
}

func lockCancel(t *testing.T, pair pairFn) {
	a, b := pair(t)
	key := uniqueName("go-wait-cancel")
	held := mustLock(t, a, key, 30*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	var cancelledAt time.Time
	var mu sync.Mutex
	time.AfterFunc(150*time.Millisecond, func() {
		mu.Lock()
		cancelledAt = time.Now()
		mu.Unlock()
		cancel()
	})
	h, err := b.Lock(ctx, key, 30*time.Second)
	returned := time.Now()
	if h != nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled Lock: %v, %v; want context.Canceled", h, err)
	}
	mu.Lock()
	late := returned.Sub(cancelledAt)
	mu.Unlock()
	if late > time.Second {
		t.Errorf("Lock returned %v after its context was cancelled", late)
	}
	// Nothing left behind: the holder still holds it, and once it
	// releases, the key is free for anyone.
	mustContend(t, b, key)
	if err := a.Release(held); err != nil {
		t.Fatal(err)
	}
	h = mustLock(t, b, key, time.Second)
	_ = b.Release(h)
}

func lockClose(t *testing.T, pair pairFn) {
	a, b := pair(t)
	key := uniqueName("go-wait-close")
	held := mustLock(t, a, key, 30*time.Second)
	defer a.Release(held)
	got := make(chan error, 1)
	go func() {
		_, err := b.Lock(context.Background(), key, 30*time.Second)
		got <- err
	}()
	time.Sleep(150 * time.Millisecond)
	closed := make(chan error, 1)
	go func() { closed <- b.Close() }()
	select {
	case err := <-got:
		if !errors.Is(err, bextlock.ErrClosed) {
			t.Errorf("Lock during Close: %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end a wait in flight")
	}
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := b.Lock(context.Background(), key, time.Second); !errors.Is(err, bextlock.ErrClosed) {
		t.Errorf("Lock after Close: %v, want ErrClosed", err)
	}
}

func lockBadInput(t *testing.T, pair pairFn) {
	a, _ := pair(t)
	ctx := context.Background()
	cases := []struct {
		what, key string
		ttl       time.Duration
		owner     string
	}{
		{"ttl under 1ms", "k", time.Microsecond, ""},
		{"a key not UTF-8", "k\xff", time.Second, ""},
		{"an empty key", "", time.Second, ""},
		{"an owner over 256 bytes", "k", time.Second, strings.Repeat("o", 257)},
	}
	for _, c := range cases {
		h, err := a.LockAs(ctx, c.key, c.ttl, c.owner)
		if h != nil || !errors.Is(err, bextlock.ErrInvalid) {
			t.Errorf("%s: %v, %v; want ErrInvalid", c.what, h, err)
		}
	}
}

func renewFor(t *testing.T, p *bextlock.Plugin, pair pairFn, minor uint32) {
	a, b := pair(t)
	key := uniqueName("go-renew-for")
	h := mustLock(t, a, key, 30*time.Second)
	defer a.Release(h)
	err := a.RenewFor(h, 20*time.Second)
	if minor < 2 {
		want := fmt.Sprintf("plugin `%s` (ABI 1.%d) has no `renew_for` slot", p.Name(), minor)
		var e *bextlock.Error
		if !errors.Is(err, bextlock.ErrUnsupported) || !errors.As(err, &e) || e.Message != want {
			t.Errorf("RenewFor on a 1.%d plugin: %v, want ErrUnsupported %q", minor, err, want)
		}
	} else if err != nil && !errors.Is(err, bextlock.ErrUnsupported) {
		t.Errorf("RenewFor of a held lock: %v", err)
	}
	// Either way the lock is still held.
	mustContend(t, b, key)
	if err := a.RenewFor(h, 0); !errors.Is(err, bextlock.ErrInvalid) {
		t.Errorf("RenewFor 0: %v, want ErrInvalid", err)
	}
	if err := a.RenewFor(nil, time.Second); !errors.Is(err, bextlock.ErrInvalid) {
		t.Errorf("RenewFor(nil): %v, want ErrInvalid", err)
	}
}

func pollingSaid(t *testing.T, pair pairFn, want string) {
	_, b := pair(t)
	var mu sync.Mutex
	var said []string
	b.SetLogf(func(format string, args ...any) {
		mu.Lock()
		said = append(said, fmt.Sprintf(format, args...))
		mu.Unlock()
	})
	for i := 0; i < 2; i++ {
		h, err := b.Lock(context.Background(), uniqueName("go-wait-said"), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = b.Release(h)
	}
	reason := b.PollingReason()
	mu.Lock()
	defer mu.Unlock()
	if want == "" {
		// Memory: through the slot (nothing said), or polling because this
		// backend's lock_wait is unsupported, said once with its reason.
		if reason != "" && !strings.HasPrefix(reason, "its lock_wait is unsupported here: ") {
			t.Errorf("PollingReason %q", reason)
		}
		if (reason == "") != (len(said) == 0) || len(said) > 1 {
			t.Errorf("said %q for reason %q", said, reason)
		}
		return
	}
	if reason != want {
		t.Errorf("PollingReason %q, want %q", reason, want)
	}
	if len(said) != 1 || !strings.Contains(said[0], "waiting by polling try_lock: "+want) {
		t.Errorf("logf was told %q, want one line with %q", said, want)
	}
}
