"""Turning a slot's status code and error object into a Python exception."""

from __future__ import annotations

import ctypes
import json
from typing import Dict, Optional, Type

from . import _abi
from .errors import (
    BackendError,
    InvalidArgument,
    LockError,
    PluginPanic,
    ProtocolError,
    Unsupported,
)

#: Negative status codes and the exception each means. A code the ABI gains
#: later is one more line here; until then it is a ProtocolError.
STATUS_ERRORS: Dict[int, Type[LockError]] = {
    _abi.ERR_BACKEND: BackendError,
    _abi.ERR_INVALID: InvalidArgument,
    _abi.ERR_PANIC: PluginPanic,
    _abi.ERR_UNSUPPORTED: Unsupported,
}


def take_string(vtable: _abi.VTableV1, out: ctypes.c_void_p) -> Optional[bytes]:
    """Copies a string the plugin returned and gives it back to the plugin's
    own ``free_string`` (never the C library's ``free``: the plugin may use
    another allocator). Clears ``out``, so it is freed exactly once."""
    address = out.value
    if not address:
        return None
    out.value = None
    try:
        return ctypes.string_at(address)
    finally:
        vtable.free_string(address)


def status_error(plugin: str, op: str, status: int, error_json: Optional[bytes]) -> LockError:
    """The exception for a negative status and its error object
    ``{"code": ..., "message": ...}``."""
    code, message = "", "(the plugin sent no error object)"
    if error_json is not None:
        message = error_json.decode("utf-8", "replace")
        try:
            obj = json.loads(error_json)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and isinstance(obj.get("message"), str) and obj["message"]:
            message = obj["message"]
            found = obj.get("code")
            code = found if isinstance(found, str) else ""
    kind = STATUS_ERRORS.get(status)
    if kind is None:
        return ProtocolError(
            f"unknown status {status}: {message}", plugin=plugin, op=op, status=status, code=code
        )
    return kind(message, plugin=plugin, op=op, status=status, code=code)


def check(plugin: str, op: str, status: int, text: Optional[bytes]) -> None:
    """Raises for any status but OK: the plugin's error for a negative one,
    a protocol error for an unknown positive one."""
    if status == _abi.OK:
        return
    if status < 0:
        raise status_error(plugin, op, status, text)
    raise protocol_error(plugin, op, status, f"unexpected status {status}")


def protocol_error(plugin: str, op: str, status: int, message: str) -> ProtocolError:
    """A plugin answer that breaks the ABI."""
    return ProtocolError(message, plugin=plugin, op=op, status=status)


def invalid(plugin: str, op: str, message: str) -> InvalidArgument:
    """Input this host refuses before calling the plugin, with the kind the
    plugin would have given it."""
    return InvalidArgument(
        message, plugin=plugin, op=op, status=_abi.ERR_INVALID, code="invalid_argument"
    )
