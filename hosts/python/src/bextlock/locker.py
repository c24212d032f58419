"""A backend instance: try_lock, renew and release, from any thread."""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import socket
import time
import weakref
from json.encoder import encode_basestring as _json_str
from typing import TYPE_CHECKING, Any, Callable, Optional, Tuple

from . import _abi
from ._instance import Instance
from .admin import (
    ForceReleased,
    LockInfo,
    Stats,
    parse_force_released,
    parse_lock_info,
    parse_stats,
)
from ._status import check, invalid, protocol_error, take_string
from .durations import Duration, to_ms
from .errors import LockError
from .handle import Handle

if TYPE_CHECKING:
    from .lock import Lock, LostCallback
    from .plugin import Plugin

#: The longest ``owner`` the ABI accepts, in UTF-8 bytes.
MAX_OWNER_BYTES = _abi.MAX_OWNER_BYTES

_hostname = socket.gethostname()
_owner = (0, "")


def default_owner() -> str:
    """``hostname:pid``: who holds a lock when no owner is given (backends
    that keep an owner show it to operators; others ignore it)."""
    global _owner
    pid = os.getpid()
    if _owner[0] != pid:  # first use, or a forked child
        _owner = (pid, f"{_hostname}:{pid}")
    return _owner[1]


class _Sink:
    """Where a try_lock leaves its handle the moment it has one, so a caller
    interrupted (``KeyboardInterrupt``) before it could store it can still
    give the lock back."""

    __slots__ = ("handle", "sent")

    def __init__(self) -> None:
        self.handle: Optional[Handle] = None
        self.sent = 0.0


class Locker:
    """An instance of a backend, created by :meth:`Plugin.create`.

    Safe to use from many threads at once: the plugin's calls run in
    parallel and release the GIL while they wait on the backend. ``close()``
    waits for calls in flight; later calls raise
    :class:`~bextlock.LockerClosed`. Locks are not reentrant: ``try_lock`` on
    a key this Locker already holds is contention.
    """

    def __init__(self, plugin: "Plugin", instance: Instance) -> None:
        self._plugin = plugin
        self._inst = instance
        self._vt = instance.vtable
        self._name = plugin.name
        self._finalizer = weakref.finalize(self, instance.close_at_finalize)

    @property
    def plugin(self) -> "Plugin":
        """The plugin this instance belongs to."""
        return self._plugin

    @property
    def closed(self) -> bool:
        """Whether ``close()`` has run (or the process forked since creation)."""
        return self._inst.closed

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<bextlock.Locker {self._name} ({state})>"

    # -- the three calls -------------------------------------------------

    def try_lock(self, key: str, ttl: Duration, *, owner: Optional[str] = None) -> Optional[Handle]:
        """Tries once to take ``key`` for ``ttl``, without waiting.

        Returns the :class:`Handle` when the lock was acquired and ``None``
        when someone else holds it: contention is not an error. Raises
        :class:`~bextlock.BackendError` when the backend is broken,
        :class:`~bextlock.InvalidArgument` for a bad key (1 to 1024 bytes of
        UTF-8) or TTL (1 ms to 365 days), :class:`~bextlock.PluginPanic` for
        a caught panic. ``owner`` (default ``hostname:pid``, at most 256
        bytes) describes the holder to backends that store it.
        """
        return self._try_lock_into(_Sink(), key, to_ms(ttl, "ttl"), owner)

    def renew(self, handle: Handle) -> None:
        """Restarts the handle's TTL. An error means the lock can no longer
        be trusted to be ours (expired, taken over, or the backend is
        unreachable): stop the protected work; never retry a failed renew
        into a second holder."""
        self._handle_call("renew", self._vt.renew, handle)

    def release(self, handle: Handle) -> None:
        """Gives the lock back. Releasing a lock that is no longer ours
        (expired, taken over) succeeds and touches nothing."""
        self._handle_call("release", self._vt.release, handle)

    def lock(
        self,
        key: str,
        ttl: Duration = "30s",
        owner: Optional[str] = None,
        *,
        auto_renew: bool = True,
        renew_every: Optional[Duration] = None,
        stop_margin: Optional[Duration] = None,
        on_lost: Optional["LostCallback"] = None,
        timeout: Optional[Duration] = None,
    ) -> "Lock":
        """A :class:`~bextlock.Lock` on ``key``, in the shape of
        ``threading.Lock``; nothing is acquired until ``acquire()`` or
        ``with``. See :class:`~bextlock.Lock` for the parameters."""
        from .lock import Lock

        return Lock(
            self,
            key,
            ttl,
            owner,
            auto_renew=auto_renew,
            renew_every=renew_every,
            stop_margin=stop_margin,
            on_lost=on_lost,
            timeout=timeout,
        )

    # -- revision 1.1: inspect, force_release, stats ----------------------

    def inspect(self, key: str) -> LockInfo:
        """Who holds ``key``: whether it is held and, when the backend knows,
        the holder's fence and owner, how long the lease still runs and how
        long it has been held (by the backend's clock). A key nobody holds
        (never locked, released, expired) is ``held=False``, not an error.
        Never the lock id.

        Raises :class:`~bextlock.Unsupported` when the plugin has no
        ``inspect`` slot (built for ABI 1.0; nothing is called) or its
        backend or mode cannot inspect, :class:`~bextlock.InvalidArgument`
        for a bad key.
        """
        obj = self._admin_call("inspect", self._key_request("inspect", key))
        try:
            info = parse_lock_info(obj)
        except ValueError as e:
            raise protocol_error(self._name, "inspect", _abi.OK, f"{e}: {obj!r}") from None
        if info.key != key:
            raise protocol_error(self._name, "inspect", _abi.OK, f"the answer is for key {info.key!r}, not {key!r}")
        return info

    def force_release(self, key: str, if_fence: Optional[int] = None) -> ForceReleased:
        """Breaks the lock on ``key`` whoever holds it, for an operator
        freeing a stuck holder; with ``if_fence``, only when the holder's
        fence is exactly that (pass the fence :meth:`inspect` showed, so a
        newer holder is never broken by mistake), else ``released=False``.

        Afterwards the broken holder's renew fails (its auto-renewing
        :class:`~bextlock.Lock` signals the loss), its release is a no-op,
        and the next acquisition gets a higher fence, so a fenced store
        refuses its late writes. It does not stop the holder's process.
        Raises as :meth:`inspect`; ``if_fence`` must be a non-negative int
        (a mode without fences raises Unsupported for it).
        """
        request = self._key_request("force_release", key)
        if if_fence is not None:
            if isinstance(if_fence, bool) or not isinstance(if_fence, int) or not 0 <= if_fence < 2**64:
                raise invalid(self._name, "force_release", "if_fence must be a non-negative integer below 2**64")
            request = request[:-1] + b',"if_fence":' + str(if_fence).encode() + b"}"
        obj = self._admin_call("force_release", request)
        try:
            return parse_force_released(obj)
        except ValueError as e:
            raise protocol_error(self._name, "force_release", _abi.OK, f"{e}: {obj!r}") from None

    def stats(self) -> Stats:
        """This instance's counters and latency histograms since it was
        created (see :class:`~bextlock.Stats`; ``to_prometheus`` renders
        them for a ``/metrics`` page). Raises
        :class:`~bextlock.Unsupported` when the plugin has no ``stats`` slot
        (built for ABI 1.0)."""
        obj = self._admin_call("stats", None)
        try:
            return parse_stats(obj)
        except ValueError as e:
            raise protocol_error(self._name, "stats", _abi.OK, str(e)) from None

    def _key_request(self, op: str, key: str) -> bytes:
        if not isinstance(key, str):
            raise invalid(self._name, op, f"the key must be a str, not {type(key).__name__}")
        try:
            return f'{{"key":{_json_str(key)}}}'.encode("utf-8")
        except UnicodeEncodeError:
            raise invalid(self._name, op, "the key is not valid UTF-8") from None

    def _admin_call(self, op: str, request: Optional[bytes]) -> Any:
        """Calls an optional slot and returns its parsed JSON answer. An
        absent slot is :class:`~bextlock.Unsupported`, found without calling
        anything (a closed Locker is still LockerClosed)."""
        try:
            fn = self._plugin._optional_slot(op, op)
        except LockError:
            if self._inst.closed:
                self._inst.enter(op)  # raises LockerClosed
            raise
        pointer = self._inst.enter(op)
        out = ctypes.c_void_p()
        try:
            if request is None:
                status = fn(pointer, ctypes.byref(out))
            else:
                status = fn(pointer, request, ctypes.byref(out))
            text = take_string(self._vt, out)
        finally:
            take_string(self._vt, out)
            self._inst.leave()
        check(self._name, op, status, text)
        if text is None:
            raise protocol_error(self._name, op, status, "OK without an answer")
        try:
            return json.loads(text)
        except ValueError as e:
            raise protocol_error(self._name, op, status, f"not valid JSON: {e}") from None

    # -- closing ---------------------------------------------------------

    def close(self) -> None:
        """Waits for calls in flight, runs the plugin's cleanup and frees the
        instance (exactly once). Locks still held are not released; they
        expire with their TTL. Closing again is a no-op. Raises the cleanup
        error, if any; the instance is freed either way."""
        self._finalizer.detach()
        status, text = self._inst.close()
        check(self._name, "cleanup", status, text)

    def __enter__(self) -> "Locker":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- asyncio ---------------------------------------------------------

    async def atry_lock(
        self, key: str, ttl: Duration, *, owner: Optional[str] = None
    ) -> Optional[Handle]:
        """:meth:`try_lock` in a worker thread (``asyncio.to_thread``)."""
        return await asyncio.to_thread(self.try_lock, key, ttl, owner=owner)

    async def arenew(self, handle: Handle) -> None:
        """:meth:`renew` in a worker thread."""
        await asyncio.to_thread(self.renew, handle)

    async def arelease(self, handle: Handle) -> None:
        """:meth:`release` in a worker thread."""
        await asyncio.to_thread(self.release, handle)

    async def ainspect(self, key: str) -> LockInfo:
        """:meth:`inspect` in a worker thread."""
        return await asyncio.to_thread(self.inspect, key)

    async def aforce_release(self, key: str, if_fence: Optional[int] = None) -> ForceReleased:
        """:meth:`force_release` in a worker thread."""
        return await asyncio.to_thread(self.force_release, key, if_fence)

    async def astats(self) -> Stats:
        """:meth:`stats` in a worker thread."""
        return await asyncio.to_thread(self.stats)

    async def aclose(self) -> None:
        """:meth:`close` in a worker thread."""
        await asyncio.to_thread(self.close)

    async def __aenter__(self) -> "Locker":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    # -- the machinery ---------------------------------------------------

    def _request(self, key: str, ttl_ms: int, owner: Optional[str]) -> bytes:
        if not isinstance(key, str):
            raise invalid(self._name, "try_lock", f"the key must be a str, not {type(key).__name__}")
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            raise invalid(self._name, "try_lock", "the key is not valid UTF-8") from None
        if ttl_ms < 1:
            raise invalid(self._name, "try_lock", "ttl is shorter than 1 ms")
        if owner is None:
            owner = default_owner()
        elif not isinstance(owner, str):
            raise invalid(self._name, "try_lock", "owner must be a str")
        try:
            owner_bytes = owner.encode("utf-8")
        except UnicodeEncodeError:
            raise invalid(self._name, "try_lock", "owner is not valid UTF-8") from None
        if len(owner_bytes) > MAX_OWNER_BYTES:
            raise invalid(
                self._name,
                "try_lock",
                f"owner is {len(owner_bytes)} bytes, more than {MAX_OWNER_BYTES}",
            )
        # What json.dumps({...}, ensure_ascii=False) writes, without the
        # generic encoder's per-call cost on this hot path.
        return f'{{"key":{_json_str(key)},"ttl_ms":{ttl_ms},"owner":{_json_str(owner)}}}'.encode(
            "utf-8"
        )

    def _try_lock_into(
        self, sink: _Sink, key: str, ttl_ms: int, owner: Optional[str]
    ) -> Optional[Handle]:
        """``try_lock`` that leaves the handle in ``sink`` before returning.

        If the thread is interrupted after the plugin took the lock but
        before the handle reached ``sink``, the lock is released here: the
        plugin has already written its answer to ``out``, so it can be read
        and given back whatever line the interruption hit.
        """
        request = self._request(key, ttl_ms, owner)
        pointer = self._inst.enter("try_lock")
        out = ctypes.c_void_p()
        text: Optional[bytes] = None
        try:
            sent = time.monotonic()
            status = self._vt.try_lock(pointer, request, ctypes.byref(out))
            text = take_string(self._vt, out)
            handle = self._lock_result(key, status, text, pointer)
            if handle is not None:
                sink.sent = sent
                sink.handle = handle
            return handle
        except LockError:
            raise  # the plugin's answer, dealt with by _lock_result
        except BaseException:
            if sink.handle is None:
                leftover = text if text is not None else take_string(self._vt, out)
                if leftover is not None and b'"lock_id"' in leftover:
                    self._give_back(pointer, leftover)
            raise
        finally:
            self._inst.leave()

    def _lock_result(
        self, key: str, status: int, text: Optional[bytes], pointer: int
    ) -> Optional[Handle]:
        if status == _abi.CONTENDED:
            return None
        check(self._name, "try_lock", status, text)
        if text is None:
            raise protocol_error(self._name, "try_lock", status, "OK without a handle")
        try:
            handle = Handle._parse(text)
            if handle.key != key:
                raise LockError(f"the handle is for key {handle.key!r}, not {key!r}")
        except LockError as e:
            # We may hold a lock we cannot describe: give it back rather
            # than leave it to expire.
            self._give_back(pointer, text)
            raise protocol_error(self._name, "try_lock", status, f"{e.message}: {text!r}") from None
        return handle

    def _give_back(self, pointer: int, handle_json: bytes) -> None:
        out = ctypes.c_void_p()
        try:
            self._vt.release(pointer, handle_json, ctypes.byref(out))
        finally:
            take_string(self._vt, out)

    def _handle_call(self, op: str, fn: Callable[..., int], handle: Handle) -> None:
        if not isinstance(handle, Handle):
            raise invalid(self._name, op, f"expected a Handle, got {type(handle).__name__}")
        status, text = self._call(op, fn, handle.raw)
        check(self._name, op, status, text)

    def _call(self, op: str, fn: Callable[..., int], data: bytes) -> Tuple[int, Optional[bytes]]:
        pointer = self._inst.enter(op)
        out = ctypes.c_void_p()
        try:
            status = fn(pointer, data, ctypes.byref(out))
            return status, take_string(self._vt, out)
        finally:
            take_string(self._vt, out)  # only if an interruption left it behind
            self._inst.leave()
