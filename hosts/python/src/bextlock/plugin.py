"""Opening a plugin library and creating instances of its backend."""

from __future__ import annotations

import ctypes
import json
import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from . import _abi, _loader
from ._instance import Instance
from ._status import check, invalid, protocol_error, take_string
from .errors import Unsupported

if TYPE_CHECKING:
    from .locker import Locker

#: A config: a mapping (turned into a JSON object), JSON text, or None for ``{}``.
Config = Union[Mapping[str, Any], str, bytes, None]

#: The clock drift allowance when a plugin states none: Redlock's 1 % of
#: the TTL plus 2 ms.
DEFAULT_DRIFT_RATE = 0.01
DEFAULT_DRIFT_FIXED_MS = 2.0


@dataclass(frozen=True)
class ClockDrift:
    """How far the backend's lease clock may run ahead of ours: ``rate`` of
    the TTL plus ``fixed_ms``. The host counts a lease as ending that much
    before its TTL."""

    rate: float = DEFAULT_DRIFT_RATE
    fixed_ms: float = DEFAULT_DRIFT_FIXED_MS

    def allowance_ms(self, ttl_ms: int) -> float:
        """The drift allowance for a lease of ``ttl_ms``."""
        return ttl_ms * self.rate + self.fixed_ms


@dataclass(frozen=True)
class Description:
    """What a plugin's ``describe`` slot reports."""

    name: str
    version: str
    abi_version: int
    description: str
    #: Whether the default configuration hands out fences (each handle
    #: shows whether it carries one).
    fencing: bool
    #: The JSON Schema of the config object ``create`` accepts.
    config_schema: Dict[str, Any]
    #: The backend's own drift allowance, or the default.
    clock_drift: ClockDrift = ClockDrift()
    #: The whole answer, including fields this host does not know.
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    #: The ABI revision the plugin was built for: 1 since revision 1.1, 0
    #: for a 1.0 plugin (which does not say).
    abi_minor: int = 0
    #: What the backend implements in at least one of its modes: "owner"
    #: (try_lock stores it, inspect returns it), "inspect",
    #: "force_release", "stats". Empty for a 1.0 plugin.
    capabilities: Tuple[str, ...] = ()


def open(  # noqa: A001 - the natural name, as in bextlock.open("redis")
    plugin: Union[str, "_loader.PathLike"],
    *,
    plugin_dirs: Sequence["_loader.PathLike"] = (),
    allow_insecure: bool = False,
) -> "Plugin":
    """Opens a plugin: a path to a library (it contains ``/`` or ends in
    ``.so``), or a name such as ``"redis"`` looked up along the plugin
    search path (see :func:`search_path`).

    The file must belong to root or this user and not be writable by group
    or others (nor the folders holding it), unless ``allow_insecure``. The
    vtable is validated as every host does (ABI version, ``struct_size``,
    mandatory slots); a failure raises a :class:`~bextlock.LoadError`
    subclass naming the file and the reason, with the dynamic loader's text
    when it refused the file.
    """
    text = plugin if isinstance(plugin, str) else os.fspath(plugin)
    lib = _loader.find(text, plugin_dirs, allow_insecure)
    return Plugin(lib)


def search_path(plugin_dirs: Sequence["_loader.PathLike"] = ()) -> List[str]:
    """The folders a plugin name is looked for in, first match wins:
    ``plugin_dirs``, each folder of ``BEXT_PLUGIN_DIR``, the folder of
    ``bext-lock`` on ``PATH`` and its ``../lib/bext-locking``, then
    ``<prefix>/lib/bext-locking`` for this Python, ``/usr/local`` and ``/usr``."""
    return [d for d, _ in _loader.search_path(plugin_dirs)]


class Plugin:
    """An opened plugin library with a validated vtable.

    Safe to share between threads; needs no closing (libraries are never
    unloaded). Create instances with :meth:`create`.
    """

    def __init__(self, lib: "_loader.Library") -> None:
        self._lib = lib
        self._vt = lib.vtable
        self._slots = _abi.read_optional_slots(lib.address, self._vt.struct_size)
        self._drift: Optional[ClockDrift] = None
        self._drift_lock = threading.Lock()

    @property
    def name(self) -> str:
        """The plugin's name from its vtable, e.g. ``"redis"``."""
        return self._lib.name

    @property
    def version(self) -> str:
        """The plugin's own version from its vtable."""
        return self._lib.version

    @property
    def path(self) -> str:
        """The file it was opened from."""
        return self._lib.path

    @property
    def struct_size(self) -> int:
        """The size of the plugin's vtable: which ABI revision's slots it has."""
        return int(self._vt.struct_size)

    def __repr__(self) -> str:
        return f"<bextlock.Plugin {self.name} {self.version} from {self.path}>"

    @property
    def abi_minor(self) -> int:
        """The ABI revision the plugin's vtable covers, from its size alone:
        0 for a plugin built for ABI 1.0, which has no ``inspect``,
        ``force_release`` or ``stats``."""
        return _abi.abi_minor(self.struct_size)

    def has_slot(self, slot: str) -> bool:
        """Whether the plugin provides an optional slot appended after ABI
        1.0 (``"inspect"``, ``"force_release"``, ``"stats"``). A slot can be
        present while the backend's mode still raises Unsupported."""
        return self._slots.get(slot) is not None

    def _optional_slot(self, slot: str, op: str) -> Any:
        """The appended slot ``slot``, or :class:`~bextlock.Unsupported` when
        the plugin's vtable does not reach it (built for an older revision)
        or leaves it NULL. The one place an absent slot is reported."""
        fn = self._slots.get(slot)
        if fn is None:
            raise Unsupported(
                f"plugin `{self.name}` (ABI 1.{self.abi_minor}) has no `{slot}` slot "
                f"(its vtable is {self.struct_size} bytes)",
                plugin=self.name,
                op=op,
                status=_abi.ERR_UNSUPPORTED,
                code="unsupported",
            )
        return fn

    def describe(self) -> Description:
        """Calls the plugin's ``describe`` slot."""
        out = ctypes.c_void_p()
        status = self._vt.describe(ctypes.byref(out))
        text = take_string(self._vt, out)
        check(self.name, "describe", status, text)
        if text is None:
            raise protocol_error(self.name, "describe", status, "OK without a description")
        try:
            obj = json.loads(text)
        except ValueError as e:
            raise protocol_error(self.name, "describe", status, f"not valid JSON: {e}") from None
        if not isinstance(obj, dict):
            raise protocol_error(self.name, "describe", status, "not a JSON object")
        schema = obj.get("config_schema")
        caps = obj.get("capabilities")
        minor = obj.get("abi_minor", 0)
        return Description(
            name=str(obj.get("name", "")),
            version=str(obj.get("version", "")),
            abi_version=int(obj.get("abi_version", 0)),
            description=str(obj.get("description", "")),
            fencing=bool(obj.get("fencing", False)),
            config_schema=schema if isinstance(schema, dict) else {},
            clock_drift=_clock_drift(obj.get("clock_drift")),
            raw=obj,
            abi_minor=minor if isinstance(minor, int) and not isinstance(minor, bool) else 0,
            capabilities=tuple(c for c in caps if isinstance(c, str)) if isinstance(caps, list) else (),
        )

    def clock_drift(self) -> ClockDrift:
        """The drift allowance the lease rule uses (from ``describe``, read
        once), or the default 1 % + 2 ms."""
        with self._drift_lock:
            if self._drift is None:
                try:
                    self._drift = self.describe().clock_drift
                except Exception:  # noqa: BLE001 - a broken describe keeps the default
                    self._drift = ClockDrift()
            return self._drift

    def create(self, config: Config = None) -> "Locker":
        """Creates an instance of the backend.

        ``config`` is a mapping (encoded as a JSON object), JSON text, or
        None for ``{}``. Each backend lists its keys in
        ``describe().config_schema``; an unknown key is an
        :class:`~bextlock.InvalidArgument` naming it, an unreachable server a
        :class:`~bextlock.BackendError`. Close the Locker when done (or use
        it as a context manager); it is also destroyed when collected.
        """
        from .locker import Locker

        data = _config_bytes(self.name, config)
        pointer = _abi.Instance()
        err = ctypes.c_void_p()
        status = self._vt.create(data, ctypes.byref(pointer), ctypes.byref(err))
        text = take_string(self._vt, err)
        if status != _abi.OK or not pointer.value:
            if pointer.value:
                # An instance despite the failure: not ours to leak.
                self._vt.destroy(pointer.value)
            check(self.name, "create", status, text)
            raise protocol_error(self.name, "create", status, "OK without an instance")
        return Locker(self, Instance(self._vt, pointer.value, self.name))


def _config_bytes(plugin: str, config: Config) -> bytes:
    if config is None:
        return b"{}"
    if isinstance(config, (str, bytes)):
        data = config.encode("utf-8", "surrogatepass") if isinstance(config, str) else config
    elif isinstance(config, Mapping):
        try:
            data = json.dumps(dict(config), allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as e:
            raise invalid(plugin, "create", f"the config cannot be encoded as JSON: {e}") from None
    else:
        raise invalid(
            plugin,
            "create",
            f"the config must be a mapping or JSON text, not {type(config).__name__}",
        )
    if b"\0" in data:
        raise invalid(plugin, "create", "the config contains a NUL byte")
    return data


def _clock_drift(value: Any) -> ClockDrift:
    if not isinstance(value, dict):
        return ClockDrift()
    rate: Any = value.get("rate")
    fixed: Any = value.get("fixed_ms")
    if _non_negative(rate) and _non_negative(fixed):
        return ClockDrift(float(rate), float(fixed))
    return ClockDrift()


def _non_negative(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
