"""A ``SubscriptionBus`` shared by every worker, on Redis pub/sub (protocol 2026-07-28).

A ``subscriptions/listen`` stream stays on the worker that opened it; the SDK's bus
(``InMemorySubscriptionBus``) fans events out inside one process only. :class:`RedisSubscriptionBus`
publishes each event on one Redis channel and delivers what arrives on that channel to the
listeners of this process, so an event published on any worker reaches the listen streams of
every worker.

Delivery follows the SDK's contract: at most once, no replay. An event published while a
worker is disconnected from Redis is not delivered to that worker; a publish that cannot reach
Redis is logged and dropped (a notification is a hint to refetch, it must not fail the tool
that sent it). A worker that loses the bus logs it and reconnects with a capped exponential
backoff; it never raises into the server.

``redis.asyncio`` is asyncio-only, so the bus runs on asyncio (uvicorn, ``anyio`` on asyncio).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from redis.asyncio import Redis

try:  # mcp 2.x only: the event vocabulary of subscriptions/listen
    from mcp.shared.subscriptions import (
        PromptsListChanged,
        ResourcesListChanged,
        ResourceUpdated,
        ServerEvent,
        ToolsListChanged,
    )
except ImportError:  # pragma: no cover - mcp 1.x: the class exists but refuses to start
    _HAVE_EVENTS = False
else:
    _HAVE_EVENTS = True

__all__ = ["DEFAULT_CHANNEL", "RedisSubscriptionBus"]

logger = logging.getLogger(__name__)

#: The Redis channel used unless one is given; workers of one service must share it.
DEFAULT_CHANNEL: Final = "sessionkeeper-mcp:events"

_KINDS: Final = ("tools_list_changed", "prompts_list_changed", "resources_list_changed")


def _encode(event: ServerEvent) -> str:
    """The JSON text carried on the channel for ``event``."""
    if isinstance(event, ResourceUpdated):
        return json.dumps({"kind": "resource_updated", "uri": event.uri})
    if isinstance(event, ToolsListChanged):
        return json.dumps({"kind": "tools_list_changed"})
    if isinstance(event, PromptsListChanged):
        return json.dumps({"kind": "prompts_list_changed"})
    if isinstance(event, ResourcesListChanged):
        return json.dumps({"kind": "resources_list_changed"})
    raise TypeError(f"RedisSubscriptionBus.publish: not a ServerEvent: {event!r}")


def _decode(data: object) -> ServerEvent | None:
    """The event in a channel message, or ``None`` (logged) when it is not one of ours."""
    try:
        text = data.decode() if isinstance(data, bytes) else data
        found = json.loads(text) if isinstance(text, str) else None
    except (UnicodeDecodeError, ValueError):
        found = None
    if isinstance(found, dict):
        kind = found.get("kind")
        if kind == "resource_updated" and isinstance(found.get("uri"), str):
            return ResourceUpdated(uri=found["uri"])
        if kind in _KINDS and len(found) == 1:
            events: dict[str, ServerEvent] = {
                "tools_list_changed": ToolsListChanged(),
                "prompts_list_changed": PromptsListChanged(),
                "resources_list_changed": ResourcesListChanged(),
            }
            return events[kind]
    logger.warning("RedisSubscriptionBus: ignored a message that is not an event: %.200r", data)
    return None


class RedisSubscriptionBus:
    """``SubscriptionBus`` over Redis pub/sub: pass it as ``MCPServer(subscriptions=...)``.

    :param url: the Redis server, as the redis backend's ``url`` (``redis://host:6379/0``,
        ``rediss://`` for TLS, ``unix://``).
    :param channel: the pub/sub channel; every worker of one service uses the same one, and
        services sharing a Redis server use different ones.
    :param max_backoff: the longest wait, in seconds, between two reconnection attempts.

    The subscriber connection is opened on the first ``subscribe`` (on the running asyncio
    loop) and closed when the last listener unsubscribes, or by :meth:`aclose`.
    """

    def __init__(
        self, url: str, *, channel: str = DEFAULT_CHANNEL, max_backoff: float = 5.0
    ) -> None:
        if not _HAVE_EVENTS:
            raise RuntimeError(
                "RedisSubscriptionBus needs the mcp 2.x SDK (subscriptions/listen, protocol "
                "2026-07-28)"
            )
        if not isinstance(url, str) or not url.strip():
            raise ValueError(f"RedisSubscriptionBus: url must be a Redis URL, got {url!r}")
        if not isinstance(channel, str) or not channel:
            raise ValueError(f"RedisSubscriptionBus: channel must be a non-empty str: {channel!r}")
        if not max_backoff > 0:
            raise ValueError(f"RedisSubscriptionBus: max_backoff must be > 0: {max_backoff!r}")
        from redis.asyncio import Redis

        self._url = url
        self.channel = channel
        self._max_backoff = float(max_backoff)
        self._publisher: Redis = Redis.from_url(url)
        self._listeners: dict[object, Callable[[ServerEvent], None]] = {}
        self._reader: asyncio.Task[None] | None = None
        # Readers cancelled by the last unsubscribe, still closing their connection.
        self._stopping: set[asyncio.Task[None]] = set()
        self._subscribed = asyncio.Event()

    @property
    def connected(self) -> bool:
        """Whether this worker is currently subscribed to the channel (receiving events)."""
        return self._subscribed.is_set()

    async def wait_subscribed(self) -> None:
        """Return once this worker is subscribed to the channel (after a reconnect as well)."""
        await self._subscribed.wait()

    async def publish(self, event: ServerEvent) -> None:
        """Publish ``event`` to every worker's listeners (this one's included, through Redis).

        A Redis failure is logged and the event dropped: at most once, never an error for the
        tool that published it.
        """
        payload = _encode(event)
        try:
            await self._publisher.publish(self.channel, payload)
        except Exception as error:  # the bus's boundary: a lost bus must not fail the caller
            logger.warning("RedisSubscriptionBus: event dropped, Redis unreachable: %s", error)

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        """Register ``listener`` for events from every worker; return an idempotent
        unsubscribe callable. Must be called on the running asyncio loop."""
        token = object()
        self._listeners[token] = listener
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(
                self._read(), name=f"RedisSubscriptionBus({self.channel})"
            )

        def unsubscribe() -> None:
            self._listeners.pop(token, None)
            if not self._listeners and self._reader is not None:
                reader, self._reader = self._reader, None
                reader.cancel()
                self._stopping.add(reader)
                reader.add_done_callback(self._stopping.discard)
                self._subscribed.clear()

        return unsubscribe

    async def aclose(self) -> None:
        """Stop receiving and close the connections (listeners get nothing more)."""
        self._listeners.clear()
        reader, self._reader = self._reader, None
        readers = set(self._stopping) | ({reader} if reader is not None else set())
        for task in readers:
            task.cancel()
        for task in readers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._subscribed.clear()
        await self._publisher.aclose()

    def _deliver(self, event: ServerEvent) -> None:
        for listener in list(self._listeners.values()):
            try:
                listener(event)
            except Exception:  # fan-out boundary: isolate listeners from each other
                logger.exception("RedisSubscriptionBus: a listener raised; continuing")

    async def _read(self) -> None:
        """Receive the channel until cancelled, reconnecting with backoff when Redis is lost."""
        from redis.asyncio import Redis

        delay = 0.05
        while True:
            client: Redis = Redis.from_url(self._url)
            pubsub: Any = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self._subscribed.set()
                if delay > 0.05:
                    logger.warning("RedisSubscriptionBus: reconnected to %s", self.channel)
                delay = 0.05
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        event = _decode(message.get("data"))
                        if event is not None:
                            self._deliver(event)
                raise ConnectionError("the subscription ended")
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the bus's boundary: log, back off, reconnect
                self._subscribed.clear()
                logger.warning(
                    "RedisSubscriptionBus: lost the bus (%s); reconnecting in %.2fs", error, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_backoff)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                with contextlib.suppress(Exception):
                    await client.aclose()
