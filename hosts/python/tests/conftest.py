"""Shared fixtures: where the plugin files are, and every backend's server.

The plugin files are found in ``$BEXT_TARGET_DIR`` (set by ``make
python-test``), else ``$CARGO_TARGET_DIR/debug``, else the repository's
``target/debug``. The memory backend must be built; every other backend is
tested when its library is built and its server answers, and skipped with
the reason otherwise: Redis at ``BEXT_REDIS_URL`` (default
``redis://127.0.0.1:6379``), PostgreSQL at ``BEXT_PG_URL`` (default
``postgres://root@127.0.0.1:5432/test``), and etcd at
``BEXT_ETCD_ENDPOINT`` or a private ``etcd`` started on free loopback ports.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest

import bextlock

HERE = Path(__file__).resolve().parent


def target_dir() -> Path:
    if os.environ.get("BEXT_TARGET_DIR"):
        return Path(os.environ["BEXT_TARGET_DIR"])
    if os.environ.get("CARGO_TARGET_DIR"):
        return Path(os.environ["CARGO_TARGET_DIR"]) / "debug"
    return HERE.parent.parent.parent / "target" / "debug"


def lib_path(name: str) -> Path:
    """The library of a backend ("memory") or fixture ("fixture-panicky")."""
    return target_dir() / "libbext_locking_{}.so".format(name.replace("-", "_"))


def optional_lib(name: str) -> Path:
    p = lib_path(name)
    if not p.exists():
        pytest.skip(f"{p} is not built (cargo build -p bext-locking-{name})")
    return p


_counter = itertools.count()


def unique(prefix: str) -> str:
    """A name unique across tests and runs, for keys on shared servers."""
    return f"{prefix}/py-{os.getpid()}-{time.time_ns()}-{next(_counter)}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reachable(url: str, default_port: int) -> Optional[str]:
    """None when a TCP connection to the URL's host succeeds, else why not."""
    u = urllib.parse.urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or default_port
    try:
        with socket.create_connection((host, port), timeout=2):
            return None
    except OSError as e:
        return f"{host}:{port}: {e}"


@pytest.fixture(scope="session")
def memory_plugin() -> bextlock.Plugin:
    p = lib_path("memory")
    if not p.exists():
        pytest.fail(f"{p} is missing: run `cargo build -p bext-locking-memory` (make python-test does)")
    return bextlock.open(str(p))


class Etcd:
    """A private single-member etcd on free loopback ports."""

    def __init__(self) -> None:
        binary = shutil.which("etcd") or ("/usr/bin/etcd" if os.path.exists("/usr/bin/etcd") else None)
        if binary is None:
            pytest.skip("etcd is not installed and BEXT_ETCD_ENDPOINT is not set")
        root = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.dir = tempfile.mkdtemp(prefix="bextlock-py-etcd-", dir=root)
        self.endpoint = f"http://127.0.0.1:{free_port()}"
        peer = f"http://127.0.0.1:{free_port()}"
        self.log = open(os.path.join(self.dir, "etcd.log"), "wb")
        self.proc = subprocess.Popen(
            [binary, "--name", "py-test", "--data-dir", os.path.join(self.dir, "data"),
             "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"py-test={peer}",
             # Leaders settle fast and the shortest lease is 1 s.
             "--heartbeat-interval", "50", "--election-timeout", "500", "--log-level", "error"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while reachable(self.endpoint, 2379) is not None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"etcd did not start on {self.endpoint}")
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def etcd_endpoint() -> Iterator[str]:
    if os.environ.get("BEXT_ETCD_ENDPOINT"):
        yield os.environ["BEXT_ETCD_ENDPOINT"]
        return
    server = Etcd()
    try:
        yield server.endpoint
    finally:
        server.stop()


@dataclass
class Backend:
    """One backend as a test reaches it: ``config()`` gives configs whose
    Lockers all see the same locks; ``via(host, port)`` the same config
    through another address (a proxy) for backends with a server."""

    name: str
    plugin: bextlock.Plugin
    config: Callable[[], Dict[str, Any]]
    server: Optional[tuple] = None  # (host, port) of the server
    via: Optional[Callable[[int], Dict[str, Any]]] = None

    def locker(self, request: pytest.FixtureRequest, config: Optional[Dict[str, Any]] = None) -> bextlock.Locker:
        locker = self.plugin.create(self.config() if config is None else config)
        request.addfinalizer(locker.close)
        return locker


BACKENDS = ["memory", "sqlite", "redis", "pg", "etcd", "mysql", "nats"]
SERVER_BACKENDS = ["redis", "pg", "etcd", "mysql", "nats"]
REDIS_URL = os.environ.get("BEXT_REDIS_URL", "redis://127.0.0.1:6379")
PG_URL = os.environ.get("BEXT_PG_URL", "postgres://root@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("BEXT_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
NATS_URL = os.environ.get("BEXT_NATS_URL", "nats://127.0.0.1:4222")


def _with_port(url: str, port: int) -> str:
    u = urllib.parse.urlsplit(url)
    netloc = u.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urllib.parse.urlunsplit(u._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


def _server_or_skip(url: str, default_port: int, what: str, variable: str) -> tuple:  # type: ignore[type-arg]
    """The server's (host, port), or a skip saying it does not answer (the
    URL is not shown: it may hold a password)."""
    why = reachable(url, default_port)
    if why:
        pytest.skip(f"no {what} answers at the {variable} host: {why}")
    u = urllib.parse.urlsplit(url)
    return (u.hostname, u.port or default_port)


def make_backend(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if name == "memory":
        plugin = request.getfixturevalue("memory_plugin")
        ns = unique("py-suite")
        return Backend(name, plugin, lambda: {"namespace": ns})
    plugin = bextlock.open(str(optional_lib(name)))
    if name == "sqlite":
        path = str(tmp_path / "locks.db")
        return Backend(name, plugin, lambda: {"path": path})
    if name == "redis":
        return Backend(
            name, plugin, lambda: {"url": REDIS_URL},
            server=_server_or_skip(REDIS_URL, 6379, "Redis", "BEXT_REDIS_URL"),
            via=lambda port: {"url": _with_port(REDIS_URL, port), "op_timeout_ms": 5000},
        )
    if name == "pg":
        return Backend(
            name, plugin, lambda: {"url": PG_URL},
            server=_server_or_skip(PG_URL, 5432, "PostgreSQL", "BEXT_PG_URL"),
            via=lambda port: {"url": _with_port(PG_URL, port), "statement_timeout_ms": 5000, "pool_size": 2},
        )
    if name == "mysql":
        return Backend(
            name, plugin, lambda: {"url": MYSQL_URL},
            server=_server_or_skip(MYSQL_URL, 3306, "MySQL/MariaDB", "BEXT_MYSQL_URL"),
            via=lambda port: {"url": _with_port(MYSQL_URL, port), "statement_timeout_ms": 5000, "pool_size": 2},
        )
    if name == "etcd":
        endpoint = request.getfixturevalue("etcd_endpoint")
        prefix = unique("bext-py-test") + "/"
        u = urllib.parse.urlsplit(endpoint)
        return Backend(
            name, plugin, lambda: {"endpoints": [endpoint], "key_prefix": prefix},
            server=(u.hostname, u.port),
            via=lambda port: {"endpoints": [f"http://127.0.0.1:{port}"], "key_prefix": prefix,
                              "op_timeout_ms": 5000},
        )
    if name == "nats":
        prefix = unique("bext_py").replace("-", "_").replace("/", "_")
        return Backend(
            name, plugin, lambda: {"servers": [NATS_URL], "bucket_prefix": prefix},
            server=_server_or_skip(NATS_URL, 4222, "NATS", "BEXT_NATS_URL"),
            via=lambda port: {"servers": [f"nats://127.0.0.1:{port}"], "bucket_prefix": prefix,
                              "op_timeout_ms": 5000},
        )
    raise AssertionError(name)


def _backends_fixture(name: str, names: List[str]) -> Any:
    @pytest.fixture(params=names, name=name)
    def fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
        return make_backend(request.param, request, tmp_path)

    return fixture


#: Every backend.
backend = _backends_fixture("backend", BACKENDS)
#: Backends with a server (a proxy can stand between).
server_backend = _backends_fixture("server_backend", SERVER_BACKENDS)
#: Backends whose locks other processes see.
shared_backend = _backends_fixture("shared_backend", [b for b in BACKENDS if b != "memory"])


def wait_for(predicate: Callable[[], Any], within: float, step: float = 0.02) -> Any:
    """Polls ``predicate`` until it is truthy or ``within`` seconds pass."""
    deadline = time.monotonic() + within
    while True:
        got = predicate()
        if got or time.monotonic() >= deadline:
            return got
        time.sleep(step)


def short_ttl(b: Backend) -> float:
    """A TTL the backend honours (etcd never grants less than 1 s)."""
    return 1.0 if b.name == "etcd" else 0.2


def expiry_wait(b: Backend) -> float:
    """How long an expired short lock may take to become free."""
    return 15.0 if b.name == "etcd" else 5.0


@contextlib.contextmanager
def python_child(script: str, *args: str) -> "Iterator[subprocess.Popen[str]]":
    """A child Python running ``script`` with ``args``, its stdout piped;
    killed on the way out if it is still running."""
    child = subprocess.Popen(
        [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True, env=python_env()
    )
    try:
        yield child
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def python_env() -> Dict[str, str]:
    """The environment for a child Python that must import bextlock as we do."""
    env = dict(os.environ)
    import bextlock as mod

    src = str(Path(mod.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([src, str(HERE), env.get("PYTHONPATH", "")])
    env.setdefault("RUST_BACKTRACE", "0")
    return env


__all__: List[str] = []
