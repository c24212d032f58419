"""Opening plugins: the search path, the vtable checks, the refusal of files
others could have written, and the reading of appended slots."""

from __future__ import annotations

import ctypes
import os
import shutil
from pathlib import Path

import pytest

import bextlock
from bextlock import _abi
from conftest import lib_path, optional_lib


def test_missing_file_names_it_and_says_why(tmp_path: Path) -> None:
    path = str(tmp_path / "libbext_locking_nothing.so")
    with pytest.raises(bextlock.DlopenError) as info:
        bextlock.open(path)
    assert info.value.path == path
    assert "No such file" in str(info.value) and path in str(info.value)
    # Without the permission checks, dlopen itself says so.
    with pytest.raises(bextlock.DlopenError, match="No such file"):
        bextlock.open(path, allow_insecure=True)


def test_not_a_shared_library_carries_dlerror(tmp_path: Path) -> None:
    path = tmp_path / "garbage.so"
    path.write_text("this is not an ELF file, just text long enough to be read\n")
    with pytest.raises(bextlock.DlopenError) as info:
        bextlock.open(str(path))
    assert "cannot load library" in str(info.value)
    assert "ELF" in str(info.value) or "too short" in str(info.value), str(info.value)


@pytest.mark.parametrize("path", ["", "a\0b.so"])
def test_empty_or_nul_path_is_refused(path: str) -> None:
    with pytest.raises(bextlock.LoadError):
        bextlock.open(path)


def test_library_without_entry_is_not_a_plugin() -> None:
    with pytest.raises(bextlock.NotAPlugin) as info:
        bextlock.open(str(optional_lib("fixture-no-entry")))
    assert "bext_locking_plugin_entry" in str(info.value)
    assert "undefined symbol" in str(info.value), "dlerror's text is kept"


@pytest.mark.parametrize(
    "fixture, error, mention",
    [
        ("fixture-bad-abi", bextlock.AbiMismatch, "ABI version"),
        ("fixture-small-struct", bextlock.BadVTable, "struct_size"),
        ("fixture-null-slot", bextlock.BadVTable, "`renew` is NULL"),
    ],
)
def test_bad_vtables_are_refused(fixture: str, error: type, mention: str) -> None:
    with pytest.raises(error) as info:
        bextlock.open(str(optional_lib(fixture)))
    assert mention in str(info.value)
    assert isinstance(info.value, bextlock.LoadError) and isinstance(info.value, bextlock.LockError)


def test_open_by_path_and_twice(memory_plugin: bextlock.Plugin) -> None:
    again = bextlock.open(lib_path("memory"))  # a Path works too
    assert again.name == memory_plugin.name == "memory"
    assert again.version == memory_plugin.version and again.version
    assert again.path == str(lib_path("memory"))
    assert again.struct_size >= _abi.VTABLE_V1_SIZE


def test_name_on_the_search_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BEXT_PLUGIN_DIR", f"{tmp_path}:{lib_path('memory').parent}")
    p = bextlock.open("memory")
    assert p.name == "memory" and p.path == str(lib_path("memory"))
    assert bextlock.search_path()[:2] == [str(tmp_path), str(lib_path("memory").parent)]
    # plugin_dirs come first.
    first = bextlock.search_path(plugin_dirs=["/nonexistent-a"])
    assert first[0] == "/nonexistent-a" and first[1] == str(tmp_path)


def test_name_found_by_the_vtable_name(tmp_path: Path) -> None:
    folder = tmp_path / "plugins"
    folder.mkdir()
    shutil.copy(lib_path("memory"), folder / "libacme_memory_lock.so")
    (folder / "notes.so").write_text("not a library")  # skipped, not fatal
    p = bextlock.open("memory", plugin_dirs=[folder])
    assert p.name == "memory" and p.path == str(folder / "libacme_memory_lock.so")


def test_unknown_name_says_where_it_looked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BEXT_PLUGIN_DIR", raising=False)
    with pytest.raises(bextlock.PluginNotFound) as info:
        bextlock.open("no-such-backend", plugin_dirs=["/nonexistent-dir"])
    msg = str(info.value)
    assert "libbext_locking_no_such_backend.so" in msg and "/nonexistent-dir" in msg


def _private_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "plugins"
    folder.mkdir(mode=0o755)
    target = folder / "libbext_locking_memory.so"
    shutil.copy(lib_path("memory"), target)
    os.chmod(target, 0o755)
    return target


@pytest.mark.parametrize("mode, who", [(0o777, "group and others"), (0o775, "its group"), (0o757, "others")])
def test_writable_plugin_file_is_refused(tmp_path: Path, mode: int, who: str) -> None:
    target = _private_copy(tmp_path)
    os.chmod(target, mode)
    with pytest.raises(bextlock.InsecurePlugin) as info:
        bextlock.open(str(target))
    assert f"the file is writable by {who} (mode {mode:04o})" in str(info.value)
    assert info.value.path == str(target)
    # Loading anyway is a deliberate choice.
    assert bextlock.open(str(target), allow_insecure=True).name == "memory"


def test_plugin_in_a_world_writable_folder_is_refused(tmp_path: Path) -> None:
    target = _private_copy(tmp_path)
    for mode in (0o777, 0o1777):  # sticky is not enough for the folder itself
        os.chmod(target.parent, mode)
        with pytest.raises(bextlock.InsecurePlugin, match=f"folder {target.parent} is writable"):
            bextlock.open(str(target))
    os.chmod(target.parent, 0o755)
    assert bextlock.open(str(target)).name == "memory"


RULE = "; only root or this user may be able to write a plugin"


def test_refusals_end_with_the_rule_every_host_states(tmp_path: Path) -> None:
    target = _private_copy(tmp_path)
    os.chmod(target, 0o666)
    with pytest.raises(bextlock.InsecurePlugin) as info:
        bextlock.open(str(target))
    assert str(info.value).endswith(
        "refused: the file is writable by group and others (mode 0666)" + RULE
    ), str(info.value)


def test_a_symlinks_own_folder_is_checked_like_the_rust_loader(tmp_path: Path) -> None:
    # A link in a folder others can write, to a private, sound file: others
    # could replace the link, so it is refused, naming the link's folder.
    target = _private_copy(tmp_path)
    wide = tmp_path / "wide"
    wide.mkdir()
    link = wide / "libbext_locking_linked.so"
    link.symlink_to(target)
    os.chmod(wide, 0o777)
    with pytest.raises(bextlock.InsecurePlugin, match=f"folder {wide} is writable by group and others"):
        bextlock.open(str(link))
    # Reached through a symlinked folder, the real folder is the one named.
    alias = tmp_path / "alias"
    alias.symlink_to(wide, target_is_directory=True)
    real = wide / "libbext_locking_real.so"
    shutil.copy(lib_path("memory"), real)
    os.chmod(real, 0o755)
    with pytest.raises(bextlock.InsecurePlugin, match=f"folder {wide} is writable"):
        bextlock.open(str(alias / "libbext_locking_real.so"))


def test_symlink_target_is_what_is_checked(tmp_path: Path) -> None:
    target = _private_copy(tmp_path)
    os.chmod(target, 0o666)
    link = tmp_path / "libbext_locking_linked.so"
    link.symlink_to(target)
    with pytest.raises(bextlock.InsecurePlugin, match="the symlink's target"):
        bextlock.open(str(link))


def test_plugin_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can give a file to another user")
    target = _private_copy(tmp_path)
    os.chown(target, 65534, 65534)
    with pytest.raises(bextlock.InsecurePlugin, match="owned by uid 65534"):
        bextlock.open(str(target))


class _VTableV1_1(ctypes.Structure):
    """A hypothetical vtable with two appended slots, to test the reader."""

    _fields_ = list(_abi.VTableV1._fields_) + [("extra_a", ctypes.c_void_p), ("extra_b", ctypes.c_void_p)]


SLOTS = (("extra_a", _abi.CallFn), ("extra_b", _abi.CallFn))


def test_appended_slots_are_read_only_when_struct_size_covers_them(memory_plugin: bextlock.Plugin) -> None:
    real = memory_plugin._lib.vtable  # any v1 pointer will do as a slot value
    fn = ctypes.cast(real.try_lock, ctypes.c_void_p).value
    table = _VTableV1_1(extra_a=fn, extra_b=fn)
    address = ctypes.addressof(table)
    pointer = ctypes.sizeof(ctypes.c_void_p)
    for size, present in [
        (_abi.VTABLE_V1_SIZE, {"extra_a": False, "extra_b": False}),  # a 1.0 plugin
        (_abi.VTABLE_V1_SIZE + pointer, {"extra_a": True, "extra_b": False}),
        (_abi.VTABLE_V1_SIZE + 2 * pointer, {"extra_a": True, "extra_b": True}),
    ]:
        table.struct_size = size
        found = _abi.read_optional_slots(address, size, SLOTS)
        assert {k: v is not None for k, v in found.items()} == present, size
    table.extra_b = None  # inside struct_size but NULL: absent too
    assert _abi.read_optional_slots(address, ctypes.sizeof(table), SLOTS)["extra_b"] is None


def test_the_1_1_and_1_2_slots_are_read_from_a_1_2_plugin(memory_plugin: bextlock.Plugin) -> None:
    assert memory_plugin.struct_size == _abi.VTABLE_V1_2_SIZE
    assert memory_plugin.abi_minor == 2
    for slot in ("inspect", "force_release", "stats", "lock_wait", "cancel_wait", "renew_for"):
        assert memory_plugin.has_slot(slot), slot
