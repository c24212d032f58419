"""Waiting for a lock: ``Locker.lock_wait`` and the blocking ``Lock.acquire``
use the plugin's ABI 1.2 ``lock_wait`` slot when it has one (cancellable by
an event, ``KeyboardInterrupt``, ``close()`` or asyncio task cancellation,
leaving nothing held), and fall back to polling ``try_lock`` on plugins
built before 1.2 (the ``abi-1-1`` and ``abi-1-0`` fixtures), saying so on
the ``bextlock`` logger."""

from __future__ import annotations

import _thread
import asyncio
import logging
import threading
import time
from typing import Any, Iterator, List, Optional, Tuple

import pytest

import bextlock
from conftest import lib_path, unique

#: (library, ABI minor, why a wait polls: None where it may use the slot).
PLUGINS = [
    ("memory", 2, None),
    ("fixture-abi-1-1", 1, "it has no lock_wait slot (ABI 1.1)"),
    ("fixture-abi-1-0", 0, "it has no lock_wait slot (ABI 1.0)"),
]


@pytest.fixture(params=PLUGINS, ids=[p[0] for p in PLUGINS])
def waitable(request: pytest.FixtureRequest) -> Iterator[Tuple[bextlock.Locker, bextlock.Locker, Any]]:
    lib, minor, polling = request.param
    path = lib_path(lib)
    assert path.exists(), f"{path} is missing: cargo build -p bext-locking-{lib} (make python-test does)"
    plugin = bextlock.open(str(path))
    assert plugin.abi_minor == minor
    assert plugin.has_slot("lock_wait") == (minor >= 2)
    ns = unique("py-wait")
    a, b = plugin.create({"namespace": ns}), plugin.create({"namespace": ns})
    yield a, b, (minor, polling)
    a.close()
    b.close()


def _in_thread(fn: Any, *args: Any, **kwargs: Any) -> Tuple[threading.Thread, List[Any]]:
    result: List[Any] = []

    def run() -> None:
        try:
            result.append(fn(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001 - the test looks at it
            result.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, result


def test_a_free_key_is_taken_at_once(waitable: Any) -> None:
    a, b, _ = waitable
    key = unique("py-wait-free")
    h = a.lock_wait(key, "10s", timeout=5)
    assert h is not None and h.key == key
    assert b.try_lock(key, 1) is None
    a.release(h)


def test_a_waiter_gets_the_lock_after_the_holder_releases(waitable: Any) -> None:
    a, b, _ = waitable
    key = unique("py-wait-handoff")
    held = a.try_lock(key, 30)
    assert held is not None
    t, result = _in_thread(b.lock_wait, key, 30, 20)
    time.sleep(0.15)
    assert t.is_alive(), f"the wait ended while the key was held: {result}"
    a.release(held)
    t.join(20)
    assert not t.is_alive()
    (h,) = result
    assert isinstance(h, bextlock.Handle), h
    assert a.try_lock(key, 1) is None  # the waiter holds it now
    b.release(h)


def test_a_wait_times_out_and_takes_nothing(waitable: Any) -> None:
    a, b, _ = waitable
    key = unique("py-wait-timeout")
    held = a.try_lock(key, 30)
    assert held is not None
    started = time.monotonic()
    assert b.lock_wait(key, 30, timeout=0.2) is None
    assert time.monotonic() - started >= 0.15
    assert b.try_lock(key, 1) is None
    a.release(held)


def test_a_cancel_event_ends_the_wait(waitable: Any) -> None:
    a, b, _ = waitable
    key = unique("py-wait-cancel")
    held = a.try_lock(key, 30)
    assert held is not None
    cancel = threading.Event()
    t, result = _in_thread(b.lock_wait, key, 30, cancel=cancel)
    time.sleep(0.15)
    cancel.set()
    set_at = time.monotonic()
    t.join(10)
    assert not t.is_alive() and result == [None], result
    assert time.monotonic() - set_at < 1.0
    # Nothing left behind: once the holder releases, the key is free.
    assert b.try_lock(key, 1) is None
    a.release(held)
    h = b.try_lock(key, 1)
    assert h is not None
    b.release(h)


def test_keyboard_interrupt_cancels_the_wait(waitable: Any) -> None:
    a, b, _ = waitable
    key = unique("py-wait-interrupt")
    held = a.try_lock(key, 30)
    assert held is not None
    timer = threading.Timer(0.15, _thread.interrupt_main)
    timer.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        b.lock_wait(key, 30, timeout=30)
    assert time.monotonic() - started < 5
    a.release(held)
    h = a.try_lock(key, 1)
    assert h is not None, "the interrupted waiter left the key taken"
    a.release(h)


def test_close_ends_a_wait_in_flight(waitable: Any) -> None:
    a, b, _ = waitable
    key = unique("py-wait-close")
    held = a.try_lock(key, 30)
    assert held is not None
    t, result = _in_thread(b.lock_wait, key, 30)
    time.sleep(0.15)
    closer, closed = _in_thread(b.close)
    closer.join(10)
    t.join(10)
    assert not closer.is_alive() and closed == [None], closed
    assert not t.is_alive() and isinstance(result[0], bextlock.LockerClosed), result
    with pytest.raises(bextlock.LockerClosed):
        b.lock_wait(key, 1, timeout=0)
    a.release(held)


def test_the_blocking_acquire_of_a_lock_waits_and_is_handed_the_lock(waitable: Any) -> None:
    a, b, _ = waitable
    key = unique("py-wait-lock")
    held = a.try_lock(key, 30)
    assert held is not None
    lock = b.lock(key, ttl="30s", auto_renew=False)
    assert not lock.acquire(timeout=0.1)
    t, result = _in_thread(lock.acquire, True, 20)
    time.sleep(0.1)
    a.release(held)
    t.join(20)
    assert result == [True] and lock.locked()
    assert a.try_lock(key, 1) is None
    lock.release()


def test_asyncio_cancellation_cancels_the_wait(waitable: Any) -> None:
    a, b, _ = waitable
    key = unique("py-wait-async")
    held = a.try_lock(key, 30)
    assert held is not None

    async def main() -> None:
        for wait in (b.alock_wait(key, 30), b.lock(key, ttl="30s").aacquire()):
            task = asyncio.ensure_future(wait)
            await asyncio.sleep(0.15)
            task.cancel()
            started = time.monotonic()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert time.monotonic() - started < 2

    asyncio.run(main())
    a.release(held)
    h = b.try_lock(key, 1)
    assert h is not None, "a cancelled waiter left the key taken"
    b.release(h)


def test_renew_for(waitable: Any) -> None:
    a, b, (minor, _) = waitable
    key = unique("py-renew-for")
    h = a.try_lock(key, 30)
    assert h is not None
    if minor < 2:
        with pytest.raises(bextlock.Unsupported) as e:
            a.renew_for(h, 5)
        name = a.plugin.name
        assert f"plugin `{name}` (ABI 1.{minor}) has no `renew_for` slot" in str(e.value)
    else:
        try:
            a.renew_for(h, 20)
        except bextlock.Unsupported as e:
            assert "renew_ttl" in str(e) or "remaining time" in str(e), e
    assert b.try_lock(key, 1) is None  # still held either way
    with pytest.raises(bextlock.InvalidArgument):
        a.renew_for("not a handle", 5)  # type: ignore[arg-type]
    a.release(h)


def test_bad_input_is_refused_before_waiting(waitable: Any) -> None:
    a, _, _ = waitable
    with pytest.raises(bextlock.InvalidArgument):
        a.lock_wait("", 1, timeout=1)
    with pytest.raises(bextlock.InvalidArgument):
        a.lock_wait(7, 1, timeout=1)  # type: ignore[arg-type]
    with pytest.raises(bextlock.InvalidArgument):
        a.lock_wait("k", 1, timeout=1, owner="o" * 257)
    with pytest.raises((ValueError, bextlock.InvalidArgument)):
        a.lock_wait("k", 0, timeout=1)


def test_polling_is_said_once(waitable: Any, caplog: pytest.LogCaptureFixture) -> None:
    _, b, (_, polling) = waitable
    caplog.set_level(logging.INFO, logger="bextlock")
    for _ in range(2):
        h = b.lock_wait(unique("py-wait-said"), 1, timeout=5)
        assert h is not None
        b.release(h)
    said = [r.getMessage() for r in caplog.records if "waiting by polling try_lock" in r.getMessage()]
    reason: Optional[str] = b.polling_reason
    if polling is None:
        # Through the slot (nothing said), or polling because the backend's
        # lock_wait is unsupported, said once with its reason.
        assert reason is None or reason.startswith("its lock_wait is unsupported here: "), reason
        assert len(said) == (0 if reason is None else 1), said
    else:
        assert reason == polling
        assert len(said) == 1 and said[0].endswith(polling), said
