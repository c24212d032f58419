"""What revision 1.1 of the ABI answers: who holds a key, what breaking a
lock did, and an instance's statistics (with their Prometheus text)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

#: The error codes of ABI 1.1, always written (zero included) so that a
#: dashboard finds every series; codes added later follow, sorted.
ERROR_CODES: Tuple[str, ...] = ("invalid_argument", "backend", "panic", "unsupported")


@dataclass(frozen=True)
class LockInfo:
    """What :meth:`Locker.inspect <bextlock.Locker.inspect>` reports: a
    snapshot, which may change right after it is taken.

    The optional fields are None when the key is not held or the backend
    does not know them. Times are by the backend's clock (the one that
    expires leases), in seconds. The lock id is never reported: it is the
    right to release.
    """

    #: The key asked about.
    key: str
    #: Whether some holder's lease is running now.
    held: bool
    #: The holder's fence, as its handle shows it.
    fence: Optional[int] = None
    #: The owner the holder gave (``hostname:pid`` by default).
    owner: Optional[str] = None
    #: How long the lease still runs, in seconds.
    expires_in: Optional[float] = None
    #: How long ago the holder acquired it (renewals do not reset it), in seconds.
    held_for: Optional[float] = None


@dataclass(frozen=True)
class ForceReleased:
    """What :meth:`Locker.force_release <bextlock.Locker.force_release>` did."""

    #: Whether a lock was broken: False for a free key, or when the holder's
    #: fence was not ``if_fence``.
    released: bool
    #: The fence of the holder that was broken, when the backend fences.
    fence: Optional[int] = None


@dataclass(frozen=True)
class Latencies:
    """Per-call histograms with the ABI's fixed bucket bounds."""

    #: Upper bounds of the buckets in microseconds (1 µs to 5 s); a call
    #: that took ``t`` counts in the first bucket whose bound ``b`` has
    #: ``t <= b``.
    bounds_us: Tuple[int, ...]
    #: One count per bound plus a last one for slower calls (+Inf); per
    #: bucket, not cumulative.
    try_lock: Tuple[int, ...]
    renew: Tuple[int, ...]
    release: Tuple[int, ...]


@dataclass(frozen=True)
class Stats:
    """An instance's counts since ``create``, counted inside the plugin
    identically for every backend and host. Read without a lock: a snapshot
    taken while calls run may be off by the calls in flight."""

    #: try_lock calls that took the lock.
    acquired: int
    #: try_lock calls that found the key held.
    contended: int
    #: try_lock, renew, release and force_release calls answered with an
    #: error, by code ("invalid_argument", "backend", "panic", "unsupported").
    errors: Dict[str, int]
    #: renew calls that restarted the lease.
    renewed: int
    #: renew calls that failed (also in ``errors``): each a lock lost.
    renew_failures: int
    #: release calls answered OK.
    released: int
    #: Locks broken by force_release.
    force_released: int
    #: Time spent inside each call.
    latency: Latencies
    #: The whole answer, including fields this host does not know.
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_prometheus(self, plugin: str, labels: Optional[Mapping[str, str]] = None) -> str:
        """These statistics in the Prometheus text exposition format (0.0.4,
        which OpenMetrics scrapers also read), with the metric names of the
        Rust and Go hosts: counters ``bext_locking_acquired_total``,
        ``…_contended_total``, ``…_errors_total{code}``,
        ``…_renewed_total``, ``…_renew_failures_total``,
        ``…_released_total``, ``…_force_released_total`` and the histogram
        ``bext_locking_call_duration_seconds{call}`` (cumulative buckets, no
        ``_sum``). Every sample has ``plugin="<plugin>"`` then ``labels``,
        in order; a label name that is not a Prometheus name, or one the
        samples set themselves, raises ValueError."""
        base = f'plugin="{_escape(plugin)}"'
        for label, label_value in (labels or {}).items():
            if not _is_label_name(label) or label in ("plugin", "code", "call", "le"):
                raise ValueError(f"{label!r} cannot be used as a label name here")
            base += f',{label}="{_escape(label_value)}"'
        out: List[str] = []
        for name, help_text, value in (
            ("acquired", "try_lock calls that acquired the lock", self.acquired),
            ("contended", "try_lock calls that found the key held", self.contended),
            ("renewed", "renew calls that restarted the lease", self.renewed),
            ("renew_failures", "renew calls that failed: the lock is lost", self.renew_failures),
            ("released", "release calls answered OK", self.released),
            ("force_released", "locks broken by force_release", self.force_released),
        ):
            out.append(f"# HELP bext_locking_{name}_total {help_text}.")
            out.append(f"# TYPE bext_locking_{name}_total counter")
            out.append(f"bext_locking_{name}_total{{{base}}} {value}")
        out.append("# HELP bext_locking_errors_total Calls answered with an error, by code.")
        out.append("# TYPE bext_locking_errors_total counter")
        later = sorted(c for c in self.errors if c not in ERROR_CODES)
        for code in list(ERROR_CODES) + later:
            out.append(f'bext_locking_errors_total{{{base},code="{_escape(code)}"}} {self.errors.get(code, 0)}')
        metric = "bext_locking_call_duration_seconds"
        out.append(f"# HELP {metric} Time spent in each lock call, inside the plugin.")
        out.append(f"# TYPE {metric} histogram")
        lat = self.latency
        for call, counts in (("try_lock", lat.try_lock), ("renew", lat.renew), ("release", lat.release)):
            cumulative = 0
            for i, n in enumerate(counts):
                cumulative += n
                le = _seconds(lat.bounds_us[i]) if i < len(lat.bounds_us) else "+Inf"
                out.append(f'{metric}_bucket{{{base},call="{call}",le="{le}"}} {cumulative}')
            out.append(f'{metric}_count{{{base},call="{call}"}} {cumulative}')
        return "\n".join(out) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _is_label_name(name: str) -> bool:
    return (
        bool(name)
        and (name[0].isascii() and (name[0].isalpha() or name[0] == "_"))
        and all(c.isascii() and (c.isalnum() or c == "_") for c in name)
    )


def _seconds(us: int) -> str:
    """Microseconds as the shortest decimal of seconds (1 -> "0.000001")."""
    whole, frac = divmod(us, 1_000_000)
    if frac == 0:
        return str(whole)
    return f"{whole}.{frac:06d}".rstrip("0")


def _uint(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _opt_uint(obj: Mapping[str, Any], name: str) -> Optional[int]:
    v = obj.get(name)
    if v is None:
        return None
    if not _uint(v):
        raise ValueError(f"{name} is not a non-negative integer")
    return int(v)


def parse_lock_info(obj: Any) -> LockInfo:
    """Reads inspect's answer; ValueError when it is not one."""
    if not isinstance(obj, dict) or not isinstance(obj.get("key"), str) or not isinstance(obj.get("held"), bool):
        raise ValueError("not an inspect answer (want key and held)")
    owner = obj.get("owner")
    if owner is not None and not isinstance(owner, str):
        raise ValueError("owner is not a string")
    expires, held_for = _opt_uint(obj, "expires_in_ms"), _opt_uint(obj, "held_for_ms")
    return LockInfo(
        key=obj["key"],
        held=obj["held"],
        fence=_opt_uint(obj, "fence"),
        owner=owner,
        expires_in=None if expires is None else expires / 1000.0,
        held_for=None if held_for is None else held_for / 1000.0,
    )


def parse_force_released(obj: Any) -> ForceReleased:
    """Reads force_release's answer; ValueError when it is not one."""
    if not isinstance(obj, dict) or not isinstance(obj.get("released"), bool):
        raise ValueError("not a force_release answer (want released)")
    return ForceReleased(released=obj["released"], fence=_opt_uint(obj, "fence"))


def _counts(obj: Mapping[str, Any], name: str, n: Optional[int] = None) -> Tuple[int, ...]:
    v = obj.get(name)
    if not isinstance(v, list) or not all(_uint(x) for x in v):
        raise ValueError(f"latency_us.{name} is not a list of non-negative integers")
    if n is not None and len(v) != n:
        raise ValueError(f"latency_us.{name} has {len(v)} buckets, want {n} (one per bound and +Inf)")
    return tuple(v)


def parse_stats(obj: Any) -> Stats:
    """Reads stats' answer; ValueError when it is not one."""
    if not isinstance(obj, dict):
        raise ValueError("not a stats object")
    counters = {}
    for name in ("acquired", "contended", "renewed", "renew_failures", "released", "force_released"):
        if not _uint(obj.get(name)):
            raise ValueError(f"{name} is not a non-negative integer")
        counters[name] = int(obj[name])
    errors = obj.get("errors")
    if not isinstance(errors, dict) or not all(_uint(v) for v in errors.values()):
        raise ValueError("errors is not an object of counts")
    lat = obj.get("latency_us")
    if not isinstance(lat, dict):
        raise ValueError("latency_us is not an object")
    bounds = _counts(lat, "bounds")
    if not bounds:
        raise ValueError("latency_us.bounds is empty")
    hist: Sequence[Tuple[int, ...]] = [_counts(lat, c, len(bounds) + 1) for c in ("try_lock", "renew", "release")]
    return Stats(
        errors={str(k): int(v) for k, v in errors.items()},
        latency=Latencies(bounds_us=bounds, try_lock=hist[0], renew=hist[1], release=hist[2]),
        raw=obj,
        **counters,
    )
