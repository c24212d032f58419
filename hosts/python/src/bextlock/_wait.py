"""Waiting for a lock (ABI 1.2 ``lock_wait``), cancellable from any thread.

The plugin's ``lock_wait`` blocks the calling thread inside C, where neither
``KeyboardInterrupt`` nor an asyncio cancellation can reach it. So the call
runs on a helper thread, and the waiting thread waits for it in short,
interruptible steps: on ``KeyboardInterrupt``, a cancel event, or a
``close()`` of the Locker, it calls ``cancel_wait`` (the plugin's wait then
returns ``CANCELLED`` within 100 ms, leaving nothing on the server), waits
for the helper to come back, and gives back a lock the helper took in the
same instant.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import threading
import time
from typing import Any, Optional, Tuple

from . import _abi

log = logging.getLogger("bextlock")

#: Wait ids are unique in the process: one counter for every instance.
_ids = itertools.count(1)
_ids_mu = threading.Lock()

#: How often a waiting thread looks at its cancel event (and lets a signal
#: in) while the plugin waits.
STEP_SECONDS = 0.02


def next_wait_id() -> int:
    """A wait id no other wait of this process has."""
    with _ids_mu:
        return next(_ids)


def wait_ms(deadline: Optional[float]) -> int:
    """How long one ``lock_wait`` call may wait: until ``deadline`` (a
    ``time.monotonic()`` value, rounded up to whole milliseconds), or the
    longest wait the ABI allows."""
    if deadline is None:
        return _abi.MAX_TTL_MS
    left = deadline - time.monotonic()
    if left <= 0:
        return 0
    return min(_abi.MAX_TTL_MS, int(left * 1000) + 1)


def wait_request(request: bytes, wait_for_ms: int, wait_id: int) -> bytes:
    """A ``try_lock`` request (``{"key":…,"ttl_ms":…,"owner":…}``) with
    ``wait_ms`` and ``wait_id`` added."""
    return request[:-1] + f',"wait_ms":{wait_for_ms},"wait_id":{wait_id}}}'.encode("ascii")


def cancel_request(wait_id: int) -> bytes:
    """The ``cancel_wait`` request for ``wait_id``."""
    return f'{{"wait_id":{wait_id}}}'.encode("ascii")


def renew_for_request(handle_json: bytes, ttl_ms: int) -> bytes:
    """The ``renew_for`` request: the handle as the plugin wrote it."""
    return b'{"handle":' + handle_json + f',"ttl_ms":{ttl_ms}}}'.encode("ascii")


class Call:
    """One ``lock_wait`` call on a helper thread and its outcome."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.status = _abi.ERR_INVALID
        self.text: Optional[bytes] = None
        self.sent_ago_us = 0
        self.returned = 0.0
        self.error: Optional[BaseException] = None

    def run(self, fn: Any, pointer: int, request: bytes, free: Any) -> None:
        """The helper thread's body: the call, then the answer copied and
        freed with the plugin's ``free_string``."""
        out = ctypes.c_void_p()
        sent_ago = ctypes.c_uint64(0)
        try:
            self.status = fn(pointer, request, ctypes.byref(out), ctypes.byref(sent_ago))
            self.returned = time.monotonic()
            self.sent_ago_us = sent_ago.value
            address = out.value
            if address:
                out.value = None
                try:
                    self.text = ctypes.string_at(address)
                finally:
                    free(address)
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
            self.error = e
        finally:
            self.done.set()

    def sent(self) -> float:
        """When the request that took the lock was sent, by
        ``time.monotonic()``: the return less what the plugin says."""
        return self.returned - self.sent_ago_us / 1e6


def outcome(call: Call) -> Tuple[int, Optional[bytes]]:
    """The call's status and answer, re-raising what the helper thread hit."""
    if call.error is not None:
        raise call.error
    return call.status, call.text


__all__ = [
    "Call",
    "STEP_SECONDS",
    "cancel_request",
    "log",
    "next_wait_id",
    "outcome",
    "renew_for_request",
    "wait_ms",
    "wait_request",
]
