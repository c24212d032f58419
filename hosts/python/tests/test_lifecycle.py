"""Instances are destroyed exactly once: on close, or when collected; never
in a forked child (the plugin's threads stayed in the parent)."""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

import pytest

import bextlock
from conftest import optional_lib, unique


def _fds_on(path: Path) -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith(str(path)):
                n += 1
        except OSError:
            pass
    return n


def test_garbage_collection_destroys_the_instance(tmp_path: Path) -> None:
    """The SQLite instance keeps its database open; once the Locker is
    collected without close(), destroy has run and the file is closed."""
    plugin = bextlock.open(str(optional_lib("sqlite")))
    db = tmp_path / "locks.db"
    locker = plugin.create({"path": str(db)})
    assert locker.try_lock(unique("gc"), 1) is not None
    assert _fds_on(db) > 0
    del locker
    gc.collect()
    assert _fds_on(db) == 0, "destroy did not run on garbage collection"
    # Closing first, then collecting, destroys once (a second destroy
    # would be a double free inside the plugin).
    for _ in range(20):
        locker = plugin.create({"path": str(db)})
        locker.close()
        del locker
        gc.collect()
    assert _fds_on(db) == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_forked_child_disowns_inherited_lockers(memory_plugin: bextlock.Plugin) -> None:
    locker = memory_plugin.create({})
    pid = os.fork()
    if pid == 0:  # the child: calls are refused, and exiting destroys nothing
        code = 1
        try:
            locker.try_lock("k", 1)
        except bextlock.LockerClosed as e:
            code = 0 if "forked" in str(e) else 2
        except BaseException:  # noqa: BLE001
            code = 3
        sys.stdout.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    h = locker.try_lock(unique("fork"), 1)  # the parent's instance is intact
    assert h is not None
    locker.close()
