"""The Python section of `make bench`: acquire+release pairs/s from Python.

On one Redis, one thread and 8 threads, measured in one run: `bextlock`
(the Redis plugin's .so through ctypes) against python-redis-lock and
pottery's Redlock doing the same single-node lock; plus `bextlock` on the
SQLite plugin for scale. Sides take turns in short slices, round after
round, as the Rust sections do, so that other work on the machine falls on
all of them alike; ratios are medians of per-round ratios.

    python bench/python/bench.py [--json FILE]

Run by bext-locking-bench (mk/bench.mk creates the virtual environment,
installs the peers and sets BENCH_PYTHON). Environment: BENCH_SECS (3) and
BENCH_ROUNDS (30) as for the other sections; BEXT_PLUGIN_DIR, the folder of
the release plugins; BEXT_REDIS_URL (redis://127.0.0.1:6379);
BENCH_SQLITE_DIR (/dev/shm).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

TTL_S = 30
TARGET = 1.2
THREADS = (1, 8)

# A pair: acquire then release, on this worker's own key.
Pair = Callable[[], None]
# Builds one worker's pair function (called once per worker per slice set).
Factory = Callable[[int], Pair]


@dataclass
class Side:
    label: str
    kind: str  # chart colour: "So" for bextlock, "Peer" for the others
    factory: Factory
    threads: int
    pairs: int = 0
    secs: float = 0.0
    cpu: float = 0.0
    latencies: List[float] = field(default_factory=list)
    round_rates: List[float] = field(default_factory=list)
    error: Optional[str] = None

    def rate(self) -> float:
        return self.pairs / self.secs if self.secs else 0.0

    def quantile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        s = sorted(self.latencies)
        return s[min(len(s) - 1, int(q * len(s)))] * 1e6

    def cpu_us(self) -> float:
        return self.cpu / self.pairs * 1e6 if self.pairs else float("nan")


def run_slice(side: Side, workers: List[Pair], secs: float, record: bool) -> None:
    stop = threading.Event()
    start = threading.Barrier(len(workers) + 1)
    counts = [0] * len(workers)
    lat: List[List[float]] = [[] for _ in workers]
    errors: List[str] = []

    def work(i: int) -> None:
        pair = workers[i]
        out = lat[i]
        n = 0
        start.wait()
        try:
            while not stop.is_set():
                t0 = time.perf_counter()
                pair()
                out.append(time.perf_counter() - t0)
                n += 1
        except Exception as e:  # noqa: BLE001 - reported as the side's failure
            errors.append(f"{type(e).__name__}: {e}")
        counts[i] = n

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(workers))]
    for t in threads:
        t.start()
    cpu0 = time.process_time()
    start.wait()
    t0 = time.perf_counter()
    time.sleep(secs)
    stop.set()
    for t in threads:
        t.join()
    took = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    if errors and side.error is None:
        side.error = errors[0]
    if record:
        n = sum(counts)
        side.pairs += n
        side.secs += took
        side.cpu += cpu
        for part in lat:
            side.latencies.extend(part)
        side.round_rates.append(n / took if took else 0.0)


def measure(group: List[Side], secs: float, rounds: int) -> None:
    """Runs the sides of one group in interleaved slices (first side rotating)."""
    workers = {}
    for s in group:
        try:
            workers[s.label] = [s.factory(i) for i in range(s.threads)]
        except Exception as e:  # noqa: BLE001
            s.error = f"setup failed: {type(e).__name__}: {e}"
    live = [s for s in group if s.error is None]
    slice_secs = secs / rounds
    for s in live:  # warm-up, not recorded
        run_slice(s, workers[s.label], min(0.2, slice_secs * 2), record=False)
    for r in range(rounds):
        order = live[r % len(live):] + live[: r % len(live)] if live else []
        for s in order:
            if s.error is None:
                run_slice(s, workers[s.label], slice_secs, record=True)


def median_ratio(a: Side, b: Side) -> float:
    pairs = [x / y for x, y in zip(a.round_rates, b.round_rates) if y > 0]
    return statistics.median(pairs) if pairs else float("nan")


def ok(s: Side) -> bool:
    return s.error is None and s.pairs > 0


def thousands(v: float) -> str:
    return "-" if v != v else f"{v:,.0f}"


def us(v: float) -> str:
    if v != v:
        return "-"
    return f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:,.0f}"


# -- the sides -----------------------------------------------------------


def bextlock_sides(plugin_dir: str, redis_url: str, threads: int) -> List[Side]:
    import bextlock

    plugin = bextlock.open("redis", plugin_dirs=[plugin_dir])
    locker = plugin.create({"url": redis_url})

    def raw_factory(i: int) -> Pair:
        key = f"bench/py/{uuid.uuid4()}"

        def pair() -> None:
            h = locker.try_lock(key, TTL_S)
            if h is None:
                raise RuntimeError("contention on a private key")
            locker.release(h)

        return pair

    return [
        Side("bextlock Lock (redis .so)", "So", lock_pairs(locker), threads),
        Side("bextlock try_lock/release", "So", raw_factory, threads),
    ]


def peer_sides(redis_url: str, threads: int) -> List[Side]:
    import redis  # type: ignore[import-not-found]
    import redis_lock  # type: ignore[import-not-found]
    from pottery import Redlock  # type: ignore[import-not-found]

    # One client per side, shared by its threads (redis-py's pool is
    # thread-safe), as an application would hold it.
    client_a = redis.Redis.from_url(redis_url, max_connections=32)
    client_b = redis.Redis.from_url(redis_url, max_connections=32)

    def prl_factory(i: int) -> Pair:
        lock = redis_lock.Lock(client_a, f"bench/py/{uuid.uuid4()}", expire=TTL_S)

        def pair() -> None:
            if not lock.acquire(blocking=False):
                raise RuntimeError("contention on a private key")
            lock.release()

        return pair

    def pottery_factory(i: int) -> Pair:
        lock = Redlock(key=f"bench/py/{uuid.uuid4()}", masters={client_b}, auto_release_time=TTL_S)

        def pair() -> None:
            if not lock.acquire(blocking=False):
                raise RuntimeError("contention on a private key")
            lock.release()

        return pair

    return [
        Side("python-redis-lock", "Peer", prl_factory, threads),
        Side("pottery Redlock", "Peer", pottery_factory, threads),
    ]


def sqlite_side(plugin_dir: str, threads: int, db: str) -> Side:
    import bextlock

    locker = bextlock.open("sqlite", plugin_dirs=[plugin_dir]).create({"path": db})
    return Side("bextlock Lock (sqlite .so)", "So", lock_pairs(locker), threads)


def lock_pairs(locker: Any) -> Factory:
    """Workers doing `Lock.acquire(blocking=False)` + `release()` on
    `locker`, each on its own key, no auto-renewal (as the peers run)."""

    def factory(i: int) -> Pair:
        lock = locker.lock(f"bench/py/{uuid.uuid4()}", ttl=TTL_S, auto_renew=False)

        def pair() -> None:
            if not lock.acquire(blocking=False):
                raise RuntimeError("contention on a private key")
            lock.release()

        return pair

    return factory


# -- the report ----------------------------------------------------------


def table(groups: List[Tuple[List[Side], Optional[Side]]]) -> str:
    out = [
        "| side | threads | pairs/s | p50 µs | p99 µs | CPU µs/pair | vs the faster peer |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for group, base in groups:
        for s in group:
            if not ok(s):
                out.append(f"| {s.label} | {s.threads} | failed: {(s.error or 'no pairs').replace('|', '/')} | | | | |")
                continue
            if base is None:
                vs = "-"
            elif s is base:
                vs = "1 (baseline)"
            else:
                vs = f"{median_ratio(s, base):.3f}x ({s.rate() / base.rate():.2f}x overall)"
            out.append(
                f"| {s.label} | {s.threads} | {thousands(s.rate())} | {us(s.quantile(0.5))} | "
                f"{us(s.quantile(0.99))} | {us(s.cpu_us())} | {vs} |"
            )
    return "\n".join(out) + "\n"


def faster_peer(group: List[Side]) -> Optional[Side]:
    peers = [s for s in group if s.kind == "Peer" and ok(s)]
    return max(peers, key=lambda s: s.rate()) if peers else None


def chart_group(title: str, group: List[Side], base: Side) -> Dict[str, Any]:
    bars = []
    for s in group:
        if not ok(s):
            continue
        value = 1.0 if s is base else median_ratio(s, base)
        bars.append({
            "label": s.label,
            "kind": s.kind,
            "value": value,
            "note": f"{value:.2f}x  {thousands(s.rate())}/s  p50 {us(s.quantile(0.5))} µs",
        })
    return {"title": title, "bars": bars, "target": TARGET}


def target_line(group: List[Side], base: Optional[Side], threads: int) -> Dict[str, Any]:
    ours = group[0]
    what = f"`bextlock` (redis .so) / the faster of python-redis-lock and pottery, {_threads(threads)}"
    if base is None or not ok(ours):
        why = ours.error or "no peer measured (are redis, python-redis-lock and pottery installed?)"
        return {"area": "python", "what": what, "target": f">= {TARGET}x", "measured": "-",
                "verdict": "NoData", "note": why}
    r = median_ratio(ours, base)
    note = (
        f"the faster peer here is {base.label}; by p50 {base.quantile(0.5) / ours.quantile(0.5):.2f}x "
        f"({us(ours.quantile(0.5))} vs {us(base.quantile(0.5))} µs), by CPU per pair "
        f"{base.cpu_us() / ours.cpu_us():.2f}x ({us(ours.cpu_us())} vs {us(base.cpu_us())} µs)"
    )
    return {
        "area": "python",
        "what": what,
        "target": f">= {TARGET}x",
        "measured": f"{r:.3f}x ({ours.rate() / base.rate():.2f}x overall)",
        "verdict": "Met" if r >= TARGET else "NotMet",
        "note": note,
    }


def run() -> Dict[str, Any]:
    secs = max(0.1, _env_number("BENCH_SECS", 3.0))
    rounds = max(1, int(_env_number("BENCH_ROUNDS", 30)))
    plugin_dir = os.environ.get("BEXT_PLUGIN_DIR", "target/release")
    redis_url = os.environ.get("BEXT_REDIS_URL", "redis://127.0.0.1:6379")
    sqlite_dir = os.environ.get("BENCH_SQLITE_DIR", "/dev/shm" if os.path.isdir("/dev/shm") else None)
    print(f"python: {secs} s per side per group in {rounds} rounds, Python {sys.version.split()[0]}", file=sys.stderr)

    import bextlock
    import redis_lock  # noqa: F401 - fail early, with the reason, when a peer is missing
    import pottery  # noqa: F401

    versions = {
        "bextlock": bextlock.__version__,
        "python-redis-lock": _version("python-redis-lock"),
        "pottery": _version("pottery"),
        "redis (redis-py)": _version("redis"),
    }
    targets: List[Dict[str, Any]] = []
    charts: List[Dict[str, Any]] = []
    tables: List[Tuple[List[Side], Optional[Side]]] = []
    for threads in THREADS:
        group = bextlock_sides(plugin_dir, redis_url, threads) + peer_sides(redis_url, threads)
        print(f"  redis, {_threads(threads)}", file=sys.stderr)
        measure(group, secs, rounds)
        base = faster_peer(group)
        tables.append((group, base))
        targets.append(target_line(group, base, threads))
        if base is not None:
            charts.append(chart_group(f"python, redis, {_threads(threads)}", group, base))
    with tempfile.TemporaryDirectory(dir=sqlite_dir) as d:
        sqlite_groups = []
        for threads in THREADS:
            side = sqlite_side(plugin_dir, threads, os.path.join(d, "locks.db"))
            print(f"  sqlite, {_threads(threads)}", file=sys.stderr)
            measure([side], secs, rounds)
            sqlite_groups.append(([side], None))
    body = (
        "Acquire+release pairs from Python 3 on one Redis (the shared server), each worker "
        "thread on its own key, every acquire succeeding: `bextlock`'s `Lock` (the redis "
        "plugin's `.so` through ctypes; `acquire(blocking=False)`, `release()`, no "
        "auto-renewal) and its lower-level `try_lock`/`release`, against python-redis-lock's "
        "`Lock` and pottery's `Redlock` on a single master doing the same lock "
        "(`acquire(blocking=False)`, `release()`, no auto-renewal), each installed with pip "
        "into a virtual environment the bench creates. Sides take turns in slices as the other "
        "sections do; \"vs\" is the median of per-round ratios against the faster of the two "
        "peers, then the ratio of total rates. CPU is the whole Python process's (the "
        "plugin's Rust threads included), not the server's.\n\n"
        + "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + f"; Python {sys.version.split()[0]}.\n\n"
        + table(tables)
        + "\nFor scale, the same `Lock` on the SQLite plugin (a file on `/dev/shm`, no server):\n\n"
        + table(sqlite_groups)
        + "\nHow the sides differ per pair: `bextlock` makes one C call per operation, which "
        "releases the GIL while the plugin's Rust client talks to Redis (its fenced script, "
        "then the compare-and-delete release); python-redis-lock sends `SET NX EX` and a Lua "
        "release script through redis-py, whose command encoding and reply parsing are Python "
        "code holding the GIL; pottery sends the same kind of commands but runs each acquire "
        "and release through a new thread pool over its masters (here one), plus its Redlock "
        "validity arithmetic.\n"
    )
    return {"report": {"sections": [["python", body]], "targets": targets, "chart": charts}, "error": None}


def _threads(n: int) -> str:
    return f"{n} thread" if n == 1 else f"{n} threads"


def _env_number(name: str, default: float) -> float:
    """A number from the environment; unset, empty (make exports unset
    variables as empty) or not a number means the default, as in the Rust
    sections."""
    try:
        return float(os.environ.get(name) or default)
    except ValueError:
        return default


def _version(dist: str) -> str:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:  # noqa: BLE001
        return "?"


def main() -> int:
    args = sys.argv[1:]
    out = args[1] if len(args) == 2 and args[0] == "--json" else None
    if args and out is None:
        print("usage: bench.py [--json FILE]", file=sys.stderr)
        return 2
    try:
        piece = run()
    except Exception as e:  # noqa: BLE001 - reported as "not measured"
        piece = {"report": {"sections": [], "targets": [], "chart": []},
                 "error": f"the Python bench failed: {type(e).__name__}: {e}"}
        print(f"  python not measured: {piece['error']}", file=sys.stderr)
    if out is not None:
        with open(out, "w") as f:
            json.dump(piece, f)
        return 0
    for title, body in piece["report"]["sections"]:
        print(f"## {title}\n\n{body}")
    for t in piece["report"]["targets"]:
        print(f"{t['what']}: {t['measured']} ({t['verdict']}; target {t['target']}) {t['note']}")
    return 1 if piece["error"] else 0


if __name__ == "__main__":
    sys.exit(main())
