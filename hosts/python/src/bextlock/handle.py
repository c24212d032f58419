"""A held lock as the plugin's ``try_lock`` returned it."""

from __future__ import annotations

import json
from typing import Any, Optional, Union

from . import _abi
from .errors import InvalidArgument


class Handle:
    """A held lock: the key, the lock id, the TTL and the fence.

    It keeps the JSON the plugin returned; ``renew`` and ``release`` send
    those exact bytes back, including fields this host does not know. A
    handle can travel to another process with :meth:`to_json` and
    :meth:`from_json`; any instance of the same backend that sees the lock
    can renew or release it.

    ``repr()`` leaves the lock id out: it is the right to release the lock.
    """

    __slots__ = ("_raw", "key", "lock_id", "ttl_ms", "fence")

    key: str
    lock_id: str
    ttl_ms: int
    fence: Optional[int]

    def __init__(self, raw: bytes, key: str, lock_id: str, ttl_ms: int, fence: Optional[int]):
        self._raw = raw
        self.key = key
        self.lock_id = lock_id
        self.ttl_ms = ttl_ms
        self.fence = fence

    @property
    def ttl(self) -> float:
        """The lease length in seconds; every successful renew restarts it."""
        return self.ttl_ms / 1000.0

    @classmethod
    def from_json(cls, text: Union[str, bytes]) -> "Handle":
        """A handle from the JSON a plugin (or :meth:`to_json`) produced.

        Raises :class:`~bextlock.InvalidArgument` when it is not a handle.
        """
        raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        return cls._parse(raw.strip())

    @classmethod
    def _parse(cls, raw: bytes) -> "Handle":
        try:
            # Decoding first spares json its encoding detection.
            obj: Any = json.loads(raw.decode("utf-8"))
        except ValueError as e:
            raise InvalidArgument(f"not a lock handle: {e}") from None
        if not isinstance(obj, dict):
            raise InvalidArgument("not a lock handle: not a JSON object")
        key: Any = obj.get("key")
        lock_id: Any = obj.get("lock_id")
        ttl_ms: Any = obj.get("ttl_ms")
        fence: Any = obj.get("fence")
        if not isinstance(key, str):
            raise InvalidArgument("not a lock handle: no key")
        if not isinstance(lock_id, str) or not lock_id:
            raise InvalidArgument("not a lock handle: no lock_id")
        if not (_is_uint(ttl_ms) and ttl_ms <= _abi.MAX_TTL_MS):
            raise InvalidArgument(f"not a lock handle: ttl_ms {ttl_ms!r} is missing or out of range")
        if fence is not None and not _is_uint(fence):
            raise InvalidArgument(f"not a lock handle: fence {fence!r} is not an unsigned integer")
        return cls(raw, key, lock_id, ttl_ms, fence)

    def to_json(self) -> str:
        """The handle exactly as the plugin returned it."""
        return self._raw.decode("utf-8")

    @property
    def raw(self) -> bytes:
        """The plugin's JSON, as bytes."""
        return self._raw

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Handle) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        fence = "" if self.fence is None else f", fence={self.fence}"
        return f"<Handle key={self.key!r} ttl={self.ttl_ms}ms{fence}>"


def _is_uint(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0
