"""MCP on protocol 2026-07-28 (issue 18): sessionkeeper-mcp beside the stock SDK, in one run.

Both sides are an ``mcp`` 2.x ``MCPServer`` driven in process by the SDK's own ``Client`` (its
default mode, protocol 2026-07-28), so each figure is a whole tool call through the SDK:

- **handle tool call**: ``add(handle, amount)`` whose state is behind a state handle
  (:class:`~sessionkeeper_mcp.Handles`: the ``Resolve`` dependency reads it, ``update`` writes
  it atomically) against the stock SDK's same tool on a dict in the process (the floor: state
  that no other worker sees and that a restart loses).
- **requestState round**: a multi-round-trip tool (one elicitation: the first call answers
  ``InputRequiredResult`` with a sealed ``requestState``, the retry completes) with
  :class:`~sessionkeeper_mcp.SingleUseRequestStateCodec` recording each token once, against the
  SDK's own ``AESGCMRequestStateCodec`` alone (which does not stop a replay).

Each on memory, sqlitedict (one owning process; and ``shared = true``, the mode of several worker
processes on one host) and Redis (when a ``redis-server`` is found). No targets: the ratio says
what the shared store costs per call. Run ``python tests/benchmarks/bench_mcp.py [--quick]
[--json PATH]``. (No ``from __future__ import annotations``: the SDK reads the tools'
annotations.)
"""

import asyncio
import contextlib
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import _bench
import _redis_server
import attrs

from sessionkeeper import Config, __version__

KEY = b"k" * 32


@attrs.frozen
class Sizes:
    calls: int
    repeats: int


def _sdk() -> tuple[Any, Any, Any, Any]:
    """The SDK names the benchmark needs (mcp 2.x only)."""
    from mcp import Client
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.resolve import Resolve
    from mcp.server.request_state import AESGCMRequestStateCodec

    return Client, MCPServer, Resolve, AESGCMRequestStateCodec


def handle_server(handles: Any) -> Any:
    """``add`` on a state handle (``handles``), or on a dict in the process (``None``)."""
    from sessionkeeper_mcp import Handle

    _, server_class, resolve, _ = _sdk()
    server = server_class("bench-handles")
    if handles is None:
        state: dict[str, dict[str, int]] = {}

        @server.tool()
        async def add(handle: str, amount: int) -> int:
            """Add ``amount`` to the counter ``handle`` (in this process only)."""
            counter = state.setdefault(handle, {"n": 0})
            counter["n"] += amount
            return counter["n"]

    else:

        @server.tool()
        async def add(
            handle: str, amount: int, counter: Annotated[Handle, resolve(handles.resolve_arg)]
        ) -> int:
            """Add ``amount`` to the counter behind ``handle``, atomically."""
            stored = await handles.update(counter, lambda s: {**s, "n": s["n"] + amount})
            return int(stored.state["n"])

    return server


def greet_server(codec: Any) -> Any:
    """A multi-round-trip tool whose ``requestState`` is sealed by ``codec``."""
    from mcp.server.mcpserver.resolve import Elicit
    from mcp.server.request_state import RequestStateSecurity
    from pydantic import BaseModel

    class Name(BaseModel):
        name: str

    def ask() -> Elicit[Name]:
        return Elicit("Your name?", Name)

    _, server_class, resolve, _ = _sdk()
    server = server_class("bench-rs", request_state_security=RequestStateSecurity(codec=codec))

    async def greet(who: Annotated[Name, resolve(ask)]) -> str:
        return f"hello {who.name}"

    server.tool()(greet)
    return server


async def _elicit(_ctx: Any, _params: Any) -> Any:
    import mcp_types

    return mcp_types.ElicitResult(action="accept", content={"name": "ann"})


@contextlib.asynccontextmanager
async def _client(server: Any) -> Any:
    client_class = _sdk()[0]
    async with client_class(server, elicitation_callback=_elicit) as client:
        yield client


async def _handle_calls(client: Any, handle: str, n: int) -> None:
    for _ in range(n):
        result = await client.call_tool("add", {"handle": handle, "amount": 1})
        assert not result.is_error, result


async def _rounds(client: Any, n: int) -> None:
    import mcp_types

    answer = mcp_types.ElicitResult(action="accept", content={"name": "ann"})
    for _ in range(n):
        first = await client.session.call_tool("greet", {}, allow_input_required=True)
        answers = {key: answer for key in first.input_requests or {}}
        done = await client.session.call_tool(
            "greet",
            {},
            input_responses=answers,
            request_state=first.request_state,
            allow_input_required=True,
        )
        assert done.content[0].text == "hello ann", done


async def _paired(
    ours: Callable[[int], Awaitable[None]], stock: Callable[[int], Awaitable[None]], sizes: Sizes
) -> tuple[float, float]:
    """Median µs per call of ``ours`` and ``stock``, timed alternately (after a warm-up)."""
    await ours(10)
    await stock(10)
    timings: tuple[list[float], list[float]] = ([], [])
    for _ in range(sizes.repeats):
        for results, run in ((timings[0], ours), (timings[1], stock)):
            began = time.perf_counter()
            await run(sizes.calls)
            results.append((time.perf_counter() - began) / sizes.calls * 1e6)
    return statistics.median(timings[0]), statistics.median(timings[1])


async def _backend_rows(label: str, settings: dict[str, Any], sizes: Sizes) -> list[_bench.Figure]:
    from sessionkeeper_mcp import Handles, McpStores, SingleUseRequestStateCodec

    codec_class = _sdk()[3]
    rows = []
    async with McpStores.from_settings(Config.from_mapping(settings)) as stores:
        handles = Handles(stores)
        handle = (await handles.mint({"n": 0}, owner=None)).id
        async with _client(handle_server(handles)) as ours, _client(handle_server(None)) as stock:
            value, floor = await _paired(
                lambda n: _handle_calls(ours, handle, n),
                lambda n: _handle_calls(stock, "k", n),
                sizes,
            )
        rows.append(
            _bench.figure(f"handle tool call, {label}", value, floor, "stock SDK, dict in process")
        )
        single_use = SingleUseRequestStateCodec(codec_class([KEY]), stores)
        async with (
            _client(greet_server(single_use)) as ours,
            _client(greet_server(codec_class([KEY]))) as stock,
        ):
            value, floor = await _paired(
                lambda n: _rounds(ours, n), lambda n: _rounds(stock, n), sizes
            )
        rows.append(
            _bench.figure(
                f"requestState round (2 calls), {label}",
                value,
                floor,
                "stock SDK codec (replayable)",
            )
        )
    return rows


@contextlib.contextmanager
def redis_or_none(folder: Path) -> Iterator[str | None]:
    """The URL of a ``redis-server`` run in ``folder`` for the ``with`` block, or ``None``
    when none is found (``bench_mcp_workers`` uses it too)."""
    binary = _redis_server.find_binary()
    if binary is None:
        yield None
        return
    with _redis_server.redis_server(binary, folder / "redis") as url:
        yield url


def measure(args: Any) -> _bench.Run:
    sizes = Sizes(calls=50 if args.quick else 100, repeats=3 if args.quick else 11)
    notes = []
    with tempfile.TemporaryDirectory() as tmp, redis_or_none(Path(tmp)) as redis_url:
        folder = Path(tmp)
        backends: list[tuple[str, dict[str, Any]]] = [
            ("memory", {"backend": "memory", "backend_opts": {"table_name": "bench-mcp"}}),
            (
                "sqlitedict",
                {"backend": "sqlitedict", "backend_opts": {"file_path": str(folder / "o.sqlite")}},
            ),
            (
                "sqlitedict shared",
                {
                    "backend": "sqlitedict",
                    "backend_opts": {"file_path": str(folder / "s.sqlite"), "shared": True},
                },
            ),
        ]
        if redis_url is None:
            notes.append("redis: no redis-server found (install sessionkeeper-redis); not measured")
        else:
            backends.append(
                ("redis", {"backend": "redis", "backend_opts": {"url": redis_url}}),
            )
        figures = []
        for label, settings in backends:
            figures += asyncio.run(_backend_rows(label, {**settings, "cleanup_interval": 0}, sizes))
    title = (
        f"bench_mcp: sessionkeeper {__version__}, Python {platform.python_version()}, "
        f"{platform.machine()}; {sizes.calls} calls x {sizes.repeats} repeats"
    )
    return _bench.Run(
        figures=figures,
        sizes=sizes,
        title=title,
        about=_bench.about(calls=sizes.calls, repeats=sizes.repeats),
        notes=notes,
    )


def main() -> int:
    return _bench.main(
        __doc__,
        "mcp",
        measure,
        quick_help="fewer calls and repeats (a smoke run)",
        digits={"us": 0},
        requires=_sdk,
        needs="mcp 2.x and sessionkeeper-mcp",
    )


if __name__ == "__main__":
    sys.exit(main())
