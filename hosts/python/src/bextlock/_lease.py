"""The lease rule and the background renewal of a held lock.

The lease is counted from the instant just before the acquiring (or
renewing) request was sent, less the backend's clock drift allowance:

    lease_end     = sent + ttl - drift
    safe_deadline = lease_end - stop_margin

The holder is told the lock is lost no later than the safe deadline: at the
first renew that fails, when no renewal has been confirmed by the safe
deadline, or when the timer thread wakes so late (the process was paused,
swapped or starved) that the safe deadline has passed. A lost lock is never
renewed again: retrying could make two holders.

Defaults, the same as the Rust guard's: renew every third of the TTL,
drift 1 % of the TTL + 2 ms (or the backend's ``clock_drift``), stop margin a
third of the TTL. With those, a renewal sent at a third of the TTL has until
about two thirds to be confirmed; if it fails or hangs, the loss is
signalled with a third of the TTL (less the drift) still left for the work
to stop before anyone else can hold the lock.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, List, Optional, Tuple

from .errors import InvalidArgument, LockError, LockLost
from .handle import Handle

if TYPE_CHECKING:
    from .locker import Locker
    from .plugin import ClockDrift

_log = logging.getLogger("bextlock")

_NO_RENEWAL = "no renewal was confirmed by the safe deadline (the lease end less the stop margin)"

#: A lost-lock callback: called once, with the reason, on the renewal thread.
LostCallback = Callable[[LockLost], None]


@dataclass(frozen=True)
class LeasePolicy:
    """When to renew and when to give up, for one TTL."""

    ttl_s: float
    every_s: float
    drift_s: float
    margin_s: float

    @property
    def lease_s(self) -> float:
        """How long a lease is trusted from its request: TTL less drift."""
        return self.ttl_s - self.drift_s

    @property
    def pause_threshold_s(self) -> float:
        """A wake-up this much later than asked counts as a pause."""
        return max(0.1, self.every_s / 4)

    @classmethod
    def make(
        cls,
        ttl_ms: int,
        drift: "ClockDrift",
        every_s: Optional[float],
        margin_s: Optional[float],
        auto_renew: bool,
    ) -> "LeasePolicy":
        """The policy for ``ttl_ms``, with defaults filled in and checked:
        with auto-renew, one renewal must have time to be confirmed before
        the safe deadline (``renew_every + stop_margin < ttl - drift``)."""
        ttl = ttl_ms / 1000.0
        drift_s = drift.allowance_ms(ttl_ms) / 1000.0
        every = ttl / 3 if every_s is None else every_s
        margin = ttl / 3 if margin_s is None else margin_s
        lease = ttl - drift_s
        if auto_renew and every <= 0:
            raise InvalidArgument("renew_every must be longer than 0")
        if auto_renew and every + margin >= lease:
            raise InvalidArgument(
                f"renew_every ({every * 1000:.0f} ms) plus stop_margin ({margin * 1000:.0f} ms) "
                f"must be shorter than the TTL less the clock drift allowance "
                f"({ttl_ms} - {drift_s * 1000:.0f} = {lease * 1000:.0f} ms), so that a renewal "
                f"has time to be confirmed before the safe deadline"
            )
        if margin >= lease:
            raise InvalidArgument(
                f"stop_margin ({margin * 1000:.0f} ms) must be shorter than the TTL less the "
                f"clock drift allowance ({lease * 1000:.0f} ms)"
            )
        return cls(ttl, every, drift_s, margin)


class Lease:
    """One acquisition: its deadlines, its loss, and (with auto-renew) the
    two threads that keep it alive.

    One thread keeps time and decides; the other makes the blocking renew
    calls. Splitting them lets the loss be signalled at the safe deadline
    even while a renew call hangs on a frozen server.
    """

    def __init__(
        self,
        locker: "Locker",
        handle: Handle,
        sent: float,
        policy: LeasePolicy,
        callbacks: List[LostCallback],
        auto_renew: bool,
        event: threading.Event,
    ) -> None:
        self.locker = locker
        self.handle = handle
        self.policy = policy
        self.event = event
        self._cond = threading.Condition(threading.Lock())
        self._callbacks = list(callbacks)
        self._lost: Optional[LockLost] = None
        self._renewals = 0
        self._stopping = False
        self._lease_end = sent + policy.lease_s
        self._safe = self._lease_end - policy.margin_s
        self._next = sent + policy.every_s
        self._requested = False
        self._in_flight = False
        self._result: Optional[Tuple[float, Optional[BaseException]]] = None
        self._threads: List[threading.Thread] = []
        if auto_renew:
            for target, name in ((self._timer, "bextlock-lease"), (self._renewer, "bextlock-renew")):
                t = threading.Thread(target=target, name=f"{name} {handle.key}", daemon=True)
                self._threads.append(t)
            for t in self._threads:
                t.start()

    # -- what the Lock asks ----------------------------------------------

    @property
    def renewals(self) -> int:
        """Renewals confirmed so far."""
        with self._cond:
            return self._renewals

    @property
    def safe_deadline(self) -> float:
        """The safe deadline on the ``time.monotonic()`` clock."""
        with self._cond:
            return self._safe

    def lost(self) -> Optional[LockLost]:
        """Why the lock was lost, or None. Past the safe deadline the lock
        counts as lost even before the timer thread says so."""
        with self._cond:
            if self._lost is not None or self._stopping or time.monotonic() < self._safe:
                return self._lost
            if self._threads:
                # The timer thread records the loss with its reason (it
                # alone can tell a pause); until it runs, say so anyway.
                return LockLost(self.handle.key, _NO_RENEWAL, plugin=self.locker.plugin.name)
            callbacks = self._lose_locked(_NO_RENEWAL)
        self._notify(callbacks)
        return self._lost

    def add_callback(self, callback: LostCallback) -> None:
        """Calls ``callback`` once when the lock is lost (at once, on this
        thread, if it already is)."""
        lost = self.lost()
        with self._cond:
            if self._lost is None:
                self._callbacks.append(callback)
                return
            lost = self._lost
        _call(callback, lost)

    def confirmed(self, sent: float) -> None:
        """A renewal sent at ``sent`` succeeded (a manual ``renew()``)."""
        with self._cond:
            if self._lost is None and time.monotonic() < self._safe:
                self._extend(sent)

    def lose(self, reason: str) -> None:
        """Declares the lock lost (once) and tells everyone who asked."""
        with self._cond:
            callbacks = self._lose_locked(reason)
        self._notify(callbacks)

    def stop(self) -> None:
        """Stops renewing and joins the threads (a renew in flight finishes
        first, so no renewal runs after this returns). Callbacks registered
        and not yet called are dropped: a released lock is not lost."""
        with self._cond:
            self._stopping = True
            self._callbacks = []
            self._cond.notify_all()
        current = threading.current_thread()
        for t in self._threads:
            if t is not current:
                t.join()

    # -- internals -------------------------------------------------------

    def _extend(self, sent: float) -> None:
        self._renewals += 1
        self._lease_end = max(self._lease_end, sent + self.policy.lease_s)
        self._safe = self._lease_end - self.policy.margin_s
        self._next = sent + self.policy.every_s

    def _lose_locked(self, reason: str) -> List[LostCallback]:
        if self._lost is not None or self._stopping:
            return []
        self._lost = LockLost(self.handle.key, reason, plugin=self.locker.plugin.name)
        self.event.set()
        self._cond.notify_all()
        callbacks, self._callbacks = self._callbacks, []
        return callbacks

    def _notify(self, callbacks: List[LostCallback]) -> None:
        lost = self._lost
        if lost is not None:
            for cb in callbacks:
                _call(cb, lost)

    def _timer(self) -> None:
        callbacks: List[LostCallback] = []
        with self._cond:
            while not self._stopping and self._lost is None:
                now = time.monotonic()
                if self._result is not None:
                    sent, error = self._result
                    self._result = None
                    if error is not None:
                        callbacks = self._lose_locked(f"renew failed: {error}")
                    elif now >= self._safe:
                        callbacks = self._lose_locked(
                            "a renewal was confirmed only after the safe deadline"
                        )
                    else:
                        self._extend(sent)
                    continue
                if now >= self._safe:
                    callbacks = self._lose_locked(_NO_RENEWAL)
                    continue
                if not self._requested and not self._in_flight and now >= self._next:
                    self._requested = True
                    self._cond.notify_all()
                    continue
                busy = self._requested or self._in_flight
                wake = self._safe if busy else min(self._next, self._safe)
                self._cond.wait(wake - now)
                late = time.monotonic() - wake
                if late > self.policy.pause_threshold_s and time.monotonic() >= self._safe:
                    callbacks = self._lose_locked(
                        f"the process was paused or starved of CPU: the lease timer woke "
                        f"{late * 1000:.0f} ms late, past the safe deadline, so the lease may "
                        f"have passed to another holder"
                    )
        self._notify(callbacks)

    def _renewer(self) -> None:
        while True:
            with self._cond:
                while not (self._requested or self._stopping or self._lost is not None):
                    self._cond.wait()
                if self._stopping or self._lost is not None:
                    return
                self._requested = False
                if time.monotonic() >= self._safe:
                    # Paused between the request and now: never renew into
                    # a lease that may have passed on; the timer says lost.
                    self._cond.notify_all()
                    continue
                self._in_flight = True
            sent = time.monotonic()
            error: Optional[BaseException] = None
            try:
                self.locker.renew(self.handle)
            except LockError as e:
                error = e
            except Exception as e:  # noqa: BLE001 - any failure means lost
                error = e
            with self._cond:
                self._in_flight = False
                self._result = (sent, error)
                self._cond.notify_all()


def _call(callback: LostCallback, lost: LockLost) -> None:
    try:
        callback(lost)
    except Exception:  # noqa: BLE001 - a callback must not stop the others
        _log.exception("bextlock: a lost-lock callback raised")
