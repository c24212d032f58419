"""One plugin instance: the pointer, the calls in flight, and its one destroy.

The ABI lets ``try_lock``, ``renew``, ``release`` and ``cleanup`` run in
parallel on an instance, but ``destroy`` must never race another call and
must run exactly once. Every call enters and leaves through :meth:`enter`
and :meth:`leave`; :meth:`close` refuses new calls, waits for those in
flight, then cleans up and destroys. A ``weakref.finalize`` calls the same
:meth:`close` when the owning ``Locker`` is garbage-collected (or at exit).
"""

from __future__ import annotations

import ctypes
import os
import threading
import weakref
from typing import Optional, Tuple

from . import _abi
from .errors import LockerClosed

#: Instances alive in this process, so a forked child can disown them.
_LIVE: "weakref.WeakSet[Instance]" = weakref.WeakSet()

#: How long closing at interpreter exit waits for calls still in flight
#: (a renewal stuck on an unreachable server) before leaving the instance
#: undestroyed: destroying it under a running call would crash.
EXIT_WAIT_SECONDS = 5.0


class Instance:
    """A created instance and the bookkeeping that keeps its calls safe."""

    def __init__(self, vtable: _abi.VTableV1, pointer: int, plugin: str) -> None:
        self.vtable = vtable
        self.plugin = plugin
        self._pointer: Optional[int] = pointer
        self._active = 0
        self._forked = False
        # A plain lock on the hot path; the condition is only waited on by
        # close(), so leave() notifies only while someone closes.
        self._mu = threading.Lock()
        self._cond = threading.Condition(self._mu)
        self._closing = False
        _LIVE.add(self)

    @property
    def closed(self) -> bool:
        """Whether calls are refused (closed, or inherited through fork)."""
        return self._pointer is None or self._forked

    def enter(self, op: str) -> int:
        """Counts a call in and returns the instance pointer."""
        with self._mu:
            if self._forked:
                raise LockerClosed(
                    "this Locker was created before the process forked; the plugin's "
                    "threads and connections stayed in the parent: create a new one here",
                    plugin=self.plugin,
                    op=op,
                )
            if self._pointer is None:
                raise LockerClosed("the locker is closed", plugin=self.plugin, op=op)
            self._active += 1
            return self._pointer

    def leave(self) -> None:
        """Counts a call out."""
        with self._mu:
            self._active -= 1
            if self._closing and self._active == 0:
                self._cond.notify_all()

    def close(self, wait: Optional[float] = None) -> Tuple[int, Optional[bytes]]:
        """Refuses new calls, waits for calls in flight (at most ``wait``
        seconds when given), runs cleanup and destroys the instance.

        Returns cleanup's status and output; ``(OK, None)`` when it was
        closed already or nothing was done.
        """
        with self._cond:
            pointer = self._pointer
            if pointer is None or self._forked:
                self._pointer = None
                return _abi.OK, None
            self._pointer = None
            self._closing = True
            if not self._cond.wait_for(lambda: self._active == 0, timeout=wait):
                return _abi.OK, None  # still busy at exit: leak rather than crash
        from ._status import take_string

        out = ctypes.c_void_p()
        status = self.vtable.cleanup(pointer, ctypes.byref(out))
        text = take_string(self.vtable, out)
        self.vtable.destroy(pointer)
        return status, text

    def close_at_finalize(self) -> None:
        """The garbage-collection / exit path of :meth:`close`."""
        try:
            self.close(wait=EXIT_WAIT_SECONDS)
        except Exception:  # noqa: BLE001 - nothing to report to from a finalizer
            pass

    def _disown(self) -> None:
        # In a forked child: the instance's threads did not come along, so
        # calling into it (destroy included) could hang or crash.
        self._forked = True


def _after_fork_in_child() -> None:
    for inst in list(_LIVE):
        inst._disown()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
