"""ABI 1.1 from Python: owner, inspect, force_release, stats (and their
Prometheus text), against every built backend, and a plugin built for ABI
1.0 whose missing slots raise Unsupported without being called."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

import bextlock
from bextlock import _abi
from conftest import Backend, lib_path, unique

#: Backends whose inspect and force_release must give real answers; the
#: others may still raise Unsupported for them (their modes may not serve
#: them), and pass either way, so the tests keep passing when they gain them.
REAL_ADMIN = {"memory", "sqlite", "redis", "pg", "etcd", "mysql", "nats"}


def _unsupported_ok(b: Backend, e: bextlock.Unsupported) -> None:
    if b.name in REAL_ADMIN:
        raise AssertionError(f"{b.name} must serve this call: {e}")
    assert e.code == "unsupported" and e.message, e


def test_describe_lists_abi_minor_and_capabilities(backend: Backend) -> None:
    d = backend.plugin.describe()
    assert d.abi_minor == 2 and backend.plugin.abi_minor == 2
    assert "stats" in d.capabilities, d.capabilities
    if backend.name in REAL_ADMIN:
        assert {"owner", "inspect", "force_release"} <= set(d.capabilities), d.capabilities
    for slot in ("inspect", "force_release", "stats", "lock_wait", "cancel_wait", "renew_for"):
        assert backend.plugin.has_slot(slot)


def test_owner_is_checked_before_the_call(backend: Backend, request: pytest.FixtureRequest) -> None:
    locker = backend.locker(request)
    key = unique("py-owner-input")
    for owner in ("o" * 257, "€" * 86):
        with pytest.raises(bextlock.InvalidArgument, match="owner"):
            locker.try_lock(key, 1, owner=owner)
    with pytest.raises(bextlock.InvalidArgument, match="owner"):
        locker.try_lock(key, 1, owner="\ud800")
    h = locker.try_lock(key, 10, owner="o" * bextlock.MAX_OWNER_BYTES)
    assert h is not None
    locker.release(h)
    assert locker.stats().errors["invalid_argument"] == 0, "refused before reaching the plugin"


def test_inspect(backend: Backend, request: pytest.FixtureRequest) -> None:
    a, b = backend.locker(request), backend.locker(request)
    free = unique("py-inspect-free")
    try:
        info = b.inspect(free)
    except bextlock.Unsupported as e:
        _unsupported_ok(backend, e)
        return
    assert info == bextlock.LockInfo(key=free, held=False)
    key = unique("py-inspect")
    h = a.try_lock(key, 10, owner="py-test:inspect")
    assert h is not None
    info = b.inspect(key)
    assert info.held and info.key == key
    if h.fence is not None:
        assert info.fence == h.fence
    if "owner" in backend.plugin.describe().capabilities:
        assert info.owner == "py-test:inspect"
    if backend.name in REAL_ADMIN:
        assert info.expires_in is not None and 0 < info.expires_in <= 10
        # etcd has no clock a client can read, so it never says how long a
        # lock has been held (docs/backends/etcd.md); every other backend does.
        if backend.name != "etcd":
            assert info.held_for is not None and info.held_for >= 0
    assert h.lock_id not in repr(info)
    a.release(h)
    assert not b.inspect(key).held
    # The default owner is hostname:pid.
    h = a.try_lock(key, 10)
    assert h is not None
    if "owner" in backend.plugin.describe().capabilities:
        assert b.inspect(key).owner == f"{socket.gethostname()}:{os.getpid()}" == bextlock.default_owner()
    a.release(h)
    with pytest.raises(bextlock.InvalidArgument, match="key"):
        b.inspect("")
    with pytest.raises(bextlock.InvalidArgument):
        b.inspect("k" * 1025)
    with pytest.raises(bextlock.InvalidArgument):
        b.inspect(7)  # type: ignore[arg-type]


def test_force_release(backend: Backend, request: pytest.FixtureRequest) -> None:
    a, b = backend.locker(request), backend.locker(request)
    key = unique("py-force")
    try:
        r = b.force_release(key)
    except bextlock.Unsupported as e:
        _unsupported_ok(backend, e)
        return
    assert r == bextlock.ForceReleased(released=False)
    h = a.try_lock(key, 30)
    assert h is not None
    if h.fence is not None:
        assert not b.force_release(key, if_fence=h.fence + 1).released
        assert b.try_lock(key, 30) is None, "a mismatched if_fence broke the lock"
        r = b.force_release(key, if_fence=h.fence)
        assert r == bextlock.ForceReleased(released=True, fence=h.fence)
    else:
        assert b.force_release(key).released
    with pytest.raises(bextlock.BackendError):
        a.renew(h)
    h2 = b.try_lock(key, 30)
    assert h2 is not None
    if h.fence is not None and h2.fence is not None:
        assert h2.fence > h.fence
    a.release(h)  # a no-op for the broken holder
    assert a.try_lock(key, 30) is None
    b.release(h2)
    for bad in (-1, 1.5, "7", True, 2**64):
        with pytest.raises(bextlock.InvalidArgument, match="if_fence"):
            b.force_release(key, if_fence=bad)  # type: ignore[arg-type]
    with pytest.raises(bextlock.InvalidArgument, match="key"):
        b.force_release("")


def test_force_release_signals_an_auto_renewing_lock(request: pytest.FixtureRequest, memory_plugin: bextlock.Plugin) -> None:
    ns = unique("py-force-renewing")
    holder = memory_plugin.create({"namespace": ns})
    operator = memory_plugin.create({"namespace": ns})
    request.addfinalizer(holder.close)
    request.addfinalizer(operator.close)
    key = unique("py-force-renewing")
    lock = holder.lock(key, ttl=0.6)
    assert lock.acquire(blocking=False)
    assert operator.force_release(key, if_fence=lock.fence).released
    lost = lock.wait_lost(timeout=5)
    assert lost is not None, "the broken holder's next renew must signal the loss"
    with pytest.raises(bextlock.LockLost):
        lock.release()


def test_stats_count_every_outcome(backend: Backend, request: pytest.FixtureRequest) -> None:
    locker, other = backend.locker(request), backend.locker(request)
    key = unique("py-stats")
    h = locker.try_lock(key, 10)
    assert h is not None
    assert locker.try_lock(key, 10) is None
    locker.renew(h)
    with pytest.raises(bextlock.InvalidArgument):
        locker.try_lock("", 1)  # refused by the plugin, so counted
    locker.release(h)
    s = locker.stats()
    assert (s.acquired, s.contended, s.renewed, s.released) == (1, 1, 1, 1), s
    assert s.errors["invalid_argument"] == 1 and s.renew_failures == 0, s
    assert sum(s.latency.try_lock) == 3 and len(s.latency.try_lock) == len(s.latency.bounds_us) + 1
    assert sum(s.latency.renew) == 1 and sum(s.latency.release) == 1
    assert other.stats().acquired == 0, "counters are per instance"
    text = s.to_prometheus(backend.plugin.name, {"instance": "py"})
    assert f'bext_locking_acquired_total{{plugin="{backend.plugin.name}",instance="py"}} 1\n' in text


def test_async_variants(memory_plugin: bextlock.Plugin, request: pytest.FixtureRequest) -> None:
    ns = unique("py-admin-async")
    a, b = memory_plugin.create({"namespace": ns}), memory_plugin.create({"namespace": ns})
    request.addfinalizer(a.close)
    request.addfinalizer(b.close)
    key = unique("py-admin-async")

    async def main() -> None:
        h = await a.atry_lock(key, 10, owner="py-async")
        assert h is not None
        info = await b.ainspect(key)
        assert info.held and info.owner == "py-async"
        assert (await b.aforce_release(key, h.fence)).released
        assert (await b.astats()).force_released == 1

    asyncio.run(main())


def test_prometheus_text() -> None:
    bounds = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000,
              100000, 200000, 500000, 1000000, 2000000, 5000000)
    zeros = (0,) * (len(bounds) + 1)
    try_lock = list(zeros)
    try_lock[0], try_lock[2], try_lock[-1] = 1, 2, 1
    s = bextlock.Stats(
        acquired=3, contended=2, errors={"backend": 4, "timeout": 2}, renewed=0, renew_failures=1,
        released=0, force_released=0,
        latency=bextlock.Latencies(bounds_us=bounds, try_lock=tuple(try_lock), renew=zeros, release=zeros),
    )
    lines = s.to_prometheus("redis", {"instance": 'a"b'}).splitlines()
    base = 'plugin="redis",instance="a\\"b"'
    for want in [
        "# TYPE bext_locking_acquired_total counter",
        f"bext_locking_acquired_total{{{base}}} 3",
        f"bext_locking_renew_failures_total{{{base}}} 1",
        f'bext_locking_errors_total{{{base},code="backend"}} 4',
        f'bext_locking_errors_total{{{base},code="panic"}} 0',
        f'bext_locking_errors_total{{{base},code="timeout"}} 2',
        "# TYPE bext_locking_call_duration_seconds histogram",
        f'bext_locking_call_duration_seconds_bucket{{{base},call="try_lock",le="0.000001"}} 1',
        f'bext_locking_call_duration_seconds_bucket{{{base},call="try_lock",le="0.00002"}} 3',
        f'bext_locking_call_duration_seconds_bucket{{{base},call="try_lock",le="5"}} 3',
        f'bext_locking_call_duration_seconds_bucket{{{base},call="try_lock",le="+Inf"}} 4',
        f'bext_locking_call_duration_seconds_count{{{base},call="try_lock"}} 4',
        f'bext_locking_call_duration_seconds_count{{{base},call="release"}} 0',
    ]:
        assert want in lines, want
    assert sum("_bucket{" in line for line in lines) == 3 * len(zeros)
    for bad in ("1st", "le", "a-b", ""):
        with pytest.raises(ValueError):
            s.to_prometheus("redis", {bad: "x"})


@pytest.fixture(scope="module")
def abi_1_0_plugin() -> bextlock.Plugin:
    path = lib_path("fixture-abi-1-0")
    assert path.exists(), f"{path} is missing: cargo build -p bext-locking-fixture-abi-1-0 (make python-test does)"
    return bextlock.open(str(path))


def test_a_1_0_plugin_loads_and_its_1_0_slots_work(abi_1_0_plugin: bextlock.Plugin, request: pytest.FixtureRequest) -> None:
    p = abi_1_0_plugin
    assert p.struct_size == _abi.VTABLE_V1_SIZE and p.abi_minor == 0
    d = p.describe()
    assert d.abi_minor == 0 and d.capabilities == ()
    ns = unique("py-abi-1-0")
    a, b = p.create({"namespace": ns}), p.create({"namespace": ns})
    request.addfinalizer(a.close)
    request.addfinalizer(b.close)
    key = unique("py-abi-1-0")
    h = a.try_lock(key, 10)  # sends the default owner, which a 1.0 plugin ignores
    assert h is not None and b.try_lock(key, 10) is None
    a.renew(h)
    with a.lock(unique("py-abi-1-0-lock"), ttl="2s") as held:
        assert held.locked()
    a.release(h)
    h = b.try_lock(key, 1)
    assert h is not None
    b.release(h)


def test_a_1_0_plugin_s_missing_slots_raise_unsupported(abi_1_0_plugin: bextlock.Plugin, request: pytest.FixtureRequest) -> None:
    p = abi_1_0_plugin
    for slot in ("inspect", "force_release", "stats"):
        assert not p.has_slot(slot)
    locker = p.create({"namespace": unique("py-abi-1-0")})
    request.addfinalizer(locker.close)
    key = unique("py-abi-1-0")
    h = locker.try_lock(key, 10)
    assert h is not None
    calls = {
        "inspect": lambda: locker.inspect(key),
        "force_release": lambda: locker.force_release(key),
        "stats": locker.stats,
    }
    for slot, call in calls.items():
        with pytest.raises(bextlock.Unsupported) as info:
            call()
        e = info.value
        assert isinstance(e, bextlock.LockError) and e.op == slot and e.code == "unsupported"
        assert e.status == _abi.ERR_UNSUPPORTED
        assert str(e).startswith(f"{p.name}: {slot}: plugin `{p.name}` (ABI 1.0) has no `{slot}` slot"), str(e)
    with pytest.raises(bextlock.Unsupported):
        asyncio.run(locker.ainspect(key))
    # Nothing was called: the lock is still held and renews.
    locker.renew(h)
    locker.release(h)
    locker.close()
    with pytest.raises(bextlock.LockerClosed):
        locker.inspect(key)


def test_unsupported_status_maps_to_unsupported() -> None:
    from bextlock._status import status_error

    e = status_error("redis", "inspect", _abi.ERR_UNSUPPORTED, b'{"code":"unsupported","message":"no"}')
    assert type(e) is bextlock.Unsupported and e.code == "unsupported" and e.message == "no"
    e = status_error("redis", "inspect", -5, b'{"code":"later","message":"new"}')
    assert type(e) is bextlock.ProtocolError
