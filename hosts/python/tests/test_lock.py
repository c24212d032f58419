"""The Lock object: acquire/release like threading.Lock, the fence,
auto-renewal across several TTLs and the lost-lock signal."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import List

import pytest

import bextlock
from conftest import Backend, unique, wait_for


def test_acquire_release_locked_and_fence(backend: Backend, request: pytest.FixtureRequest) -> None:
    a, b = backend.locker(request), backend.locker(request)
    key = unique("lock")
    lock = a.lock(key, ttl="5s")
    assert not lock.locked() and lock.fence is None and lock.handle is None
    assert lock.acquire(blocking=False)
    assert lock.locked() and lock.handle is not None and lock.handle.key == key
    first = lock.fence
    other = b.lock(key, ttl=5)
    assert other.acquire(blocking=False) is False, "contention is False, not an error"
    assert other.acquire(timeout=0.3) is False
    lock.release()
    assert not lock.locked()
    with pytest.raises(RuntimeError):
        lock.release()
    assert other.acquire(blocking=False)
    if first is not None:
        assert other.fence is not None and other.fence > first
    other.release()
    assert lock.acquire(blocking=False), "a Lock can be acquired again after release"
    lock.release()


def test_blocking_acquire_waits_for_release(backend: Backend, request: pytest.FixtureRequest) -> None:
    a, b = backend.locker(request), backend.locker(request)
    key = unique("wait")
    holder = a.lock(key, ttl="10s")
    assert holder.acquire()
    threading.Timer(0.5, holder.release).start()
    waiter = b.lock(key, ttl="10s")
    start = time.monotonic()
    assert waiter.acquire(timeout=20)
    took = time.monotonic() - start
    assert took >= 0.4
    waiter.release()


def test_acquire_timeout_is_bounded(memory_plugin: bextlock.Plugin) -> None:
    with memory_plugin.create({}) as locker:
        key = unique("timeout")
        held = locker.try_lock(key, 10)
        assert held is not None
        start = time.monotonic()
        assert locker.lock(key).acquire(timeout=timedelta(milliseconds=300)) is False
        took = time.monotonic() - start
        assert 0.29 <= took < 5, took
        with pytest.raises(ValueError):
            locker.lock(key).acquire(blocking=False, timeout=1)
        with pytest.raises(bextlock.LockTimeout):
            with locker.lock(key, timeout="200ms"):
                pytest.fail("entered a held lock")


def test_with_block(backend: Backend, request: pytest.FixtureRequest) -> None:
    a, b = backend.locker(request), backend.locker(request)
    key = unique("with")
    with a.lock(key, ttl="5s") as held:
        assert held.locked()
        assert b.try_lock(key, 1) is None
    assert not held.locked()
    h = b.try_lock(key, 1)
    assert h is not None, "the with block released the lock"
    b.release(h)


def test_auto_renew_keeps_the_lock_across_several_ttls(backend: Backend, request: pytest.FixtureRequest) -> None:
    a, b = backend.locker(request), backend.locker(request)
    key = unique("renew")
    lost: List[bextlock.LockLost] = []
    # Short, with room for a renewal delayed by a loaded machine; etcd
    # never grants a lease under a second.
    ttl = 1.0 if backend.name == "etcd" else 0.75
    with a.lock(key, ttl=ttl, on_lost=lost.append) as held:
        end = time.monotonic() + 3.2 * ttl
        while time.monotonic() < end:
            assert b.try_lock(key, 1) is None, "the lease ran out while held"
            time.sleep(0.1)
        assert held.locked(), held.lost
        assert held.renewals >= 3, held.renewals
        assert not held.lost_event.is_set()
    assert lost == []
    h = b.try_lock(key, 1)
    assert h is not None
    b.release(h)


def test_renew_failure_is_signalled_once(backend: Backend, request: pytest.FixtureRequest) -> None:
    a, b = backend.locker(request), backend.locker(request)
    key = unique("lost")
    calls: List[bextlock.LockLost] = []
    lock = a.lock(key, ttl="1.5s", on_lost=calls.append)
    late: List[bextlock.LockLost] = []
    early = lock.lost_event  # taken before acquiring: the acquisition's event
    assert lock.acquire(blocking=False)
    assert lock.lost_event is early
    handle = lock.handle
    assert handle is not None
    start = time.monotonic()
    b.release(handle)  # someone releases it behind the holder's back
    lost = lock.wait_lost(timeout=10)
    took = time.monotonic() - start
    assert lost is not None and "renew failed" in lost.reason, lost
    assert took < 1.5, "the failed renew (at a third of the TTL) is reported at once"
    assert lock.lost_event.is_set() and not lock.locked()
    assert wait_for(lambda: len(calls) == 1, 2)
    lock.on_lost(late.append)  # registered after the loss: called at once
    assert late == [lost]
    time.sleep(0.2)
    assert len(calls) == 1, "the callback runs once"
    assert isinstance(lost, bextlock.LockError) and lost.key == key
    assert early.is_set()
    with pytest.raises(bextlock.LockLost):
        lock.release()
    assert lock.lost is lost
    assert not lock.lost_event.is_set(), "the next acquisition has a fresh event"


def test_with_block_raises_when_the_lock_was_lost(backend: Backend, request: pytest.FixtureRequest) -> None:
    a, b = backend.locker(request), backend.locker(request)
    key = unique("lost-with")
    with pytest.raises(bextlock.LockLost):
        with a.lock(key, ttl="1.5s") as held:
            assert held.handle is not None
            b.release(held.handle)
            assert held.lost_event.wait(10)
    # An exception from the block is not masked by the loss.
    with pytest.raises(KeyError):
        with a.lock(key, ttl="1.5s") as held:
            assert held.handle is not None
            b.release(held.handle)
            held.lost_event.wait(10)
            raise KeyError("from the block")


def test_callback_errors_do_not_stop_the_others(memory_plugin: bextlock.Plugin) -> None:
    with memory_plugin.create({}) as locker:
        seen: List[str] = []

        def broken(lost: bextlock.LockLost) -> None:
            raise RuntimeError("callback bug")

        lock = locker.lock(unique("cb"), ttl=0.6, on_lost=broken)
        lock.on_lost(lambda lost: seen.append(lost.reason))
        assert lock.acquire()
        assert lock.handle is not None
        locker.release(lock.handle)
        assert wait_for(lambda: seen, 5)
        with pytest.raises(bextlock.LockLost):
            lock.release()


def test_manual_renewal_without_auto_renew(memory_plugin: bextlock.Plugin) -> None:
    with memory_plugin.create({}) as locker:
        lock = locker.lock(unique("manual"), ttl=0.6, auto_renew=False)
        assert lock.acquire()
        assert lock.time_left() <= 0.6 - 0.2 + 0.01
        time.sleep(0.25)
        lock.renew()
        assert lock.renewals == 1 and lock.locked()
        # Past the safe deadline (0.6 - drift - 0.2 s) with no renewal, the
        # lock is no longer safe to work under.
        assert wait_for(lambda: not lock.locked(), 2)
        assert lock.lost is not None and "safe deadline" in lock.lost.reason
        assert lock.lost_event.is_set()
        with pytest.raises(bextlock.LockLost):
            lock.release()


def test_the_lease_rule_is_checked(memory_plugin: bextlock.Plugin) -> None:
    with memory_plugin.create({}) as locker:
        lock = locker.lock("k", ttl="30s")
        assert lock.renew_every == pytest.approx(10) and lock.stop_margin == pytest.approx(10)
        with pytest.raises(bextlock.InvalidArgument, match="stop_margin"):
            locker.lock("k", ttl="3s", stop_margin="2s")
        with pytest.raises(bextlock.InvalidArgument, match="renew_every"):
            locker.lock("k", ttl="3s", renew_every="0s")
        assert locker.lock("k", ttl="3s", stop_margin="2s", renew_every="500ms").stop_margin == 2
        with pytest.raises(bextlock.InvalidArgument, match="ttl"):
            locker.lock("k", ttl="soon")


def test_lock_is_safe_to_share_between_threads(memory_plugin: bextlock.Plugin) -> None:
    """Threads sharing one Lock object take turns, like threading.Lock."""
    with memory_plugin.create({}) as locker:
        lock = locker.lock(unique("shared"), ttl="10s", auto_renew=False)
        inside = 0
        overlaps = 0
        count = 0
        guard = threading.Lock()

        def worker() -> None:
            nonlocal inside, overlaps, count
            for _ in range(20):
                assert lock.acquire(timeout=30)
                with guard:
                    inside += 1
                    overlaps += inside != 1
                    count += 1
                time.sleep(0.001)
                with guard:
                    inside -= 1
                lock.release()

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert overlaps == 0 and count == 80
