"""A TCP proxy on loopback that cuts the connections through it at random, for fault tests.

Each connection lives a random time (calls in flight on it, long polls above all, die with it),
and each piece of data it carries is, with probability ``drop``, never passed on: the
connection is cut instead, so a request never arrives, or an answer the server sent never
reaches the client. Random choices come from one seeded generator.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
from dataclasses import dataclass

JOIN_TIMEOUT = 5.0


@dataclass
class Cuts:
    connections: int = 0
    expired: int = 0  # cut when their lifetime ran out
    dropped: int = 0  # cut instead of passing data on


class ChaosProxy:
    def __init__(
        self,
        upstream: str,
        *,
        seed: int,
        drop: float = 0.02,
        lifetime: tuple[float, float] = (0.5, 3.0),
    ) -> None:
        host, _, port = upstream.rpartition(":")
        self._upstream = (host.strip("[]"), int(port))
        self._random = random.Random(seed)
        self._random_lock = threading.Lock()
        self._drop = drop
        self._lifetime = lifetime
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self.cuts = Cuts()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._acceptor = threading.Thread(target=self._accept, name="chaos-accept", daemon=True)

    def start(self) -> ChaosProxy:
        self._acceptor.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _close(sock)
        self._acceptor.join(JOIN_TIMEOUT)
        for thread in self._threads:
            thread.join(JOIN_TIMEOUT)

    def _uniform(self, low: float, high: float) -> float:
        with self._random_lock:
            return self._random.uniform(low, high)

    def _dropping(self) -> bool:
        with self._random_lock:
            return self._random.random() < self._drop

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self._upstream, timeout=JOIN_TIMEOUT)
            except OSError:
                _close(client)
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets.update((client, server))
                self.cuts.connections += 1
            pair = (client, server)
            timer = threading.Timer(self._uniform(*self._lifetime), self._cut, (pair, "expired"))
            timer.daemon = True
            timer.start()
            for source, target in ((client, server), (server, client)):
                pump = threading.Thread(
                    target=self._pump, args=(source, target, pair), name="chaos-pump", daemon=True
                )
                pump.start()
                self._threads.append(pump)
            self._threads = [t for t in self._threads if t.is_alive()]

    def _pump(
        self, source: socket.socket, target: socket.socket, pair: tuple[socket.socket, ...]
    ) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                break
            if not data:
                break
            if self._dropping():
                self._cut(pair, "dropped")
                return
            try:
                target.sendall(data)
            except OSError:
                break
        self._cut(pair, "")

    def _cut(self, pair: tuple[socket.socket, ...], why: str) -> None:
        with self._lock:
            alive = [sock for sock in pair if sock in self._sockets]
            self._sockets.difference_update(pair)
            if alive and why:
                setattr(self.cuts, why, getattr(self.cuts, why) + 1)
        for sock in alive:
            _close(sock)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
