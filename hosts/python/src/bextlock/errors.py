"""The exceptions of bextlock. Every one is a :class:`LockError`.

Contention is not among them: ``try_lock`` returns ``None`` when someone
else holds the key, and ``Lock.acquire`` returns ``False``. An exception
always means something is broken, was refused, or was lost.
"""

from __future__ import annotations

from typing import Optional


class LockError(Exception):
    """Base class of every bextlock error.

    Errors from a plugin call carry the plugin's name, the slot (``op``), the
    status code and the plugin's error object (``code``, ``message``).
    """

    def __init__(
        self,
        message: str,
        *,
        plugin: str = "",
        op: str = "",
        status: Optional[int] = None,
        code: str = "",
    ) -> None:
        self.plugin = plugin
        self.op = op
        self.status = status
        self.code = code
        self.message = message
        where = ": ".join(p for p in (plugin, op) if p)
        super().__init__(f"{where}: {message}" if where else message)


class BackendError(LockError):
    """The backend failed (unreachable, timed out, protocol error), or
    ``renew`` found the lock no longer ours. Never treat it as contention."""


class InvalidArgument(LockError, ValueError):
    """The request or config was refused: a bad key or TTL, malformed JSON,
    an unknown config key (named in the message)."""


class PluginPanic(LockError):
    """The plugin panicked; the panic was caught at the C boundary and the
    process carries on."""


class ProtocolError(LockError):
    """The plugin answered outside the ABI: an unknown status code, OK
    without a handle, a handle that is not JSON."""


class Unsupported(LockError):
    """The plugin has no such slot (it was built for an older ABI revision:
    a 1.0 plugin has no ``inspect``, ``force_release`` or ``stats``; nothing
    is called then), or its backend or mode cannot serve the call (status
    ``BEXT_LOCKING_ERR_UNSUPPORTED``). The message says which. Retrying
    cannot help."""


class LockerClosed(LockError):
    """A call on a :class:`~bextlock.Locker` after ``close()`` (or in a
    process forked from the one that created it)."""


class LockLost(LockError):
    """A held lock can no longer be trusted to be ours.

    Given to lost-lock callbacks, kept in ``Lock.lost``, and raised by
    ``Lock.release()`` and at the end of a ``with`` block when the lock was
    lost while held. ``reason`` says what happened: the backend's renew
    error, no renewal confirmed by the safe deadline, or a detected pause.
    """

    def __init__(self, key: str, reason: str, *, plugin: str = "") -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"lock on {key!r} was lost: {reason}", plugin=plugin)


class LockTimeout(LockError):
    """A ``with`` block's wait for the lock ran out (the ``timeout`` given
    to ``locker.lock``). Only the context manager raises it; ``acquire``
    returns ``False`` instead."""


class LoadError(LockError):
    """A library could not be opened as a plugin. ``path`` is the file,
    ``reason`` why (with the dynamic loader's text where there is one)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class DlopenError(LoadError):
    """The dynamic loader refused the file; ``reason`` carries dlerror's text."""


class NotAPlugin(LoadError):
    """The library has no ``bext_locking_plugin_entry`` symbol."""


class AbiMismatch(LoadError):
    """The plugin does not speak this host's ABI version."""


class BadVTable(LoadError):
    """The vtable is smaller than ABI 1.0's, or a mandatory slot or string
    is NULL, empty or not UTF-8."""


class InsecurePlugin(LoadError):
    """The file, or a folder above it, could be written by someone other
    than root or this process's user; loading it would run their code."""


class PluginNotFound(LoadError):
    """No plugin of that name on the search path; ``reason`` lists the
    folders searched."""
