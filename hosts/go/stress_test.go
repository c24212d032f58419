package bextlock_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	bextlock "github.com/bext-locking/bext-locking/hosts/go"
)

// TestContention8x1000 is the Go host's stress test: 8 goroutines x 1,000
// TryLock calls on one key through the memory plugin, never two holders.
func TestContention8x1000(t *testing.T) {
	p := openMemory(t)
	ns := uniqueName("stress")
	contend(t, p, func() any { return map[string]any{"namespace": ns} }, 8, 1000)
}

// TestOneLockerManyGoroutines shares a single instance between goroutines
// working on different keys: each must get its own key every time.
func TestOneLockerManyGoroutines(t *testing.T) {
	l := newLocker(t, openMemory(t), nil)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := uniqueName("own")
			for i := 0; i < 200; i++ {
				h, ok, err := l.TryLock(key, time.Minute)
				if err != nil || !ok {
					t.Errorf("TryLock of an uncontended key: %v %v", ok, err)
					return
				}
				if err := l.Release(h); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// TestCloseDuringCalls closes a Locker while goroutines hammer it: every
// call either works or reports ErrClosed, and nothing races (go test -race)
// or crashes.
func TestCloseDuringCalls(t *testing.T) {
	p := openMemory(t)
	l, err := p.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	started := make(chan struct{}, 8)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := uniqueName("closing")
			for i := 0; ; i++ {
				if i == 10 {
					started <- struct{}{}
				}
				h, ok, err := l.TryLock(key, time.Minute)
				if errors.Is(err, bextlock.ErrClosed) {
					return
				}
				if err != nil || !ok {
					t.Errorf("TryLock: %v %v", ok, err)
					return
				}
				if err := l.Renew(h); err != nil && !errors.Is(err, bextlock.ErrClosed) {
					t.Errorf("Renew: %v", err)
					return
				}
				if err := l.Release(h); err != nil && !errors.Is(err, bextlock.ErrClosed) {
					t.Errorf("Release: %v", err)
					return
				}
			}
		}()
	}
	for i := 0; i < 8; i++ {
		<-started
	}
	if err := l.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	wg.Wait()
}
