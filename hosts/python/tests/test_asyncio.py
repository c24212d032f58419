"""The awaitable variants: the blocking calls run in worker threads, and a
cancelled waiter holds nothing."""

from __future__ import annotations

import asyncio

import bextlock
from conftest import Backend, unique


def test_async_calls(backend: Backend) -> None:
    async def main() -> None:
        async with backend.plugin.create(backend.config()) as locker:
            other = backend.plugin.create(backend.config())
            key = unique("async")
            h = await locker.atry_lock(key, "5s")
            assert h is not None
            assert await other.atry_lock(key, 1) is None
            await locker.arenew(h)
            await locker.arelease(h)
            async with locker.lock(key, ttl="5s") as held:
                assert held.locked()
                assert await other.atry_lock(key, 1) is None
            again = other.lock(key, ttl="5s")
            assert await again.aacquire(timeout=5)
            await again.arenew()
            assert await again.await_lost(timeout=0.05) is None
            await again.arelease()
            await other.aclose()
        assert locker.closed

    asyncio.run(main())


def test_cancelled_waiter_holds_nothing(memory_plugin: bextlock.Plugin) -> None:
    async def main() -> None:
        locker = memory_plugin.create({})
        key = unique("cancel")
        held = locker.try_lock(key, 30)
        assert held is not None
        waiter = locker.lock(key, ttl="30s")
        task = asyncio.ensure_future(waiter.aacquire())
        await asyncio.sleep(0.2)
        assert not task.done()
        # Free the key and cancel in the same breath: whatever the waiting
        # thread got, the cancelled waiter must give it back.
        locker.release(held)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        assert not waiter.locked()
        h = locker.try_lock(key, 1)
        assert h is not None, "a cancelled waiter left the lock held"
        locker.release(h)
        # Several other ways to give up waiting: a timeout on the await.
        held = locker.try_lock(key, 30)
        assert held is not None
        try:
            await asyncio.wait_for(waiter.aacquire(), 0.2)
        except asyncio.TimeoutError:
            pass
        locker.release(held)
        await asyncio.sleep(0.3)  # the waiting thread has noticed the cancel by now
        h = locker.try_lock(key, 1)
        assert h is not None
        locker.release(h)
        locker.close()

    asyncio.run(main())
