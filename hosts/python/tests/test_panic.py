"""A plugin that panics: every panic comes back as PluginPanic and the
process (and the instance) carry on."""

from __future__ import annotations

import threading
from typing import List

import pytest

import bextlock
from conftest import optional_lib, unique


@pytest.fixture
def panicky(monkeypatch: pytest.MonkeyPatch) -> bextlock.Plugin:
    monkeypatch.setenv("RUST_BACKTRACE", "0")
    return bextlock.open(str(optional_lib("fixture-panicky")))


def test_panics_are_errors_not_crashes(panicky: bextlock.Plugin) -> None:
    with pytest.raises(bextlock.PluginPanic) as info:
        panicky.create({"panic_in_create": True})
    e = info.value
    assert e.status == -3 and e.code == "panic" and e.op == "create" and "panic" in e.message
    assert not isinstance(e, (bextlock.BackendError, bextlock.InvalidArgument))

    with panicky.create() as locker:
        failures: List[BaseException] = []

        def worker() -> None:
            for _ in range(3):
                try:
                    locker.try_lock(unique("panic"), 1)
                    failures.append(AssertionError("try_lock that panics returned"))
                except bextlock.PluginPanic:
                    pass
                except BaseException as other:  # noqa: BLE001
                    failures.append(other)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert failures == []

        # The instance still works after the caught panics.
        key = unique("calm")
        h = locker.try_lock(key, 1)
        assert h is not None and locker.try_lock(key, 1) is None
        locker.renew(h)
        locker.release(h)
        with pytest.raises(bextlock.PluginPanic):
            locker.lock("panic/in-lock").acquire()
    assert panicky.describe().name == "panicky"
