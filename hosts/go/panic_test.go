package bextlock_test

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	bextlock "github.com/bext-locking/bext-locking/hosts/go"
)

// TestPanickingPluginReturnsErrors loads the panicky fixture: its panics
// come back as ErrPanic errors, never as a crash, and the instance keeps
// working afterwards.
func TestPanickingPluginReturnsErrors(t *testing.T) {
	// Each caught panic still prints through Rust's panic hook; keep it short.
	t.Setenv("RUST_BACKTRACE", "0")
	p, err := bextlock.Open(optionalLib(t, "fixture-panicky"))
	if err != nil {
		t.Fatal(err)
	}

	_, err = p.New(map[string]any{"panic_in_create": true})
	var e *bextlock.Error
	if !errors.As(err, &e) || !errors.Is(err, bextlock.ErrPanic) {
		t.Fatalf("create: want an ErrPanic *Error, got %T %v", err, err)
	}
	if e.Status != bextlock.StatusPanic || e.Code != "panic" || e.Op != "create" || !strings.Contains(e.Message, "panic") {
		t.Errorf("create: unexpected error fields %+v", e)
	}
	if errors.Is(err, bextlock.ErrBackend) || errors.Is(err, bextlock.ErrInvalid) {
		t.Errorf("a panic also matches another kind: %v", err)
	}

	l := newLocker(t, p, nil)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 3; i++ {
				h, ok, err := l.TryLock(uniqueName("panic"), time.Second)
				if h != nil || ok || !errors.As(err, new(*bextlock.Error)) || !errors.Is(err, bextlock.ErrPanic) {
					t.Errorf("try_lock that panics: want (nil, false, ErrPanic), got %v, %v, %v", h, ok, err)
					return
				}
			}
		}()
	}
	wg.Wait()

	// The panics left the instance usable.
	key := uniqueName("calm")
	h := mustLock(t, l, key, time.Second)
	mustContend(t, l, key)
	if err := l.Renew(h); err != nil {
		t.Error(err)
	}
	if err := l.Release(h); err != nil {
		t.Error(err)
	}
	if _, err := p.Describe(); err != nil {
		t.Error(err)
	}
}
