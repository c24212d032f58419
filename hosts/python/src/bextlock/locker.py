"""A backend instance: try_lock, renew and release, from any thread."""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import random
import socket
import threading
import time
import weakref
from json.encoder import encode_basestring as _json_str
from typing import TYPE_CHECKING, Any, Callable, Optional, Set, Tuple

from . import _abi, _wait
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
from .durations import Duration, to_ms, to_seconds
from .errors import LockError, LockerClosed
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


#: Polling, for a plugin that cannot wait (built before ABI 1.2, or a
#: backend whose lock_wait is unsupported): the first retry after about
#: this long, doubling up to _POLL_MAX, each pause jittered to 50-100 % so
#: that waiters do not move in step (the pauses every host uses).
_POLL_FIRST = 0.010
_POLL_MAX = 0.250

#: What _slot_wait_into returns when the backend's lock_wait cannot wait.
_UNSUPPORTED = object()


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
        # The lock_wait calls in flight, by wait id, for close() to cancel;
        # closing is set under _waits_mu by close().
        self._waits_mu = threading.Lock()
        self._waits: Set[int] = set()
        self._closing = False
        self._polling_reason: Optional[str] = None

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

    # -- revision 1.2: waiting, renew_for ---------------------------------

    def lock_wait(
        self,
        key: str,
        ttl: Duration,
        timeout: Optional[Duration] = None,
        *,
        owner: Optional[str] = None,
        cancel: Optional[threading.Event] = None,
    ) -> Optional[Handle]:
        """Waits for ``key`` and returns the :class:`Handle` once the lock is
        ours; ``None`` when ``timeout`` (default: forever) passes first or
        ``cancel`` is set. Backend errors raise, as for :meth:`try_lock`.

        On a plugin with the ABI 1.2 ``lock_wait`` slot the wait blocks on
        the backend's own notification; ``KeyboardInterrupt``, ``cancel``
        and :meth:`close` end it through the plugin's ``cancel_wait``
        (leaving nothing on the server). On an older plugin, or a backend
        whose ``lock_wait`` is unsupported, it polls ``try_lock`` with
        jittered backoff from 10 ms to 250 ms, and says so once per Locker
        on the ``bextlock`` logger at INFO (see :attr:`polling_reason`).
        """
        ttl_ms = to_ms(ttl, "ttl")
        deadline = None
        if timeout is not None:
            deadline = time.monotonic() + to_seconds(timeout, "timeout")
        sink = _Sink()
        try:
            return self._wait_into(sink, key, ttl_ms, owner, deadline, cancel)
        except BaseException:
            if sink.handle is not None:
                self._release_quietly(sink.handle)
            raise

    async def alock_wait(
        self,
        key: str,
        ttl: Duration,
        timeout: Optional[Duration] = None,
        *,
        owner: Optional[str] = None,
    ) -> Optional[Handle]:
        """:meth:`lock_wait` in a worker thread. Cancelling the awaiting
        task cancels the wait, and a lock taken in the same instant is
        released, so a cancelled waiter holds nothing."""
        cancel = threading.Event()
        task = asyncio.ensure_future(
            asyncio.to_thread(self.lock_wait, key, ttl, timeout, owner=owner, cancel=cancel)
        )
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            cancel.set()
            handle = await task
            if handle is not None:
                await asyncio.to_thread(self._release_quietly, handle)
            raise

    @property
    def polling_reason(self) -> Optional[str]:
        """Why this Locker's waits poll ``try_lock``, or ``None`` when no
        wait has had to (yet): ``"it has no lock_wait slot (ABI 1.1)"``, or
        ``"its lock_wait is unsupported here: ..."`` with the backend's
        reason."""
        return self._polling_reason

    def renew_for(self, handle: Handle, ttl: Duration) -> None:
        """Sets the held lease's remaining time to ``ttl``, once (ABI 1.2
        ``renew_for``, capability ``"renew_ttl"``); a later :meth:`renew`
        restarts it at the handle's TTL. An error means the lock can no
        longer be trusted to be ours, as for :meth:`renew`, except
        :class:`~bextlock.Unsupported`: the plugin has no such slot (built
        before ABI 1.2; nothing is called) or its backend cannot."""
        if not isinstance(handle, Handle):
            raise invalid(self._name, "renew_for", f"expected a Handle, got {type(handle).__name__}")
        ttl_ms = to_ms(ttl, "ttl")
        try:
            fn = self._plugin._optional_slot("renew_for", "renew_for")
        except LockError:
            if self._inst.closed:
                self._inst.enter("renew_for")  # raises LockerClosed
            raise
        status, text = self._call("renew_for", fn, _wait.renew_for_request(handle.raw, ttl_ms))
        check(self._name, "renew_for", status, text)

    def _note_polling(self, why: str) -> None:
        if self._polling_reason is None:
            self._polling_reason = why
            _wait.log.info("plugin `%s`: waiting by polling try_lock: %s", self._name, why)

    def _wait_into(
        self,
        sink: _Sink,
        key: str,
        ttl_ms: int,
        owner: Optional[str],
        deadline: Optional[float],
        cancel: Optional[threading.Event],
    ) -> Optional[Handle]:
        """Waits for ``key``, leaving the handle in ``sink`` the moment there
        is one: through the lock_wait slot, else by polling."""
        if self._plugin.has_slot("lock_wait"):
            got = self._slot_wait_into(sink, key, ttl_ms, owner, deadline, cancel)
            if got is not _UNSUPPORTED:
                return got  # type: ignore[return-value]
        else:
            self._note_polling(
                f"it has no lock_wait slot (ABI 1.{self._plugin.abi_minor})"
            )
        return self._poll_into(sink, key, ttl_ms, owner, deadline, cancel)

    def _slot_wait_into(
        self,
        sink: _Sink,
        key: str,
        ttl_ms: int,
        owner: Optional[str],
        deadline: Optional[float],
        cancel: Optional[threading.Event],
    ) -> object:
        request = self._request(key, ttl_ms, owner)
        fn = self._plugin._optional_slot("lock_wait", "lock_wait")
        while True:
            if cancel is not None and cancel.is_set():
                return None
            wait_id = _wait.next_wait_id()
            with self._waits_mu:
                if self._closing:
                    raise LockerClosed("the locker is closed", plugin=self._name, op="lock_wait")
                self._waits.add(wait_id)
            try:
                pointer = self._inst.enter("lock_wait")
                try:
                    got = self._one_wait(
                        sink, key, fn, pointer, request, deadline, cancel, wait_id
                    )
                finally:
                    self._inst.leave()
            finally:
                with self._waits_mu:
                    self._waits.discard(wait_id)
            if got is not None or (cancel is not None and cancel.is_set()):
                return got
            if deadline is not None and time.monotonic() >= deadline:
                return None
            # The longest wait passed with no deadline, or a cancel that
            # was not ours: wait again, unless the Locker is closing.
            with self._waits_mu:
                if self._closing:
                    raise LockerClosed("the locker is closed", plugin=self._name, op="lock_wait")

    def _one_wait(
        self,
        sink: _Sink,
        key: str,
        fn: Any,
        pointer: int,
        request: bytes,
        deadline: Optional[float],
        cancel: Optional[threading.Event],
        wait_id: int,
    ) -> object:
        """One lock_wait call on a helper thread, waited for in steps that
        let a signal in and watch ``cancel``."""
        call = _wait.Call()
        req = _wait.wait_request(request, _wait.wait_ms(deadline), wait_id)
        thread = threading.Thread(
            target=call.run,
            args=(fn, pointer, req, self._vt.free_string),
            name="bextlock-lock-wait",
            daemon=True,
        )
        thread.start()
        try:
            cancelled = False
            while not call.done.wait(_wait.STEP_SECONDS):
                if not cancelled and cancel is not None and cancel.is_set():
                    self._cancel_wait(wait_id)
                    cancelled = True
        except BaseException:
            # KeyboardInterrupt (or anything else): end the wait, and give
            # back a lock it took in the same instant.
            self._cancel_wait(wait_id)
            _join(call)
            if call.status == _abi.OK and call.text is not None and b'"lock_id"' in call.text:
                self._give_back(pointer, call.text)
            raise
        status, text = _wait.outcome(call)
        if status in (_abi.CONTENDED, _abi.CANCELLED):
            return None
        if status == _abi.ERR_UNSUPPORTED:
            try:
                check(self._name, "lock_wait", status, text)
            except LockError as e:
                self._note_polling(f"its lock_wait is unsupported here: {e.message}")
            return _UNSUPPORTED
        handle = self._lock_result(key, status, text, pointer, "lock_wait")
        if handle is not None:
            sink.sent = call.sent()
            sink.handle = handle
        return handle

    def _cancel_wait(self, wait_id: int) -> None:
        """Calls the plugin's cancel_wait for ``wait_id`` (an id it does
        not know yet is remembered there for a while, so a cancel that
        overtakes its wait still ends it)."""
        if not self._plugin.has_slot("cancel_wait"):
            return
        fn = self._plugin._optional_slot("cancel_wait", "cancel_wait")
        try:
            self._call("cancel_wait", fn, _wait.cancel_request(wait_id))
        except LockerClosed:
            pass

    def _poll_into(
        self,
        sink: _Sink,
        key: str,
        ttl_ms: int,
        owner: Optional[str],
        deadline: Optional[float],
        cancel: Optional[threading.Event],
    ) -> Optional[Handle]:
        """The fallback: try_lock with jittered backoff."""
        attempt = 0
        while True:
            if cancel is not None and cancel.is_set():
                return None
            handle = self._try_lock_into(sink, key, ttl_ms, owner)
            if handle is not None:
                return handle
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return None
            delay = min(_POLL_MAX, _POLL_FIRST * (2 ** min(attempt, 16)))
            delay *= random.uniform(0.5, 1.0)
            if deadline is not None:
                delay = min(delay, deadline - now)
            if cancel is None:
                time.sleep(delay)
            elif cancel.wait(delay):
                return None
            attempt += 1

    def _release_quietly(self, handle: Handle) -> None:
        try:
            self.release(handle)
        except Exception:  # noqa: BLE001 - best effort: the lease ends with its TTL anyway
            pass

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
        """Cancels the waits in flight (their callers get
        :class:`~bextlock.LockerClosed`), waits for calls in flight, runs the
        plugin's cleanup and frees the instance (exactly once). Locks still held are not released; they
        expire with their TTL. Closing again is a no-op. Raises the cleanup
        error, if any; the instance is freed either way."""
        self._finalizer.detach()
        # Waits in flight hold the instance: end them first (their callers
        # get LockerClosed), and let no new one start.
        with self._waits_mu:
            self._closing = True
            waits = list(self._waits)
        for wait_id in waits:
            self._cancel_wait(wait_id)
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
        self, key: str, status: int, text: Optional[bytes], pointer: int, op: str = "try_lock"
    ) -> Optional[Handle]:
        if status == _abi.CONTENDED:
            return None
        check(self._name, op, status, text)
        if text is None:
            raise protocol_error(self._name, op, status, "OK without a handle")
        try:
            handle = Handle._parse(text)
            if handle.key != key:
                raise LockError(f"the handle is for key {handle.key!r}, not {key!r}")
        except LockError as e:
            # We may hold a lock we cannot describe: give it back rather
            # than leave it to expire.
            self._give_back(pointer, text)
            raise protocol_error(self._name, op, status, f"{e.message}: {text!r}") from None
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


def _join(call: _wait.Call) -> None:
    """Waits for a lock_wait call to come back, whatever interrupts: the
    instance must outlive it."""
    while True:
        try:
            call.done.wait()
            return
        except BaseException:  # noqa: BLE001 - a second Ctrl-C: keep waiting
            continue
