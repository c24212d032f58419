"""The worker the multiprocessing test starts in each process (a module of
its own, so that the "spawn" start method can import it)."""

from __future__ import annotations

import time
from typing import Any, Dict


def hold_and_check(lib: str, config: Dict[str, Any], key: str, rounds: int, holders: Any, stats: Any) -> None:
    """Takes the lock ``rounds`` times; while holding it, checks that the
    shared holder count is 1. ``stats`` gets [acquired, overlaps, errors]."""
    import bextlock

    plugin = bextlock.open(lib)
    with plugin.create(config) as locker:
        lock = locker.lock(key, ttl="10s", auto_renew=False)
        for _ in range(rounds):
            try:
                if not lock.acquire(timeout=60):
                    with stats.get_lock():
                        stats[2] += 1
                    continue
            except bextlock.LockError:
                with stats.get_lock():
                    stats[2] += 1
                continue
            with holders.get_lock():
                holders.value += 1
                overlap = holders.value != 1
            with stats.get_lock():
                stats[0] += 1
                stats[1] += overlap
            time.sleep(0.001)
            with holders.get_lock():
                holders.value -= 1
            lock.release()
