"""Faults: a server frozen behind a proxy, a paused holder process, and
Ctrl-C during a blocking acquire. Each must end with the holder told in
time and nothing left behind."""

from __future__ import annotations

import os
import signal
import textwrap
import threading
import time
from pathlib import Path
from typing import List, Optional

import pytest

import bextlock
from conftest import Backend, python_child, unique
from proxy import Proxy


def test_frozen_server_is_signalled_before_the_lease_ends(server_backend: Backend) -> None:
    """Holder A reaches the server through a proxy that freezes just after
    A acquired: its renewals hang. A must be told it lost the lock by the
    safe deadline, before the lease can end, and B, talking to the server
    directly, must get the lock only after A was told."""
    b = server_backend
    assert b.server is not None and b.via is not None
    ttl = 3.0
    with Proxy(b.server) as proxy:
        a = b.plugin.create(b.via(proxy.port))
        direct = b.plugin.create(b.config())
        try:
            key = unique("frozen")
            lock = a.lock(key, ttl=ttl)
            before = time.monotonic()
            assert lock.acquire(blocking=False)
            proxy.freeze()
            b_got: List[float] = []

            def contender() -> None:
                until = time.monotonic() + 20
                while time.monotonic() < until:
                    h = direct.try_lock(key, 10)
                    if h is not None:
                        b_got.append(time.monotonic())
                        direct.release(h)
                        return
                    time.sleep(0.02)

            t = threading.Thread(target=contender)
            t.start()
            lost = lock.wait_lost(timeout=15)
            told = time.monotonic()
            t.join()
            assert lost is not None, "the loss was never signalled"
            assert "safe deadline" in lost.reason, lost.reason
            # Promised: by sent + ttl - drift - stop_margin (about 2 s here);
            # asserted with a loaded machine's slack: before the lease ends.
            assert told - before < ttl, f"told {told - before:.2f} s after acquiring, TTL {ttl}"
            assert b_got, "B never got the lock after the lease ended"
            assert b_got[0] > told, "B held the lock before A was told it had lost it"
        finally:
            proxy.thaw()
            try:
                lock.release()
            except bextlock.LockError:
                pass
            a.close()
            direct.close()


PAUSED_HOLDER = textwrap.dedent(
    """
    import sys, time, bextlock
    plugin = bextlock.open(sys.argv[1])
    locker = plugin.create({"path": sys.argv[2]})
    lock = locker.lock("paused/job", ttl="1500ms")
    assert lock.acquire(blocking=False)
    print("held", flush=True)
    lost = lock.wait_lost(timeout=30)
    print("lost", time.monotonic(), lost.reason if lost else None, flush=True)
    """
)


def test_a_paused_holder_is_told_at_once(tmp_path: Path) -> None:
    """SIGSTOP a holder for longer than its TTL: after SIGCONT it reports
    the loss at once, naming the pause, and never renews back into it."""
    from conftest import optional_lib

    lib = str(optional_lib("sqlite"))
    db = str(tmp_path / "locks.db")
    with python_child(PAUSED_HOLDER, lib, db) as child:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "held"
        time.sleep(0.1)
        os.kill(child.pid, signal.SIGSTOP)
        time.sleep(3.0)
        os.kill(child.pid, signal.SIGCONT)
        resumed = time.monotonic()
        line = child.stdout.readline().split(" ", 2)
        assert line[0] == "lost", line
        assert float(line[1]) - resumed < 1.0, "the loss was not reported at once"
        assert "paused" in line[2], line[2]
        assert child.wait(10) == 0


INTERRUPTED_WAITER = textwrap.dedent(
    """
    import sys, bextlock
    plugin = bextlock.open(sys.argv[1])
    locker = plugin.create({"path": sys.argv[2]})
    lock = locker.lock("interrupt/job", ttl="30s")
    print("waiting", flush=True)
    try:
        lock.acquire()
        print("acquired", flush=True)
    except KeyboardInterrupt:
        print("interrupted", lock.locked(), flush=True)
    """
)


def test_ctrl_c_during_a_blocking_acquire_leaves_nothing_held(tmp_path: Path) -> None:
    from conftest import optional_lib

    lib = str(optional_lib("sqlite"))
    db = str(tmp_path / "locks.db")
    plugin = bextlock.open(lib)
    with plugin.create({"path": db}) as locker:
        for round_ in range(3):
            held = locker.try_lock("interrupt/job", 30)
            assert held is not None
            with python_child(INTERRUPTED_WAITER, lib, db) as child:
                assert child.stdout is not None
                assert child.stdout.readline().strip() == "waiting"
                time.sleep(0.3 + 0.1 * round_)
                if round_ == 2:
                    # Free the key at the moment of the interrupt: whatever
                    # the waiter got by then, it must give back.
                    locker.release(held)
                sent = time.monotonic()
                child.send_signal(signal.SIGINT)
                out, _ = child.communicate(timeout=10)
                assert time.monotonic() - sent < 5
                lines = out.split()
                assert lines and lines[0] in ("interrupted", "acquired"), out
                if lines[0] == "interrupted":
                    assert lines[1] == "False"
            if round_ < 2:
                assert locker.try_lock("interrupt/job", 1) is None, "our lock was disturbed"
                locker.release(held)
            again: Optional[bextlock.Handle] = locker.try_lock("interrupt/job", 1)
            assert again is not None, "the interrupted waiter left a lock behind"
            locker.release(again)
