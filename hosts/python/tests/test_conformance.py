"""The ABI's behaviours through the Python host, against every backend."""

from __future__ import annotations

import json
import time

import pytest

import bextlock
from conftest import Backend, expiry_wait, short_ttl, unique, wait_for


def test_describe(backend: Backend) -> None:
    d = backend.plugin.describe()
    assert d.name == backend.name == backend.plugin.name
    assert d.version == backend.plugin.version
    assert d.abi_version == bextlock.ABI_VERSION
    assert d.description
    assert isinstance(d.config_schema.get("properties"), dict)
    assert d.raw["name"] == backend.name
    assert d.clock_drift.rate >= 0


BAD_CONFIGS = [
    ({"surely_not_a_config_key": 1}, "surely_not_a_config_key"),
    ("{not json", ""),
    ("[1, 2]", ""),
    ('"{}"', ""),
]


@pytest.mark.parametrize("config, named", BAD_CONFIGS, ids=["unknown-key", "bad-json", "array", "string"])
def test_bad_config_is_invalid_argument(backend: Backend, config: object, named: str) -> None:
    with pytest.raises(bextlock.InvalidArgument) as info:
        backend.plugin.create(config)  # type: ignore[arg-type]
    e = info.value
    assert isinstance(e, bextlock.LockError) and isinstance(e, ValueError)
    assert not isinstance(e, bextlock.BackendError)
    assert e.status == -2 and e.code == "invalid_argument" and e.op == "create"
    assert e.plugin == backend.name
    assert named in str(e)


def test_config_the_host_refuses(memory_plugin: bextlock.Plugin) -> None:
    with pytest.raises(bextlock.InvalidArgument, match="cannot be encoded as JSON"):
        memory_plugin.create({"f": object()})
    with pytest.raises(bextlock.InvalidArgument, match="NUL"):
        memory_plugin.create('{"namespace":"a\0b"}')
    with pytest.raises(bextlock.InvalidArgument, match="mapping or JSON text"):
        memory_plugin.create(42)  # type: ignore[arg-type]


def test_contention_is_none_and_stale_handles_are_harmless(backend: Backend, request: pytest.FixtureRequest) -> None:
    a, b = backend.locker(request), backend.locker(request)
    key = unique("lifecycle")
    h1 = a.try_lock(key, 2)
    assert h1 is not None and h1.key == key and h1.lock_id and h1.ttl_ms == 2000
    assert a.try_lock(key, 1) is None, "locks are not reentrant"
    assert b.try_lock(key, 1) is None
    a.renew(h1)
    a.release(h1)

    h2 = b.try_lock(key, "2s")
    assert h2 is not None and h2.lock_id != h1.lock_id
    assert (h1.fence is None) == (h2.fence is None)
    if h1.fence is not None:
        assert h2.fence > h1.fence, "fences must rise"

    a.release(h1)  # stale release: OK, touches nothing
    assert a.try_lock(key, 1) is None
    with pytest.raises(bextlock.BackendError) as info:
        a.renew(h1)  # stale renew: an error, never a re-acquisition
    assert info.value.op == "renew" and info.value.code == "backend"
    b.renew(h2)  # the new holder is intact
    a.release(h2)  # a handle works with any locker that sees the lock
    h3 = a.try_lock(key, 1)
    assert h3 is not None
    if h3.fence is not None:
        assert h3.fence > h2.fence
    a.release(h3)


def test_fences_rise_over_many_acquisitions(backend: Backend, request: pytest.FixtureRequest) -> None:
    lockers = [backend.locker(request) for _ in range(2)]
    key = unique("fences")
    fences = []
    for i in range(10):
        h = lockers[i % 2].try_lock(key, 5)
        assert h is not None
        fences.append(h.fence)
        lockers[i % 2].release(h)
    if fences[0] is not None:
        assert fences == sorted(set(fences)), fences


def test_expiry(backend: Backend, request: pytest.FixtureRequest) -> None:
    a, b = backend.locker(request), backend.locker(request)
    key = unique("expiry")
    h = a.try_lock(key, short_ttl(backend))
    assert h is not None
    h2 = wait_for(lambda: b.try_lock(key, 5), expiry_wait(backend), step=0.1)
    assert h2 is not None, "the expired lock never became free"
    with pytest.raises(bextlock.BackendError):
        a.renew(h)
    assert a.try_lock(key, 1) is None, "the failed renew disturbed the new holder"
    b.release(h2)


INVALID = [
    ("empty key", "", 1),
    ("1025-byte key", "k" * 1025, 1),
    ("lone surrogate", "k\ud800", 1),
    ("key not a str", b"bytes", 1),
    ("zero ttl", "k", 0),
    ("negative ttl", "k", -1),
    ("sub-millisecond ttl", "k", 0.0004),
    ("ttl over 365 days", "k", 366 * 86400),
    ("ttl bare number string", "k", "30"),
    ("ttl unknown unit", "k", "3 fortnights"),
    ("ttl nan", "k", float("nan")),
    ("ttl bool", "k", True),
]


@pytest.mark.parametrize("what, key, ttl", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_input(backend: Backend, request: pytest.FixtureRequest, what: str, key: object, ttl: object) -> None:
    locker = backend.locker(request)
    if isinstance(key, str) and key:
        key = unique("inv") + "/" + key if what != "1025-byte key" else key
    with pytest.raises(bextlock.InvalidArgument) as info:
        locker.try_lock(key, ttl)  # type: ignore[arg-type]
    assert not isinstance(info.value, bextlock.BackendError)


def test_owner_over_256_bytes_is_invalid(backend: Backend, request: pytest.FixtureRequest) -> None:
    locker = backend.locker(request)
    with pytest.raises(bextlock.InvalidArgument, match="owner"):
        locker.try_lock(unique("owner"), 1, owner="o" * 257)
    h = locker.try_lock(unique("owner"), 1, owner="ø" * 128)  # 256 bytes
    assert h is not None
    locker.release(h)


def test_awkward_keys_round_trip(backend: Backend, request: pytest.FixtureRequest) -> None:
    locker = backend.locker(request)
    prefix = unique("keys") + "/"
    for key in (prefix + "k" * (1024 - len(prefix)), prefix + 'ключ/✓ "quoted" \\ <tag> \0 nul'):
        h = locker.try_lock(key, 1)
        assert h is not None and h.key == key
        locker.renew(h)
        locker.release(h)


def test_handle_json_round_trip(backend: Backend, request: pytest.FixtureRequest) -> None:
    a, b = backend.locker(request), backend.locker(request)
    key = unique("json")
    h = a.try_lock(key, 5)
    assert h is not None
    text = h.to_json()
    fields = json.loads(text)
    assert fields["key"] == key and fields["lock_id"] == h.lock_id
    copy = bextlock.Handle.from_json(text)
    assert copy == h and copy.fence == h.fence and copy.ttl == 5.0
    assert h.lock_id not in repr(h), "repr must not reveal the lock id"
    # A field this host does not know travels to the plugin, which ignores it.
    extended = bextlock.Handle.from_json(text[:-1] + ',"x_python_host":{"note":[1,2]}}')
    b.renew(extended)
    b.release(copy)
    again = a.try_lock(key, 1)
    assert again is not None
    a.release(again)
    for bad in ("{}", '{"key":"k","ttl_ms":5}', "[1]", '{"key":"k","lock_id":"x"}', "not json"):
        with pytest.raises(bextlock.InvalidArgument):
            bextlock.Handle.from_json(bad)
    with pytest.raises(bextlock.InvalidArgument):
        a.release("not a handle")  # type: ignore[arg-type]


def test_close(backend: Backend, request: pytest.FixtureRequest) -> None:
    locker = backend.plugin.create(backend.config())
    key = unique("close")
    h = locker.try_lock(key, 1)
    assert h is not None
    locker.close()
    locker.close()  # a no-op
    assert locker.closed
    with pytest.raises(bextlock.LockerClosed):
        locker.try_lock(key, 1)
    with pytest.raises(bextlock.LockerClosed):
        locker.renew(h)
    backend.locker(request).release(h)  # another instance can still release it


def test_locker_context_manager(backend: Backend) -> None:
    with backend.plugin.create(backend.config()) as locker:
        h = locker.try_lock(unique("ctx"), 1)
        assert h is not None
        locker.release(h)
    assert locker.closed


def test_unreachable_server_is_backend_error_not_contention(server_backend: Backend) -> None:
    from conftest import free_port

    assert server_backend.via is not None
    config = server_backend.via(free_port())  # nothing listens there
    config.pop("op_timeout_ms", None)
    start = time.monotonic()
    try:
        locker = server_backend.plugin.create(config)
    except bextlock.BackendError:
        return  # refused at create: also right
    try:
        with pytest.raises(bextlock.BackendError):
            locker.try_lock(unique("down"), 1)
    finally:
        locker.close()
    assert time.monotonic() - start < 30
