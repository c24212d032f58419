"""A TCP proxy for fault tests: forwards loopback connections to a server
and can freeze, i.e. stop forwarding in both directions while keeping every
connection open, the way a stalled network path or a frozen server looks to
a client (its requests are accepted by the kernel and never answered)."""

from __future__ import annotations

import select
import socket
import threading
from typing import List, Tuple


class Proxy:
    """``Proxy(("127.0.0.1", 6379))`` listens on ``127.0.0.1:<port>``."""

    def __init__(self, upstream: Tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        self._sockets: List[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def freeze(self) -> None:
        """Stops forwarding; connections stay open, bytes wait."""
        self._flowing.clear()

    def thaw(self) -> None:
        """Forwards again, including what waited."""
        self._flowing.set()

    def close(self) -> None:
        """Closes the listener and every connection."""
        self._closed.set()
        self._flowing.set()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in [self._listener, *sockets]:
            try:
                s.close()
            except OSError:
                pass

    def __enter__(self) -> "Proxy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets += [client, server]
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), name="proxy-pump", daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self._closed.is_set():
                # While frozen nothing is read, so the kernel buffers fill
                # and the peer sees a connection that simply stopped.
                self._flowing.wait()
                ready, _, _ = select.select([src], [], [], 0.05)
                if not ready or not self._flowing.is_set():
                    continue
                data = src.recv(65536)
                if not data:
                    break
                self._flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
