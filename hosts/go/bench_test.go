package bextlock_test

import (
	"testing"
	"time"
)

// Benchmarks measure the Go host's overhead over the memory plugin (cgo
// call, JSON in and out, free_string). They are not run by go test without
// -bench:
//
//	cd hosts/go && go test -run '^$' -bench . -benchtime 2s

func BenchmarkTryLockRelease(b *testing.B) {
	l := newLocker(b, openMemory(b), nil)
	key := uniqueName("bench")
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		h, ok, err := l.TryLock(key, time.Minute)
		if err != nil || !ok {
			b.Fatalf("TryLock: %v %v", ok, err)
		}
		if err := l.Release(h); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRenew(b *testing.B) {
	l := newLocker(b, openMemory(b), nil)
	h, ok, err := l.TryLock(uniqueName("bench"), time.Minute)
	if err != nil || !ok {
		b.Fatalf("TryLock: %v %v", ok, err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := l.Renew(h); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTryLockContendedParallel: every goroutine hits one held key.
func BenchmarkTryLockContendedParallel(b *testing.B) {
	l := newLocker(b, openMemory(b), nil)
	key := uniqueName("bench")
	if _, ok, err := l.TryLock(key, time.Hour); err != nil || !ok {
		b.Fatalf("TryLock: %v %v", ok, err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, ok, err := l.TryLock(key, time.Minute); err != nil || ok {
				b.Errorf("want contention, got %v %v", ok, err)
				return
			}
		}
	})
}
