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

// TestRunExclusiveLeaseRunsOut stalls every renew (by holding the Locker's
// lock, which each call needs) past the TTL: the watchdog must declare the
// lock lost when the lease ends, without waiting for the stuck renew.
func TestRunExclusiveLeaseRunsOut(t *testing.T) {
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
	defer l.Close()
	ran, err := RunExclusive(context.Background(), l, "stalled", 300*time.Millisecond, func(ctx context.Context) error {
		l.mu.Lock() // renewals now block
		defer l.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(15 * time.Second):
			t.Fatal("the context was not cancelled when the lease ran out")
		}
		return nil
	})
	if !ran || !errors.Is(err, ErrLockLost) || !strings.Contains(err.Error(), "ran out") {
		t.Fatalf("want (true, lease ran out), got (%v, %v)", ran, err)
	}
}
