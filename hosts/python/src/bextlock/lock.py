"""``Lock``: a distributed lock in the shape of ``threading.Lock``, with
blocking acquire, a fence, and auto-renewal with a timely lost-lock signal."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING, Any, List, Optional

from ._lease import Lease, LeasePolicy, LostCallback
from .durations import Duration, to_ms, to_seconds
from .errors import LockError, LockLost, LockTimeout
from .handle import Handle

if TYPE_CHECKING:
    from .locker import Locker

__all__ = ["Lock", "LostCallback"]

class Lock:
    """A lock on one key of one backend, created by :meth:`Locker.lock`.

    Parameters:

    * ``ttl``: the lease (seconds, ``timedelta`` or ``"30s"``).
    * ``owner``: who holds it, shown by backends that store it (default
      ``hostname:pid``).
    * ``auto_renew``: renew in the background every ``renew_every``
      (default a third of the TTL) while held. Off: nothing runs in the
      background; call :meth:`renew` yourself.
    * ``stop_margin``: how long before the lease end the loss is signalled
      at the latest (default a third of the TTL), so the work has that long
      to stop. See the lease rule in the docs.
    * ``on_lost``: called once, with a :class:`~bextlock.LockLost`, when a
      held lock is lost (on the renewal thread: keep it short).
    * ``timeout``: how long ``with`` waits for the lock before raising
      :class:`~bextlock.LockTimeout` (default: forever).

    ``acquire``/``release``/``locked`` behave like ``threading.Lock``'s,
    across processes and machines; the lock is not reentrant. It may be
    acquired again after a release. Safe to share between threads.
    """

    def __init__(
        self,
        locker: "Locker",
        key: str,
        ttl: Duration = "30s",
        owner: Optional[str] = None,
        *,
        auto_renew: bool = True,
        renew_every: Optional[Duration] = None,
        stop_margin: Optional[Duration] = None,
        on_lost: Optional[LostCallback] = None,
        timeout: Optional[Duration] = None,
    ) -> None:
        self._locker = locker
        self.key = key
        self.owner = owner
        self._ttl_ms = to_ms(ttl, "ttl")
        self._policy = LeasePolicy.make(
            self._ttl_ms,
            locker.plugin.clock_drift(),
            None if renew_every is None else to_seconds(renew_every, "renew_every"),
            None if stop_margin is None else to_seconds(stop_margin, "stop_margin"),
            auto_renew,
        )
        self._auto_renew = auto_renew
        self._timeout = None if timeout is None else to_seconds(timeout, "timeout")
        self._callbacks: List[LostCallback] = [on_lost] if on_lost is not None else []
        self._mu = threading.Lock()
        self._lease: Optional[Lease] = None
        # Kept after a release so `lost` still tells what happened.
        self._last: Optional[Lease] = None
        # The event the next acquisition will set, handed out between
        # acquisitions so that it can be taken before `acquire`.
        self._next_event = threading.Event()

    # -- properties ------------------------------------------------------

    @property
    def ttl(self) -> float:
        """The lease length in seconds."""
        return self._ttl_ms / 1000.0

    @property
    def stop_margin(self) -> float:
        """Seconds before the lease end by which a loss is signalled."""
        return self._policy.margin_s

    @property
    def renew_every(self) -> float:
        """Seconds between renewals (with auto-renew)."""
        return self._policy.every_s

    @property
    def handle(self) -> Optional[Handle]:
        """The current acquisition's handle, or None when not held."""
        lease = self._lease
        return None if lease is None else lease.handle

    @property
    def fence(self) -> Optional[int]:
        """The fencing token of the current acquisition (None when not held
        or when the backend does not fence). Pass it to the resource you
        protect so it can refuse a holder whose lease has ended."""
        h = self.handle
        return None if h is None else h.fence

    @property
    def renewals(self) -> int:
        """Renewals confirmed in the current (or last) acquisition."""
        lease = self._lease or self._last
        return 0 if lease is None else lease.renewals

    @property
    def lost(self) -> Optional[LockLost]:
        """Why the current (or last) acquisition was lost, or None."""
        lease = self._lease or self._last
        return None if lease is None else lease.lost()

    @property
    def lost_event(self) -> threading.Event:
        """Set when the current acquisition is lost: at the safe deadline at
        the latest. Between acquisitions it is the next acquisition's event
        (so it may be taken before ``acquire``); each acquisition has its own."""
        lease = self._lease
        return self._next_event if lease is None else lease.event

    def locked(self) -> bool:
        """Whether this Lock holds the key and it is still safe to work:
        acquired, not released, not lost, before the safe deadline."""
        lease = self._lease
        return lease is not None and lease.lost() is None

    def time_left(self) -> float:
        """Seconds until the safe deadline (0 when not held or lost)."""
        lease = self._lease
        if lease is None or lease.lost() is not None:
            return 0.0
        return max(0.0, lease.safe_deadline - time.monotonic())

    def on_lost(self, callback: LostCallback) -> None:
        """Calls ``callback`` once when a held acquisition is lost (at once
        if the current one already is). It also applies to later
        acquisitions of this Lock."""
        self._callbacks.append(callback)
        lease = self._lease
        if lease is not None:
            lease.add_callback(callback)

    def wait_lost(self, timeout: Optional[Duration] = None) -> Optional[LockLost]:
        """Blocks until the current acquisition is lost (returning why) or
        ``timeout`` passes (returning None)."""
        lease = self._lease
        if lease is None:
            return self.lost
        wait = None if timeout is None else to_seconds(timeout, "timeout")
        deadline = None if wait is None else time.monotonic() + wait
        while True:
            # The event is set when the loss is recorded; the timer thread
            # records it (with the reason) at the safe deadline at the latest.
            now = time.monotonic()
            step = max(0.0, lease.safe_deadline - now) + 0.05
            if deadline is not None:
                if now >= deadline:
                    return lease.lost()
                step = min(step, deadline - now)
            if lease.event.wait(step):
                return lease.lost()
            if lease.lost() is not None and not self._auto_renew:
                return lease.lost()

    # -- acquire / release -----------------------------------------------

    def acquire(self, blocking: bool = True, timeout: Optional[Duration] = None) -> bool:
        """Takes the lock; True when held, False when not (contention).

        ``blocking=False`` tries once. Blocking waits until the lock is
        free, at most ``timeout`` (None or -1: forever): on the backend's
        own notification when the plugin has the ABI 1.2 ``lock_wait`` slot,
        else by polling with jittered backoff (see
        :meth:`Locker.lock_wait`). ``KeyboardInterrupt`` (or any exception)
        during the wait cancels it and leaves nothing held. Backend errors
        raise.
        """
        return self._acquire(blocking, timeout, None)

    def _acquire(
        self,
        blocking: bool,
        timeout: Optional[Duration],
        cancel: Optional[threading.Event],
    ) -> bool:
        wait: Optional[float] = None
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout == -1):
            if not blocking:
                raise ValueError("can't specify a timeout for a non-blocking call")
            wait = to_seconds(timeout, "timeout")
        deadline = None if wait is None else time.monotonic() + wait
        from .locker import _Sink

        sink = _Sink()
        adopted = False
        try:
            if blocking:
                handle = self._locker._wait_into(
                    sink, self.key, self._ttl_ms, self.owner, deadline, cancel
                )
            else:
                handle = self._locker._try_lock_into(sink, self.key, self._ttl_ms, self.owner)
            if handle is None:
                return False
            self._adopt(handle, sink.sent)
            adopted = True
            return True
        except BaseException:
            if sink.handle is not None and not adopted:
                _release_quietly(self._locker, sink.handle)
            raise

    def _adopt(self, handle: Handle, sent: float) -> None:
        event, self._next_event = self._next_event, threading.Event()
        lease = Lease(
            self._locker, handle, sent, self._policy, self._callbacks, self._auto_renew, event
        )
        with self._mu:
            old, self._lease = self._lease, lease
        if old is not None:
            # The backend handed us the key again, so the previous
            # acquisition of this Lock object is over.
            old.stop()
            self._last = old

    def release(self) -> None:
        """Stops renewing and releases the lock.

        Raises :class:`~bextlock.LockLost` when the acquisition had been lost
        (the release is still sent: it touches nothing if someone else holds
        the key now, and frees it sooner if nobody does), ``RuntimeError``
        when the lock is not held, and the backend's error when the release
        fails (the lease then ends with its TTL).
        """
        with self._mu:
            lease, self._lease = self._lease, None
        if lease is None:
            raise RuntimeError(f"release of an unheld lock on {self.key!r}")
        lost = lease.lost()
        lease.stop()
        self._last = lease
        if lost is not None:
            _release_quietly(self._locker, lease.handle)
            raise lost
        self._locker.release(lease.handle)

    def renew(self) -> None:
        """Renews the lease now (needed with ``auto_renew=False``). A
        failure marks the lock lost and raises; it is never retried."""
        lease = self._lease
        if lease is None:
            raise RuntimeError(f"renew of an unheld lock on {self.key!r}")
        lost = lease.lost()
        if lost is not None:
            raise lost
        sent = time.monotonic()
        try:
            self._locker.renew(lease.handle)
        except LockError as e:
            lease.lose(f"renew failed: {e}")
            raise
        lease.confirmed(sent)

    def __enter__(self) -> "Lock":
        if not self.acquire(True, self._timeout):
            raise self._timed_out()
        return self

    def _timed_out(self) -> LockTimeout:
        return LockTimeout(
            f"timed out after {self._timeout} s waiting for the lock on {self.key!r}",
            plugin=self._locker.plugin.name,
            op="acquire",
        )

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self.release()
        except LockLost:
            if exc_type is None:
                raise  # the block ran (partly) without the lock: say so
        except LockError:
            if exc_type is None:
                raise

    def __repr__(self) -> str:
        state = "locked" if self.locked() else ("lost" if self._lease else "unlocked")
        return f"<bextlock.Lock {self.key!r} {state} ttl={self._ttl_ms}ms>"

    # -- asyncio ---------------------------------------------------------

    async def aacquire(self, blocking: bool = True, timeout: Optional[Duration] = None) -> bool:
        """:meth:`acquire` in a worker thread (``asyncio.to_thread``).

        Cancelling the awaiting task stops the wait, and a lock the thread
        took meanwhile is released, so a cancelled waiter holds nothing.
        """
        cancel = threading.Event()
        task = asyncio.ensure_future(asyncio.to_thread(self._acquire, blocking, timeout, cancel))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            cancel.set()
            if await task:
                await asyncio.to_thread(_release_lock_quietly, self)
            raise

    async def arelease(self) -> None:
        """:meth:`release` in a worker thread."""
        await asyncio.to_thread(self.release)

    async def arenew(self) -> None:
        """:meth:`renew` in a worker thread."""
        await asyncio.to_thread(self.renew)

    async def await_lost(self, timeout: Optional[Duration] = None) -> Optional[LockLost]:
        """:meth:`wait_lost` in a worker thread."""
        return await asyncio.to_thread(self.wait_lost, timeout)

    async def __aenter__(self) -> "Lock":
        if not await self.aacquire(True, self._timeout):
            raise self._timed_out()
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        await asyncio.to_thread(self.__exit__, exc_type, exc, tb)


def _release_quietly(locker: "Locker", handle: Handle) -> None:
    try:
        locker.release(handle)
    except Exception:  # noqa: BLE001 - best effort: the lease ends with its TTL anyway
        pass


def _release_lock_quietly(lock: Lock) -> None:
    try:
        lock.release()
    except Exception:  # noqa: BLE001
        pass
