"""The Redis ``SubscriptionBus`` (issue 18, item 3): change notifications cross workers.

Against a real ``redis-server``: an event published on one bus instance (another connection,
another process) reaches the listeners of another; unsubscribing stops delivery; a Redis
restart under a subscription is survived; and, end to end, a resource-updated notification
published by a tool on one ``MCPServer`` reaches a ``subscriptions/listen`` stream opened by the
SDK's own 2.x client on another ``MCPServer``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from skmcp_client import SDK1
from skmcp_procs import _wait_listening, free_port

from sessionkeeper_mcp import RedisSubscriptionBus

pytestmark = pytest.mark.skipif(
    SDK1, reason="subscriptions/listen is protocol 2026-07-28 (mcp 2.x)"
)

#: The longest any one test waits for an event before failing (a hang guard, not a timing claim).
DEADLINE_S = 30


def events() -> Any:
    """The SDK's event vocabulary (mcp 2.x only)."""
    import mcp.shared.subscriptions as found

    return found


def channel() -> str:
    """A channel of this test's own."""
    return "t-" + uuid.uuid4().hex[:12]


class RedisProcess:
    """A ``redis-server`` on a fixed port that a test can kill (SIGKILL) and start again."""

    def __init__(self, folder: Path) -> None:
        from sessionkeeper_redis.testing import find_redis_server

        binary = find_redis_server()
        if binary is None:
            pytest.skip("no redis-server binary")
        self.binary = binary
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_listening(self.port, self.process, "redis-server", self.folder / "none.log")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server of this test's own (the test restarts it)."""
    pytest.importorskip("sessionkeeper_redis")
    server = RedisProcess(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


async def wait_for(received: list[Any], count: int) -> None:
    """Wait until ``received`` holds ``count`` items."""
    with anyio.fail_after(DEADLINE_S):
        while len(received) < count:
            await anyio.sleep(0.01)


PUBLISHER = """
import asyncio, sys
from mcp.shared.subscriptions import ResourceUpdated, ToolsListChanged
from sessionkeeper_mcp import RedisSubscriptionBus

async def main() -> None:
    bus = RedisSubscriptionBus(sys.argv[1], channel=sys.argv[2])
    await bus.publish(ResourceUpdated(uri="res://from-another-process"))
    await bus.publish(ToolsListChanged())
    await bus.aclose()

asyncio.run(main())
"""


class TestRedisSubscriptionBus:
    def test_event_from_another_process_reaches_the_listener(self, redis_url: str) -> None:
        """Events published by a bus in another process arrive, typed and in order, at a
        listener of this process's bus."""
        found = events()
        name = channel()

        async def run() -> list[Any]:
            bus = RedisSubscriptionBus(redis_url, channel=name)
            received: list[Any] = []
            unsubscribe = bus.subscribe(received.append)
            try:
                await bus.wait_subscribed()
                publisher = await anyio.run_process(
                    [sys.executable, "-c", PUBLISHER, redis_url, name],
                    env={**os.environ},
                    check=False,
                )
                assert publisher.returncode == 0, publisher.stderr.decode()
                await wait_for(received, 2)
            finally:
                unsubscribe()
                await bus.aclose()
            return received

        assert anyio.run(run) == [
            found.ResourceUpdated(uri="res://from-another-process"),
            found.ToolsListChanged(),
        ]

    def test_unsubscribe_stops_delivery_and_channels_are_separate(self, redis_url: str) -> None:
        """After unsubscribe a listener gets nothing more while others keep receiving; an
        event on another channel reaches no one; junk on the channel is ignored."""
        found = events()
        name = channel()

        async def run() -> tuple[list[Any], list[Any]]:
            publisher = RedisSubscriptionBus(redis_url, channel=name)
            other = RedisSubscriptionBus(redis_url, channel=name + "-other")
            subscriber = RedisSubscriptionBus(redis_url, channel=name)
            first: list[Any] = []
            second: list[Any] = []
            drop_first = subscriber.subscribe(first.append)
            drop_second = subscriber.subscribe(second.append)
            try:
                await subscriber.wait_subscribed()
                await publisher.publish(found.ResourceUpdated(uri="res://1"))
                await wait_for(second, 1)
                drop_first()
                drop_first()  # idempotent
                await other.publish(found.ResourceUpdated(uri="res://elsewhere"))
                await publisher._publisher.publish(name, b"\xff not json")
                await publisher._publisher.publish(name, '{"kind": "resource_updated"}')
                await publisher.publish(found.ResourceUpdated(uri="res://2"))
                await wait_for(second, 2)
            finally:
                drop_second()
                for bus in (publisher, other, subscriber):
                    await bus.aclose()
            return first, second

        first, second = anyio.run(run)
        assert first == [found.ResourceUpdated(uri="res://1")]
        assert second == [
            found.ResourceUpdated(uri="res://1"),
            found.ResourceUpdated(uri="res://2"),
        ]

    def test_a_redis_restart_is_survived(
        self, own_redis: RedisProcess, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Redis killed (SIGKILL) and restarted under a subscription: the subscriber logs the
        loss, reconnects, and receives events published after the restart; a publish while
        Redis is down is dropped without an error."""
        found = events()
        name = channel()

        async def run() -> list[Any]:
            publisher = RedisSubscriptionBus(own_redis.url, channel=name)
            subscriber = RedisSubscriptionBus(own_redis.url, channel=name, max_backoff=0.2)
            received: list[Any] = []
            unsubscribe = subscriber.subscribe(received.append)
            try:
                await subscriber.wait_subscribed()
                await publisher.publish(found.ResourceUpdated(uri="res://before"))
                await wait_for(received, 1)
                own_redis.kill()
                with anyio.fail_after(DEADLINE_S):
                    while subscriber.connected:
                        await anyio.sleep(0.01)
                await publisher.publish(found.ResourceUpdated(uri="res://while-down"))
                own_redis.start()
                await subscriber.wait_subscribed()
                await publisher.publish(found.ResourceUpdated(uri="res://after"))
                await wait_for(received, 2)
            finally:
                unsubscribe()
                await publisher.aclose()
                await subscriber.aclose()
            return received

        assert anyio.run(run) == [
            found.ResourceUpdated(uri="res://before"),
            found.ResourceUpdated(uri="res://after"),
        ]
        messages = [record.getMessage() for record in caplog.records]
        assert any("lost the bus" in text for text in messages)
        assert any("event dropped" in text for text in messages)

    def test_bad_arguments_are_refused(self) -> None:
        """A missing URL or channel, or a non-positive backoff, is refused by name."""
        with pytest.raises(ValueError, match="url"):
            RedisSubscriptionBus("")
        with pytest.raises(ValueError, match="channel"):
            RedisSubscriptionBus("redis://127.0.0.1:1/0", channel="")
        with pytest.raises(ValueError, match="max_backoff"):
            RedisSubscriptionBus("redis://127.0.0.1:1/0", max_backoff=0)


class TestAcrossMCPServers:
    def test_resource_updated_on_one_worker_reaches_a_listen_stream_on_another(
        self, redis_url: str
    ) -> None:
        """Two MCPServer workers, each on its own RedisSubscriptionBus: a tool on worker B
        publishes resource-updated; the SDK 2.x client listening on worker A receives it."""
        from bus_app import build_server
        from mcp.client import Client

        found = events()
        name = channel()

        async def run() -> Any:
            bus_a = RedisSubscriptionBus(redis_url, channel=name)
            bus_b = RedisSubscriptionBus(redis_url, channel=name)
            worker_a, worker_b = build_server(bus_a), build_server(bus_b)
            try:
                async with (
                    Client(worker_a) as listener,
                    Client(worker_b) as caller,
                    listener.listen(resource_subscriptions=["res://x"]) as sub,
                ):
                    await bus_a.wait_subscribed()
                    await caller.call_tool("touch", {"uri": "res://x"})
                    with anyio.fail_after(DEADLINE_S):
                        async for event in sub:
                            return event
            finally:
                await bus_a.aclose()
                await bus_b.aclose()
            return None

        assert anyio.run(run) == found.ResourceUpdated(uri="res://x")
