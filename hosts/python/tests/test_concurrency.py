"""Many threads on one Locker, and two processes, never holding a lock at
the same time."""

from __future__ import annotations

import multiprocessing
import threading
from typing import List

import pytest

import bextlock
from conftest import Backend, unique
from mp_worker import hold_and_check


def test_8_threads_1000_contended_pairs_no_overlap(backend: Backend, request: pytest.FixtureRequest) -> None:
    """8 threads, each making 1,000 try_lock attempts on one key (releasing
    when it wins), over two Lockers that see the same locks: never two
    holders at once, no errors, and every attempt an answer."""
    lockers = [backend.locker(request) for _ in range(2)]
    key = unique("contend")
    guard = threading.Lock()
    holders = 0
    acquired = contended = overlaps = 0
    errors: List[BaseException] = []

    def worker(locker: bextlock.Locker) -> None:
        nonlocal holders, acquired, contended, overlaps
        try:
            for i in range(1000):
                h = locker.try_lock(key, 30)
                if h is None:
                    with guard:
                        contended += 1
                    continue
                with guard:
                    holders += 1
                    overlaps += holders != 1
                    acquired += 1
                if i % 10 == 0:
                    locker.renew(h)
                with guard:
                    holders -= 1
                locker.release(h)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(lockers[i % 2],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert overlaps == 0
    assert acquired + contended == 8000
    assert acquired > 0 and contended > 0, (acquired, contended)


def test_two_processes_never_overlap(shared_backend: Backend) -> None:
    """Two processes (multiprocessing, spawn) take turns on one key with
    blocking acquires; a shared counter catches any overlap."""
    ctx = multiprocessing.get_context("spawn")
    holders = ctx.Value("i", 0)
    stats = ctx.Array("i", 3)
    key = unique("processes")
    config = shared_backend.config()
    rounds = 40
    procs = [
        ctx.Process(target=hold_and_check, args=(shared_backend.plugin.path, config, key, rounds, holders, stats))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    for p in procs:
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    acquired, overlaps, errors = stats[:]
    assert errors == 0
    assert overlaps == 0
    assert acquired == 2 * rounds
