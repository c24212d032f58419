package bextlock_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	bextlock "github.com/bext-locking/bext-locking/hosts/go"
)

// leaseFileLockers opens the lease-file fixture (it has renew_ttl; its
// leases live in one file) and two Lockers on one file.
func leaseFileLockers(t *testing.T) (*bextlock.Locker, *bextlock.Locker) {
	t.Helper()
	p, err := bextlock.Open(optionalLib(t, "fixture-lease-file"))
	if err != nil {
		t.Fatal(err)
	}
	config := map[string]any{"path": filepath.Join(t.TempDir(), "leases.json")}
	return newLocker(t, p, config), newLocker(t, p, config)
}

func TestRunExclusiveMinHoldKeepsTheLockAfterAnEarlyReturn(t *testing.T) {
	a, b := leaseFileLockers(t)
	hold := 1500 * time.Millisecond
	start := time.Now()
	ran, err := bextlock.RunExclusive(context.Background(), a, "cron", 500*time.Millisecond,
		func(context.Context) error { return nil }, bextlock.WithMinHold(hold))
	if !ran || err != nil {
		t.Fatalf("ran=%v err=%v", ran, err)
	}
	if took := time.Since(start); took >= hold {
		t.Fatalf("RunExclusive waited out the hold: %v", took)
	}
	// Past the 500 ms TTL, still held.
	time.Sleep(800 * time.Millisecond)
	if _, ok, err := b.TryLock("cron", time.Second); ok || err != nil {
		t.Fatalf("the key was free inside the hold (ok=%v, err=%v)", ok, err)
	}
	info, err := b.Inspect("cron")
	if err != nil || !info.Held || info.ExpiresIn == nil {
		t.Fatalf("inspect: %v %v", info, err)
	}
	time.Sleep(*info.ExpiresIn + 100*time.Millisecond)
	if _, ok, err := b.TryLock("cron", time.Second); !ok || err != nil {
		t.Fatalf("still held after the hold (ok=%v, err=%v)", ok, err)
	}
}

func TestRunExclusiveMinHoldReleasesAfterALongJob(t *testing.T) {
	a, b := leaseFileLockers(t)
	ran, err := bextlock.RunExclusive(context.Background(), a, "k", time.Second,
		func(context.Context) error { time.Sleep(200 * time.Millisecond); return nil },
		bextlock.WithMinHold(50*time.Millisecond))
	if !ran || err != nil {
		t.Fatalf("ran=%v err=%v", ran, err)
	}
	if _, ok, err := b.TryLock("k", time.Second); !ok || err != nil {
		t.Fatalf("not released (ok=%v, err=%v)", ok, err)
	}
}

func TestRunExclusiveMinHoldIsRefusedWithoutRenewTTL(t *testing.T) {
	p, err := bextlock.Open(optionalLib(t, "fixture-abi-1-0"))
	if err != nil {
		t.Fatal(err)
	}
	l := newLocker(t, p, map[string]any{})
	ran, err := bextlock.RunExclusive(context.Background(), l, "k", time.Second,
		func(context.Context) error { t.Error("fn ran although the hold cannot be kept"); return nil },
		bextlock.WithMinHold(time.Second))
	if ran || !errors.Is(err, bextlock.ErrUnsupported) {
		t.Fatalf("ran=%v err=%v, want ErrUnsupported", ran, err)
	}
	if info := err.Error(); !contains(info, "renew_ttl") {
		t.Fatalf("the refusal does not name the capability: %v", err)
	}
	// Nothing was locked.
	if _, ok, err := l.TryLock("k", time.Second); !ok || err != nil {
		t.Fatalf("refused but locked (ok=%v, err=%v)", ok, err)
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}
