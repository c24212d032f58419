"""Finding a plugin file, refusing unsafe ones, opening and validating it.

The checks are the other hosts': the entry symbol, the ABI version, the
vtable's ``struct_size``, every mandatory slot non-NULL, name and version
non-empty UTF-8; and the Rust loader's refusal of files that someone other
than root or this user could have written (sshd's ``StrictModes`` stance).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple, Union

from . import _abi
from .errors import (
    AbiMismatch,
    BadVTable,
    DlopenError,
    InsecurePlugin,
    LoadError,
    NotAPlugin,
    PluginNotFound,
)

#: Extra plugin folders, ``:``-separated like ``PATH``.
ENV_DIR = "BEXT_PLUGIN_DIR"

_WRITABLE_BY_OTHERS = 0o022

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class Library:
    """A validated plugin library (never unloaded)."""

    path: str
    vtable: _abi.VTableV1
    address: int
    name: str
    version: str


def file_name(name: str) -> str:
    """The library file a plugin name maps to: ``libbext_locking_<name>.so``."""
    return "libbext_locking_{}.so".format(name.replace("-", "_"))


def is_path(plugin: str) -> bool:
    """Whether ``plugin`` names a file rather than a plugin."""
    return "/" in plugin or plugin.endswith(".so")


def search_path(plugin_dirs: Iterable[PathLike] = ()) -> List[Tuple[str, str]]:
    """The plugin search path as ``(folder, where it came from)``, in order,
    without repeats: ``plugin_dirs``, then each folder of ``BEXT_PLUGIN_DIR``,
    then the folder of the ``bext-lock`` program on ``PATH`` and
    ``<that folder>/../lib/bext-locking`` (the CLI's own search path), then
    ``<prefix>/lib/bext-locking`` for this Python's prefix, ``/usr/local``
    and ``/usr`` (where ``make install`` puts plugins)."""
    dirs: List[Tuple[str, str]] = []

    def push(d: PathLike, origin: str) -> None:
        text = os.fspath(d)
        if text and all(text != seen for seen, _ in dirs):
            dirs.append((text, origin))

    for d in plugin_dirs:
        push(d, "plugin_dirs")
    for d in os.environ.get(ENV_DIR, "").split(os.pathsep):
        push(d, ENV_DIR)
    cli = shutil.which("bext-lock")
    if cli:
        bin_dir = os.path.dirname(os.path.realpath(cli))
        push(bin_dir, "bext-lock")
        push(os.path.join(os.path.dirname(bin_dir), "lib", "bext-locking"), "bext-lock")
    for prefix in (sys.prefix, sys.base_prefix, "/usr/local", "/usr"):
        push(os.path.join(prefix, "lib", "bext-locking"), "install")
    return dirs


def find(
    plugin: str, plugin_dirs: Sequence[PathLike] = (), allow_insecure: bool = False
) -> Library:
    """Loads ``plugin``: a path, or a name looked up along :func:`search_path`.

    In each folder a name ``N`` is first the file ``libbext_locking_N.so``;
    failing that, each library in the folder that passes the checks is
    opened and the one whose vtable calls itself ``N`` is taken.
    """
    if not plugin or "\0" in plugin:
        raise PluginNotFound(plugin, "the plugin name or path is empty or contains a NUL byte")
    if is_path(plugin):
        return load(plugin, allow_insecure=allow_insecure)
    dirs = search_path(plugin_dirs)
    for folder, _origin in dirs:
        candidate = os.path.join(folder, file_name(plugin))
        if os.path.isfile(candidate):
            return load(candidate, allow_insecure=allow_insecure)
        found = _scan_for(folder, plugin, allow_insecure)
        if found is not None:
            return found
    searched = ", ".join(d for d, _ in dirs)
    raise PluginNotFound(
        plugin,
        f"no plugin named {plugin!r} (looked for {file_name(plugin)} in {searched}); "
        f"build it (cargo build -p bext-locking-{plugin}), pass a path, "
        f"or set plugin_dirs / {ENV_DIR}",
    )


def _scan_for(folder: str, name: str, allow_insecure: bool) -> Optional[Library]:
    try:
        entries = sorted(os.listdir(folder))
    except OSError:
        return None
    for entry in entries:
        if entry.startswith(".") or not entry.endswith(".so") or entry == ".so":
            continue
        try:
            lib = load(os.path.join(folder, entry), allow_insecure=allow_insecure)
        except LoadError:
            continue  # not a plugin, or one we refuse: keep looking
        if lib.name == name:
            return lib
    return None


# The end of every refusal, in every host: what the rule is.
_ONLY_TRUSTED_WRITERS = "only root or this user may be able to write a plugin"


def check_file(path: str) -> os.stat_result:
    """Refuses a plugin file that others could have written, the way the
    Rust loader does; returns the checked file's status.

    The file (a symlink's target), the folder holding it and every folder
    above must belong to root or to this user; the file and its folder must
    not be writable by group or others; folders further up may be only when
    sticky (like ``/tmp``). A symlink's own folder is checked too.
    """
    try:
        target = os.path.realpath(path, strict=True) if sys.version_info >= (3, 10) else _realpath(path)
        fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise DlopenError(path, f"cannot open library: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(st.st_mode):
        raise DlopenError(path, "cannot open library: not a regular file")
    # The same order as every host: the folder the path names (a symlink's
    # own folder, resolved) and those above, then the file, then the folder
    # that really holds it when that is another one.
    own_folder = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    _check_folder(path, own_folder)
    described = f"the symlink's target {target}" if os.path.islink(path) else "the file"
    _check_owner_and_mode(path, described, st, sticky_ok=False)
    if os.path.dirname(target) != own_folder:
        _check_folder(path, os.path.dirname(target))
    return st


def _realpath(path: str) -> str:
    # Python 3.9's realpath has no strict mode: stat first, so a missing
    # file is an error here rather than a dlopen message later.
    os.stat(path)
    return os.path.realpath(path)


def _check_folder(path: str, folder: str) -> None:
    sticky_ok = False
    current = Path(folder)
    for d in [current, *current.parents]:
        try:
            st = os.stat(d)
        except OSError as e:
            raise InsecurePlugin(
                path, f"refused: cannot inspect folder {d}: {e.strerror}; {_ONLY_TRUSTED_WRITERS}"
            ) from None
        _check_owner_and_mode(path, f"folder {d}", st, sticky_ok)
        # Only the folder holding the plugin must be strictly private: a
        # sticky folder further up cannot have ours renamed away.
        sticky_ok = True


def _check_owner_and_mode(path: str, what: str, st: os.stat_result, sticky_ok: bool) -> None:
    me = os.geteuid()
    if st.st_uid not in (0, me):
        raise InsecurePlugin(
            path,
            f"refused: {what} is owned by uid {st.st_uid}, which is neither root "
            f"nor this process's user (uid {me}); {_ONLY_TRUSTED_WRITERS}",
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & _WRITABLE_BY_OTHERS and not (sticky_ok and mode & stat.S_ISVTX):
        who = {
            (True, True): "group and others",
            (True, False): "its group",
            (False, True): "others",
        }[(bool(mode & 0o020), bool(mode & 0o002))]
        raise InsecurePlugin(
            path,
            f"refused: {what} is writable by {who} (mode {mode:04o}); {_ONLY_TRUSTED_WRITERS}",
        )


def load(path: PathLike, allow_insecure: bool = False) -> Library:
    """Opens the library at ``path`` and validates its vtable.

    The file is checked first (unless ``allow_insecure``), then opened with
    ``RTLD_NOW | RTLD_LOCAL`` and never closed. Opening the same file twice
    returns the code loaded the first time; load a newer build from a new
    path (write, then rename; never overwrite a loaded file in place).
    """
    text = os.fspath(path)
    if not text or "\0" in text:
        raise DlopenError(text, "cannot load library: the path is empty or contains a NUL byte")
    checked = None if allow_insecure else check_file(text)
    # A bare file name would be searched for on the library path, which is
    # not what was checked: always hand dlopen a path with a slash.
    target = text if "/" in text else os.path.join(".", text)
    try:
        lib = ctypes.CDLL(target, mode=os.RTLD_NOW | os.RTLD_LOCAL)
    except OSError as e:
        raise DlopenError(text, f"cannot load library: {_dl_message(e, target, text)}") from None
    if checked is not None:
        try:
            now = os.stat(target)
        except OSError:
            now = None
        if now is None or (now.st_dev, now.st_ino) != (checked.st_dev, checked.st_ino):
            raise InsecurePlugin(
                text, f"refused: the file was replaced while it was being loaded; {_ONLY_TRUSTED_WRITERS}"
            )
    try:
        entry_ptr = getattr(lib, _abi.ENTRY_SYMBOL)
    except AttributeError as e:
        raise NotAPlugin(
            text,
            f"not a bext-locking plugin (no `{_abi.ENTRY_SYMBOL}` symbol): "
            f"{_dl_message(e, target, text)}",
        ) from None
    entry = _abi.EntryFn(ctypes.cast(entry_ptr, ctypes.c_void_p).value or 0)
    table = entry(_abi.ABI_VERSION)
    if not table:
        raise AbiMismatch(text, f"plugin refused host ABI version {_abi.ABI_VERSION}")
    address = ctypes.cast(table, ctypes.c_void_p).value or 0
    return _validate(text, address)


def _validate(path: str, address: int) -> Library:
    # Read abi_version and struct_size before anything else: only once they
    # check out is the rest of the v1 struct known to be there.
    head = (ctypes.c_uint32 * 2).from_address(address)
    struct_size, abi_version = head[0], head[1]
    if abi_version != _abi.ABI_VERSION:
        raise AbiMismatch(
            path,
            f"plugin is built for ABI version {abi_version}, "
            f"this host speaks version {_abi.ABI_VERSION}",
        )
    if struct_size < _abi.VTABLE_V1_SIZE:
        raise BadVTable(
            path,
            f"vtable struct_size is {struct_size} bytes, "
            f"smaller than the {_abi.VTABLE_V1_SIZE} bytes of ABI v1",
        )
    vtable = _abi.VTableV1.from_address(address)
    for field in _abi.MANDATORY_FIELDS:
        if not ctypes.c_void_p.from_address(address + getattr(_abi.VTableV1, field).offset).value:
            raise BadVTable(path, f"vtable field `{field}` is NULL")
    strings = {}
    for field in ("name", "version"):
        raw = getattr(vtable, field)
        try:
            value = raw.decode("utf-8") if raw else ""
        except UnicodeDecodeError:
            value = ""
        if not value:
            raise BadVTable(path, f"vtable `{field}` is empty or not valid UTF-8")
        strings[field] = value
    return Library(path, vtable, address, strings["name"], strings["version"])


def _dl_message(e: BaseException, opened: str, shown: str) -> str:
    """dlerror's text, without the file name it usually starts with (the
    error names the file already)."""
    msg = str(e)
    for prefix in (opened + ": ", shown + ": "):
        if msg.startswith(prefix):
            return msg[len(prefix):]
    return msg.replace(opened, shown)
