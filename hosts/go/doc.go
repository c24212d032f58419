// Package bextlock loads bext-locking plugins (shared libraries speaking the
// bext-locking C ABI v1) and uses them as distributed locks from Go.
//
// The same plugin files serve Rust, C and Go hosts: an in-process table
// (libbext_locking_memory.so), SQLite, Redis, PostgreSQL, etcd and MySQL/MariaDB
// backends.
// Open a plugin, create a [Locker] from a config, and take locks:
//
//	plugin, err := bextlock.Open("/usr/local/lib/bext-locking/libbext_locking_redis.so")
//	if err != nil { ... }
//	locker, err := plugin.New(map[string]any{"url": "redis://127.0.0.1:6379"})
//	if err != nil { ... }
//	defer locker.Close()
//
//	h, ok, err := locker.TryLock("jobs/nightly", 30*time.Second)
//	switch {
//	case err != nil: // the backend is broken: report it
//	case !ok:        // someone else holds the key: not an error
//	default:         // ours until Release or until the TTL runs out
//		defer locker.Release(h)
//	}
//
// # Contention is not an error
//
// [Locker.TryLock] returns (nil, false, nil) when another holder has the key,
// and an error only when the backend failed or refused the request. Keep the
// two apart: an outage reported as contention goes unnoticed, and contention
// reported as an error wakes someone up for nothing.
//
// # Running work under a lock
//
// [RunExclusive] is the main use case in one call: it runs a function only
// if the lock is free, renews the lock in the background every third of the
// TTL, and releases the lock when the function returns. It cancels the
// function's context when the lock is lost, and in time: at the latest a
// stop margin (a third of the TTL by default, [WithStopMargin]) before the
// lease ends by this process's clock, counted from before each request and
// less the backend's clock-drift allowance. A failed renew is never retried
// (retrying could make two holders), and a process paused past the deadline
// never renews again.
//
// # Errors
//
// Plugin calls fail with an [*Error] carrying the status code and the
// plugin's error object; match it with errors.Is against [ErrBackend],
// [ErrInvalid], [ErrPanic], [ErrUnsupported] or [ErrProtocol]. A plugin that panics reports
// [ErrPanic]; it does not crash the Go process. [Open] fails with an
// [*OpenError] wrapping [ErrDlopen] (with the dynamic loader's message),
// [ErrNotPlugin], [ErrABIMismatch] or [ErrBadVTable].
//
// # Who holds a lock, breaking a stuck one, statistics
//
// Plugins built for ABI revision 1.1 also answer [Locker.Inspect] (who holds
// a key, with its fence, owner and remaining lease, never the lock id),
// [Locker.ForceRelease] and [Locker.ForceReleaseIfFence] (break a stuck
// holder: its renew then fails and the next fence is higher), and
// [Locker.Stats] (counters and latency histograms, rendered for a /metrics
// page by [Stats.WritePrometheus]). A plugin built for ABI 1.0 still loads;
// those calls then return [ErrUnsupported] without calling anything.
// TryLock sends an owner, [DefaultOwner] ("hostname:pid") unless
// [Locker.SetOwner] changed it.
//
// # Handles
//
// A [Handle] exposes the key, lock id, TTL and fencing token, and keeps the
// JSON the plugin returned: Renew and Release send those exact bytes back.
// Handles marshal to and from that JSON with encoding/json.
//
// # Threads and ownership
//
// A Locker is safe for concurrent use; the plugin's calls may run in
// parallel on any OS thread, as the ABI allows. Close waits for calls in
// flight and frees the instance; later calls return [ErrClosed]. Strings the
// plugin returns are copied into Go memory and handed back to the plugin's
// own free_string at once. Plugin libraries are never unloaded.
//
// Each call is a cgo call and holds its OS thread for as long as the backend
// takes (network round trips for Redis, PostgreSQL, etcd).
//
// # Building
//
// The package uses cgo: it needs a C compiler, the generated header
// include/bext_locking.h from the bext-locking repository (found relative to
// this package's source), and links with -ldl. It uses only the standard
// library.
package bextlock
