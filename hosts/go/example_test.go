package bextlock_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	bextlock "github.com/bext-locking/bext-locking/hosts/go"
)

// Open a plugin library and ask what it is. memoryPath points at
// target/debug/libbext_locking_memory.so in this repository; in production
// it is wherever the plugin files are installed.
func ExampleOpen() {
	plugin, err := bextlock.Open(memoryPath)
	if err != nil {
		log.Fatal(err)
	}
	d, err := plugin.Describe()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(d.Name, "ABI", d.ABIVersion, "fencing:", d.Fencing)
	// Output: memory ABI 1 fencing: true
}

// A file that is not a plugin gives an error saying why.
func ExampleOpen_errors() {
	_, err := bextlock.Open("/nonexistent/libbext_locking_nothing.so")
	fmt.Println(errors.Is(err, bextlock.ErrDlopen))
	// Output: true
}

// TryLock tells contention (nil, false, nil) apart from a broken backend
// (an error).
func ExampleLocker_TryLock() {
	plugin, err := bextlock.Open(memoryPath)
	if err != nil {
		log.Fatal(err)
	}
	locker, err := plugin.New(nil) // nil config means {}
	if err != nil {
		log.Fatal(err)
	}
	defer locker.Close()

	for i := 0; i < 2; i++ {
		h, ok, err := locker.TryLock("jobs/nightly", 30*time.Second)
		switch {
		case err != nil:
			log.Fatal(err) // the backend is broken: not the same as busy
		case !ok:
			fmt.Println("busy: someone else holds jobs/nightly")
		default:
			fmt.Println("acquired", h.Key(), "for", h.TTL())
			// Keep the lock: the second TryLock finds it held (locks are
			// not reentrant). Release it when done:
			defer locker.Release(h)
		}
	}
	// Output:
	// acquired jobs/nightly for 30s
	// busy: someone else holds jobs/nightly
}

// RunExclusive runs the work only if the lock is free, keeps it renewed, and
// cancels the work's context if the lock is lost.
func ExampleRunExclusive() {
	plugin, err := bextlock.Open(memoryPath)
	if err != nil {
		log.Fatal(err)
	}
	locker, err := plugin.New(map[string]any{"namespace": "example"})
	if err != nil {
		log.Fatal(err)
	}
	defer locker.Close()

	ran, err := bextlock.RunExclusive(context.Background(), locker, "reports/daily", 30*time.Second,
		func(ctx context.Context) error {
			h, _ := bextlock.HandleFromContext(ctx)
			if _, ok := h.Fence(); ok {
				// Pass the fence to the store you write to, so it can refuse
				// a holder whose lease has ended.
				fmt.Println("writing with a fencing token")
			}
			select {
			case <-ctx.Done():
				return ctx.Err() // the lock was lost: stop writing
			case <-time.After(10 * time.Millisecond): // the work
			}
			return nil
		})
	switch {
	case errors.Is(err, bextlock.ErrLockLost):
		fmt.Println("lost the lock mid-way:", err)
	case err != nil:
		fmt.Println("failed:", err)
	case !ran:
		fmt.Println("another instance is doing it")
	default:
		fmt.Println("done")
	}
	// Output:
	// writing with a fencing token
	// done
}

// Errors from a plugin carry its status and error object.
func ExampleError() {
	plugin, err := bextlock.Open(memoryPath)
	if err != nil {
		log.Fatal(err)
	}
	_, err = plugin.New(map[string]any{"nmespace": "typo"})
	var e *bextlock.Error
	if errors.As(err, &e) {
		fmt.Println(e.Status, e.Code, errors.Is(err, bextlock.ErrInvalid))
	}
	// Output: invalid_argument invalid_argument true
}

// Inspect shows who holds a key; ForceReleaseIfFence breaks exactly the
// lock that was inspected, so a newer holder is never broken by mistake.
func ExampleLocker_Inspect() {
	plugin, err := bextlock.Open(memoryPath)
	if err != nil {
		log.Fatal(err)
	}
	ns := map[string]any{"namespace": uniqueName("example-inspect")}
	stuck, err := plugin.New(ns) // the holder that stopped making progress
	if err != nil {
		log.Fatal(err)
	}
	defer stuck.Close()
	operator, err := plugin.New(ns)
	if err != nil {
		log.Fatal(err)
	}
	defer operator.Close()

	_ = stuck.SetOwner("build-7:4242")
	h, _, err := stuck.TryLock("jobs/nightly", time.Minute)
	if err != nil {
		log.Fatal(err)
	}
	info, err := operator.Inspect("jobs/nightly")
	if err != nil {
		log.Fatal(err) // errors.Is(err, bextlock.ErrUnsupported) for a 1.0 plugin
	}
	fmt.Println("held:", info.Held, "owner:", *info.Owner, "fence:", *info.Fence)
	r, err := operator.ForceReleaseIfFence("jobs/nightly", *info.Fence)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("released:", r.Released)
	fmt.Println("the stuck holder's renew fails:", errors.Is(stuck.Renew(h), bextlock.ErrBackend))
	// Output:
	// held: true owner: build-7:4242 fence: 1
	// released: true
	// the stuck holder's renew fails: true
}
