"""bextlock: distributed locks from the bext-locking plugin libraries.

The same ``.so`` files serve Rust, C, Go and Python: an in-process table
(memory), SQLite, Redis, PostgreSQL and etcd. Pick the backend at deploy
time by its name or file, and lock::

    import bextlock

    plugin = bextlock.open("redis")            # or a path to the .so
    with plugin.create({"url": "redis://127.0.0.1:6379"}) as locker:
        with locker.lock("jobs/nightly", ttl="30s") as held:
            run_job(fence=held.fence, stop=held.lost_event)

``locker.try_lock`` returns ``None`` for contention; every failure raises a
:class:`LockError` subclass. Only the standard library is used (ctypes).
"""

from __future__ import annotations

from ._abi import ABI_MINOR, ABI_VERSION, MAX_KEY_BYTES, MAX_OWNER_BYTES, MAX_TTL_MS
from ._lease import LostCallback
from .admin import ForceReleased, Latencies, LockInfo, Stats
from .durations import Duration, to_ms, to_seconds
from .errors import (
    AbiMismatch,
    BackendError,
    BadVTable,
    DlopenError,
    InsecurePlugin,
    InvalidArgument,
    LoadError,
    LockError,
    LockerClosed,
    LockLost,
    LockTimeout,
    NotAPlugin,
    PluginNotFound,
    PluginPanic,
    ProtocolError,
    Unsupported,
)
from .handle import Handle
from .lock import Lock
from .locker import Locker, default_owner
from .plugin import ClockDrift, Config, Description, Plugin, open, search_path

__version__ = "0.1.0"

__all__ = [
    "ABI_MINOR",
    "ABI_VERSION",
    "MAX_KEY_BYTES",
    "MAX_OWNER_BYTES",
    "MAX_TTL_MS",
    "AbiMismatch",
    "BackendError",
    "BadVTable",
    "ClockDrift",
    "Config",
    "Description",
    "DlopenError",
    "Duration",
    "ForceReleased",
    "Handle",
    "InsecurePlugin",
    "InvalidArgument",
    "Latencies",
    "LoadError",
    "Lock",
    "LockError",
    "LockInfo",
    "LockLost",
    "LockTimeout",
    "Locker",
    "LockerClosed",
    "LostCallback",
    "NotAPlugin",
    "Plugin",
    "PluginNotFound",
    "PluginPanic",
    "ProtocolError",
    "Stats",
    "Unsupported",
    "default_owner",
    "open",
    "search_path",
    "to_ms",
    "to_seconds",
]
