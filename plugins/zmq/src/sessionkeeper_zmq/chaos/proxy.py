"""A userspace TCP fault proxy: one per directed link between two nodes, no root needed.

Node A's connection to node B (A's DEALER to B's ROUTER) goes through the proxy of link
``A -> B``: it carries A's requests to B (*forward*) and B's replies to A (*backward*). Each
direction can be cut (bytes read and thrown away while the TCP connection stays up, as in a real
partition where packets vanish: ZeroMQ notices through its heartbeats) or delayed (every chunk
held for a fixed time plus jitter, order kept). :meth:`LinkProxy.heal` lifts the faults and
resets the connections that went through them, so the nodes reconnect with clean streams (a
CURVE stream with a hole in it is garbage); :meth:`LinkProxy.reset` closes the connections (a
flapping link).

Every proxy of a :class:`ProxyHub` runs on one asyncio loop in a background thread; their
methods can be called from any thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Coroutine
from typing import Any, Final, TypeVar

__all__ = ["LinkProxy", "ProxyHub"]

_CHUNK: Final = 65_536
_T = TypeVar("_T")


class _Connection:
    """One proxied TCP connection: the client side and the upstream (target) side."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream
        self.tasks: list[asyncio.Task[None]] = []

    def close(self) -> None:
        for writer in (self.client, self.upstream):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        for task in self.tasks:
            task.cancel()


class LinkProxy:
    """Listens on ``127.0.0.1:port`` and forwards to ``127.0.0.1:target``, with faults.

    :param hub: the hub whose loop runs it.
    :param target: the port of the node it leads to.
    :param name: for messages (``"a->b"``).
    """

    def __init__(self, hub: ProxyHub, target: int, name: str) -> None:
        self.hub = hub
        self.target = target
        self.name = name
        self.port = 0
        #: Direction -> cut (bytes thrown away).
        self.cut_state = {"forward": False, "backward": False}
        self.delay_ms = 0
        self.jitter_ms = 0
        self.connections: set[_Connection] = set()
        self.accepted = 0
        self.bytes_dropped = 0
        self._server: asyncio.Server | None = None
        self._rng = random.Random()  # noqa: S311 - jitter, not security

    def __repr__(self) -> str:
        return f"<LinkProxy {self.name} :{self.port} -> :{self.target}>"

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:  # the node is down: refuse like it would
            writer.transport.abort()
            return
        self.accepted += 1
        connection = _Connection(writer, up_writer)
        self.connections.add(connection)
        forward = asyncio.ensure_future(self._pump(reader, up_writer, "forward"))
        backward = asyncio.ensure_future(self._pump(up_reader, writer, "backward"))
        connection.tasks = [forward, backward]
        try:
            await asyncio.wait(connection.tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            connection.close()
            self.connections.discard(connection)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: str
    ) -> None:
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        sender = asyncio.ensure_future(self._send(queue, writer))
        try:
            while True:
                data = await reader.read(_CHUNK)
                if not data:
                    break
                if self.cut_state[direction]:
                    self.bytes_dropped += len(data)
                    continue
                delay: float = self.delay_ms
                if self.jitter_ms:
                    delay += self._rng.uniform(0, self.jitter_ms)
                queue.put_nowait((time.monotonic() + delay / 1000, data))
        except (ConnectionError, OSError):
            pass
        finally:
            queue.put_nowait(None)
            with contextlib.suppress(Exception):
                await sender

    @staticmethod
    async def _send(
        queue: asyncio.Queue[tuple[float, bytes] | None], writer: asyncio.StreamWriter
    ) -> None:
        while True:
            item = await queue.get()
            if item is None:
                return
            due, data = item
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()

    def _reset_now(self) -> None:
        for connection in list(self.connections):
            connection.close()

    # -- called from any thread ------------------------------------------------------------------

    def cut(self, *, forward: bool = True, backward: bool = True) -> None:
        """Throw away the bytes of the given directions from now on (connections stay up)."""

        def apply() -> None:
            if forward:
                self.cut_state["forward"] = True
            if backward:
                self.cut_state["backward"] = True

        self.hub.call(apply)

    def set_delay(self, delay_ms: int, jitter_ms: int = 0) -> None:
        """Hold every chunk ``delay_ms`` (+ up to ``jitter_ms``) before passing it on."""

        def apply() -> None:
            self.delay_ms, self.jitter_ms = delay_ms, jitter_ms

        self.hub.call(apply)

    def heal(self) -> None:
        """Lift every fault; connections that lost bytes are reset so the nodes reconnect."""

        def apply() -> None:
            was_cut = any(self.cut_state.values())
            self.cut_state = {"forward": False, "backward": False}
            self.delay_ms = self.jitter_ms = 0
            if was_cut:
                self._reset_now()

        self.hub.call(apply)

    def reset(self) -> None:
        """Close every connection now (the nodes reconnect)."""
        self.hub.call(self._reset_now)

    @property
    def faulty(self) -> bool:
        """True while a direction is cut or delayed."""
        return any(self.cut_state.values()) or bool(self.delay_ms or self.jitter_ms)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._reset_now()


class ProxyHub:
    """An asyncio loop in a daemon thread running any number of :class:`LinkProxy`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.proxies: list[LinkProxy] = []
        self._thread = threading.Thread(target=self._run, name="chaos-proxies", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        # Let cancelled tasks finish, then close (no warnings about pending tasks).
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.close()

    def run(self, coroutine: Coroutine[Any, Any, _T], timeout: float = 30.0) -> _T:
        """Run ``coroutine`` on the hub's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def call(self, function: Any) -> None:
        """Run ``function()`` on the loop and wait for it."""

        async def invoke() -> None:
            function()

        self.run(invoke())

    def add(self, target: int, name: str) -> LinkProxy:
        """A new proxy to ``127.0.0.1:target``, listening on a free port (``.port``)."""
        proxy = LinkProxy(self, target, name)
        self.run(proxy._start())
        self.proxies.append(proxy)
        return proxy

    def close(self) -> None:
        """Close every proxy and stop the loop. Idempotent."""
        if self.loop.is_closed() or not self._thread.is_alive():
            return

        async def close_all() -> None:
            for proxy in self.proxies:
                await proxy._close()

        with contextlib.suppress(Exception):
            self.run(close_all(), timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
