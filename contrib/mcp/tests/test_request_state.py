"""Single-use ``requestState`` (issue 18): a sealed multi-round-trip state is accepted once,
whichever server instance sees it, with the SDK's own invalid-state error for a replay. Driven
by the SDK's own 2.x client (protocol 2026-07-28) against ``MCPServer`` instances in process."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from skmcp_client import SDK1

from sessionkeeper import AsyncSessionManager, Config, Unsupported
from sessionkeeper.testing import ManualClock
from sessionkeeper_mcp import McpStores, SingleUseRequestStateCodec

pytestmark = pytest.mark.skipif(SDK1, reason="requestState is protocol 2026-07-28 (mcp 2.x)")

KEY = b"k" * 32


@pytest.fixture
def redis_config(redis_url: str) -> Config:
    """A config on the shared Redis server, tables of this test's own (the test opens and
    closes the stores on its own event loop: the redis backend's asyncio client belongs to the
    loop that first used it)."""
    table = "q" + uuid.uuid4().hex[:10]
    return Config.from_mapping(
        {"backend": "redis", "backend_opts": {"url": redis_url, "table_name": table}}
    )


def build_server(codec: Any) -> Any:
    """An MCPServer whose ``greet`` tool elicits a name (one extra round trip)."""
    from rs_app import build_server as build

    return build(codec)


def sdk_codec() -> Any:
    """The SDK's own codec under the key every instance shares."""
    from mcp.server.request_state import AESGCMRequestStateCodec

    return AESGCMRequestStateCodec([KEY])


async def elicit(_ctx: Any, _params: Any) -> Any:
    import mcp_types

    return mcp_types.ElicitResult(action="accept", content={"name": "ann"})


async def first_round(server: Any) -> tuple[str, dict[str, Any]]:
    """Call ``greet`` on ``server``: the sealed requestState and the answers for the retry."""
    import mcp_types
    from mcp import Client

    async with Client(server, elicitation_callback=elicit) as client:
        assert client.protocol_version == "2026-07-28"
        result = await client.session.call_tool("greet", {}, allow_input_required=True)
    assert isinstance(result, mcp_types.InputRequiredResult)
    assert result.request_state is not None
    answers = {
        key: mcp_types.ElicitResult(action="accept", content={"name": "ann"})
        for key in result.input_requests or {}
    }
    return result.request_state, answers


async def retry(server: Any, state: str, answers: dict[str, Any]) -> str:
    """Retry ``greet`` on ``server`` with ``state``: its text, or ``error <code> <message>``."""
    from mcp import Client
    from mcp.shared.exceptions import MCPError

    async with Client(server, elicitation_callback=elicit) as client:
        try:
            result = await client.session.call_tool(
                "greet", {}, input_responses=answers, request_state=state,
                allow_input_required=True,
            )  # fmt: skip
        except MCPError as error:
            return f"error {error.error.code} {error.error.message}"
    text: str = result.content[0].text
    return text


class TestSingleUse:
    """Each requestState completes one retry, on whichever instance it lands."""

    def test_stock_sdk_accepts_a_replay(self) -> None:
        """Baseline: with the SDK's codec alone, a second instance sharing the keys accepts
        the same requestState again (the hole this codec closes)."""

        async def body() -> None:
            a, b = build_server(sdk_codec()), build_server(sdk_codec())
            state, answers = await first_round(a)
            assert await retry(a, state, answers) == "hello ann"
            assert await retry(b, state, answers) == "hello ann"

        anyio.run(body)

    def test_replay_on_another_instance_is_refused(self, redis_config: Config) -> None:
        """Two instances sharing keys and a Redis store: the retry completes on A; the same
        requestState replayed on B (and on A) gets the SDK's own invalid-state error, exactly
        what a forged token gets."""

        async def body() -> None:
            async with McpStores.from_settings(redis_config) as redis_stores:
                await replays(redis_stores)

        async def replays(redis_stores: McpStores) -> None:
            a = build_server(SingleUseRequestStateCodec(sdk_codec(), redis_stores))
            b = build_server(SingleUseRequestStateCodec(sdk_codec(), redis_stores))
            state, answers = await first_round(a)
            assert await retry(a, state, answers) == "hello ann"
            forged = await retry(b, "v1.forged", answers)
            assert forged == "error -32602 Invalid or expired requestState"
            assert await retry(b, state, answers) == forged
            assert await retry(a, state, answers) == forged
            other_state, other_answers = await first_round(b)  # a fresh state still works
            assert await retry(a, other_state, other_answers) == "hello ann"

        anyio.run(body)

    def test_concurrent_retries_complete_once(self, redis_config: Config) -> None:
        """Six retries of one requestState at once, spread over two instances: exactly one
        completes, the others are refused."""

        async def body() -> None:
            async with McpStores.from_settings(redis_config) as redis_stores:
                await retries(redis_stores)

        async def retries(redis_stores: McpStores) -> None:
            servers = [
                build_server(SingleUseRequestStateCodec(sdk_codec(), redis_stores))
                for _ in range(2)
            ]
            state, answers = await first_round(servers[0])
            results: list[str] = []

            async def one(n: int) -> None:
                results.append(await retry(servers[n % 2], state, answers))

            async with anyio.create_task_group() as group:
                for n in range(6):
                    group.start_soon(one, n)
            assert sorted(results) == ["error -32602 Invalid or expired requestState"] * 5 + [
                "hello ann"
            ]

        anyio.run(body)


class TestCodec:
    """The wrapper's own rules."""

    def test_record_lives_as_long_as_the_token_plus_skew(self) -> None:
        """The record of a used token expires at the token's ``exp`` plus ``clock_skew``;
        a payload already past ``exp`` (which the SDK refuses) is not recorded."""
        from mcp.server.request_state import InvalidRequestState

        clock = ManualClock()
        wall = [1_000.0]

        async def body() -> None:
            async with AsyncSessionManager(
                backend_opts={"table_name": "c" + uuid.uuid4().hex}, clock=clock
            ) as manager:
                codec = SingleUseRequestStateCodec(
                    sdk_codec(), manager, clock_skew=5, now=lambda: wall[0]
                )
                token = codec.seal(b'{"v":1,"exp":1010.0}')
                assert codec.unseal(token) == b'{"v":1,"exp":1010.0}'
                [record] = await manager.list()
                assert (await manager.peek(record)).timeout_ms == 15_000
                with pytest.raises(InvalidRequestState, match="replayed"):
                    codec.unseal(token)
                clock.advance(15_001)  # the record is gone; by then the token is long expired
                assert await manager.list() == []
                late = codec.seal(b'{"v":1,"exp":999.0}')
                assert codec.unseal(late) == b'{"v":1,"exp":999.0}'
                assert codec.unseal(late) == b'{"v":1,"exp":999.0}'  # the SDK refuses it
                assert await manager.list() == []

        anyio.run(body)

    def test_bad_arguments_are_refused(self) -> None:
        """Something that is not a codec, or a negative skew, is refused naming it."""

        async def body() -> None:
            async with AsyncSessionManager(
                backend_opts={"table_name": "b" + uuid.uuid4().hex}
            ) as m:
                with pytest.raises(TypeError, match="seal"):
                    SingleUseRequestStateCodec(object(), m)
                with pytest.raises(ValueError, match="clock_skew"):
                    SingleUseRequestStateCodec(sdk_codec(), m, clock_skew=-1)

        anyio.run(body)

    def test_a_store_without_atomic_is_refused(self, tmp_path: Path) -> None:
        """On a backend without ``atomic`` (a one-node zmq cluster) the codec cannot keep its
        promise, so building it raises Unsupported naming the backend."""
        testing = pytest.importorskip("sessionkeeper_zmq.testing")
        opts = testing.cluster_opts(tmp_path, 1, curve=False)[0]
        stores = McpStores.from_settings(
            Config.from_mapping({"backend": "zmq", "backend_opts": opts, "cleanup_interval": 0})
        )

        async def body() -> None:
            async with stores:
                with pytest.raises(Unsupported, match="zmq"):
                    SingleUseRequestStateCodec(sdk_codec(), stores)

        anyio.run(body)
