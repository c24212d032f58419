"""The C ABI as ctypes sees it: the vtable, status codes and limits.

Everything here mirrors ``include/bext_locking.h``. The vtable grows by
appending slots; :class:`VTableV1` is the part every plugin has, and
:data:`OPTIONAL_SLOTS` lists the slots later revisions append, in ABI order.
A host reads an appended slot only when the plugin's ``struct_size`` covers
it (:func:`read_optional_slots`), so a plugin built for an older revision
keeps loading and its missing slots are reported as unsupported.
"""

from __future__ import annotations

import ctypes
from typing import Any, Dict, Optional, Sequence, Tuple

ABI_VERSION = 1
#: The ABI revision this host knows: 1 adds owner, inspect, force_release,
#: stats and ERR_UNSUPPORTED; 2 adds lock_wait, cancel_wait, renew_for and
#: CANCELLED.
ABI_MINOR = 2
ENTRY_SYMBOL = "bext_locking_plugin_entry"

OK = 0
CONTENDED = 1
#: (1.2) lock_wait only: the wait was cancelled. Not an error.
CANCELLED = 2
ERR_BACKEND = -1
ERR_INVALID = -2
ERR_PANIC = -3
ERR_UNSUPPORTED = -4

MAX_KEY_BYTES = 1024
MAX_TTL_MS = 31_536_000_000
MAX_OWNER_BYTES = 256

#: ``char **``: the plugin writes a pointer to a string it allocated.
OutString = ctypes.POINTER(ctypes.c_void_p)
#: ``BextLockingInstance *``, opaque.
Instance = ctypes.c_void_p

DescribeFn = ctypes.CFUNCTYPE(ctypes.c_int32, OutString)
CreateFn = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_char_p, ctypes.POINTER(Instance), OutString)
CallFn = ctypes.CFUNCTYPE(ctypes.c_int32, Instance, ctypes.c_char_p, OutString)
CleanupFn = ctypes.CFUNCTYPE(ctypes.c_int32, Instance, OutString)
DestroyFn = ctypes.CFUNCTYPE(None, Instance)
# The argument is a plain address (not c_char_p), so ctypes hands the
# plugin back exactly the pointer it gave us.
FreeStringFn = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
#: (1.2) ``lock_wait``: a call plus ``uint64_t *out_sent_ago_us``. ctypes
#: releases the GIL for the call, so other threads run while it blocks.
WaitFn = ctypes.CFUNCTYPE(
    ctypes.c_int32, Instance, ctypes.c_char_p, OutString, ctypes.POINTER(ctypes.c_uint64)
)


class VTableV1(ctypes.Structure):
    """``BextLockingVTable`` as ABI 1.0 defines it: the fields every plugin has."""

    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("abi_version", ctypes.c_uint32),
        ("name", ctypes.c_char_p),
        ("version", ctypes.c_char_p),
        ("describe", DescribeFn),
        ("create", CreateFn),
        ("try_lock", CallFn),
        ("renew", CallFn),
        ("release", CallFn),
        ("cleanup", CleanupFn),
        ("destroy", DestroyFn),
        ("free_string", FreeStringFn),
    ]


#: The smallest ``struct_size`` a host accepts.
VTABLE_V1_SIZE = ctypes.sizeof(VTableV1)

#: Every field of the v1 vtable that must not be NULL, in the order the
#: other hosts check them (so the first one named is the same everywhere).
MANDATORY_FIELDS: Tuple[str, ...] = (
    "name",
    "version",
    "describe",
    "create",
    "try_lock",
    "renew",
    "release",
    "cleanup",
    "destroy",
    "free_string",
)

EntryFn = ctypes.CFUNCTYPE(ctypes.POINTER(VTableV1), ctypes.c_uint32)

#: Slots appended after ``free_string`` by later minor revisions, in ABI
#: order: ``(field name, ctypes prototype)``. Adding a revision's slots is
#: one line each here plus the method that calls them; nothing else in the
#: host changes. Revision 1.1 appends inspect, force_release and stats;
#: revision 1.2 lock_wait, cancel_wait and renew_for.
OPTIONAL_SLOTS: Tuple[Tuple[str, Any], ...] = (
    ("inspect", CallFn),
    ("force_release", CallFn),
    ("stats", CleanupFn),
    ("lock_wait", WaitFn),
    ("cancel_wait", CallFn),
    ("renew_for", CallFn),
)

_POINTER_SIZE = ctypes.sizeof(ctypes.c_void_p)

#: The size of the 1.1 vtable: the 1.0 part and the three 1.1 slots.
VTABLE_V1_1_SIZE = VTABLE_V1_SIZE + 3 * _POINTER_SIZE
#: The size of the 1.2 vtable: the 1.1 part and the three 1.2 slots.
VTABLE_V1_2_SIZE = VTABLE_V1_1_SIZE + 3 * _POINTER_SIZE


def abi_minor(struct_size: int) -> int:
    """The ABI revision a vtable of ``struct_size`` bytes covers: 0 for a
    1.0 plugin, 1 once it has room for the 1.1 slots, 2 for the 1.2 ones."""
    if struct_size >= VTABLE_V1_2_SIZE:
        return 2
    return 1 if struct_size >= VTABLE_V1_1_SIZE else 0


def read_optional_slots(
    address: int,
    struct_size: int,
    slots: Sequence[Tuple[str, Any]] = OPTIONAL_SLOTS,
) -> Dict[str, Any]:
    """Reads the appended slots of the vtable at ``address``.

    A slot is read only when ``struct_size`` (what the plugin says its
    vtable holds) covers it: memory past that belongs to someone else. A
    slot beyond ``struct_size``, or NULL inside it, maps to ``None``.
    """
    found: Dict[str, Any] = {}
    offset = VTABLE_V1_SIZE
    for name, prototype in slots:
        pointer: Optional[int] = None
        if struct_size >= offset + _POINTER_SIZE:
            pointer = ctypes.c_void_p.from_address(address + offset).value
        found[name] = prototype(pointer) if pointer else None
        offset += _POINTER_SIZE
    return found
