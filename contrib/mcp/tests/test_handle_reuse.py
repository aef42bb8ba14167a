"""``Handles.update`` given the :class:`Handle` a resolve returned (issue 15): it writes on that
read (one conditional store, no new read), and a stale handle (changed, revoked, expired or
re-owned since it was read) never overwrites newer state nor brings an ended handle back: its
conditional write fails and the update reads afresh. On real stores: memory, a sqlitedict file
(one owner, and shared mode) and Redis (a ``redis-server`` the fixtures start)."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

from sessionkeeper import AsyncSessionManager, SessionNotFound
from sessionkeeper.testing import ManualClock
from sessionkeeper_mcp import Handle, HandleNotFound, Handles

STORES = ("memory", "sqlitedict", "sqlitedict-shared", "redis")


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """A backend and its options, with a table (or file) of this test's own."""
    table = "h" + uuid.uuid4().hex[:12]
    if request.param == "memory":
        yield "memory", {"table_name": table}
    elif request.param == "redis":
        url: str = request.getfixturevalue("redis_url")
        yield "redis", {"url": url, "table_name": table}
    else:
        pytest.importorskip("sessionkeeper_sqlitedict")
        opts: dict[str, Any] = {"file_path": str(tmp_path / "handles.sqlite"), "table_name": table}
        if request.param == "sqlitedict-shared":
            opts["shared"] = True
        yield "sqlitedict", opts


@asynccontextmanager
async def opened(
    store: tuple[str, dict[str, Any]], clock: ManualClock, **options: Any
) -> AsyncIterator[Handles]:
    """Handles on ``store`` with operation counters on, on ``clock``; closed afterwards."""
    backend, opts = store
    async with AsyncSessionManager(
        backend=backend, backend_opts=opts, clock=clock, stats=True, cleanup_interval=0
    ) as manager:
        yield Handles(manager, **options)


async def operations(handles: Handles) -> dict[str, int]:
    """What the store did so far, by name: the manager's operation counters (``stats`` itself
    left out)."""
    counted = (await handles.manager.stats())["counters"]["operations"]
    return {name: counted[name]["calls"] for name in counted if name != "count"}


async def made_by(handles: Handles, work: Any) -> tuple[Any, dict[str, int]]:
    """``await work()`` and what the store did for it: the manager's operations (see
    :func:`operations`); on Redis, whose operations run on ``redis.asyncio`` outside those
    counters, the commands the manager sent the server (each a round trip: what ``MONITOR``
    shows, without the commands run inside scripts)."""
    if handles.manager.backend_name == "redis":
        return await _sent_to_redis(handles, work)
    before = await operations(handles)
    result = await work()
    after = await operations(handles)
    changed = {name: after[name] - before.get(name, 0) for name in after}
    return result, {name: n for name, n in changed.items() if n}


#: What sets up rather than serves an operation: a new connection of the pool's first commands,
#: loading the backend's scripts or functions.
_SETUP = re.compile(r"(?i)(hello|client|select|auth|function|script)\b")


async def _sent_to_redis(handles: Handles, work: Any) -> tuple[Any, dict[str, int]]:
    import redis

    url = handles.manager.sync.backend.options.url  # type: ignore[attr-defined]
    marker = "end-" + uuid.uuid4().hex
    sent: dict[str, int] = {}
    with redis.Redis.from_url(url) as raw, raw.monitor() as monitor:
        result = await work()
        raw.echo(marker)
        while True:
            command = monitor.next_command()
            if marker in command["command"]:
                return result, sent
            if command["client_type"] != "lua" and not _SETUP.match(command["command"]):
                name = command["command"].split(" ", 1)[0].lower()
                sent[name] = sent.get(name, 0) + 1


def less(ops: dict[str, int], fewer: dict[str, int]) -> dict[str, int]:
    """``ops`` without ``fewer`` (counts of operations or commands)."""
    left = {name: n - fewer.get(name, 0) for name, n in ops.items()}
    return {name: n for name, n in left.items() if n}


def plus(amount: int) -> Any:
    """An update function adding ``amount`` to the state's ``n``."""
    return lambda state: {**state, "n": state["n"] + amount}


class TestResolvedHandle:
    """What update does with the Handle a resolve returned, on every store."""

    def test_update_of_a_resolved_handle_is_one_conditional_write(
        self, store: tuple[str, dict[str, Any]]
    ) -> None:
        """Resolve (a fetch, touching the handle when it was idle long enough) and then update
        given the resolved Handle: the update is the update of the id without its read (one
        store_if; on Redis, the commands of one peek fewer), and the Handle it returns serves
        the next update the same way."""

        async def body() -> None:
            clock = ManualClock()
            async with opened(store, clock) as handles:
                minted = await handles.mint({"n": 1}, owner="alice")
                # a first write may set up (Redis loads its functions): not measured
                await handles.update(minted.id, plus(0), principal="alice")
                _, peek = await made_by(handles, lambda: handles.manager.peek(minted.id))
                updated = minted
                for _ in range(2):
                    clock.advance(600_000)  # a tenth of the idle timeout: resolve touches
                    by_id, with_read = await made_by(
                        handles, lambda: handles.update(minted.id, plus(1), principal="alice")
                    )
                    clock.advance(600_000)
                    cart = await handles.resolve(minted.id, principal="alice")
                    assert cart.version == by_id.version  # the touch is not a new version
                    updated, ops = await made_by(
                        handles,
                        lambda cart=cart: handles.update(cart, plus(10), principal="alice"),
                    )
                    assert ops == less(with_read, peek)
                    assert updated.version == cart.version + 1
                again, ops = await made_by(
                    handles, lambda: handles.update(updated, plus(100), principal="alice")
                )
                assert ops == less(with_read, peek)
                assert (again.state, again.version) == ({"n": 123}, 7)
                if store[0] != "redis":
                    assert ops == {"store_if": 1}
                    assert with_read == {"fetch": 1, "store_if": 1}

        anyio.run(body)

    def test_stale_handle_never_overwrites_newer_state(
        self, store: tuple[str, dict[str, Any]]
    ) -> None:
        """A Handle read before another writer's update: its conditional write fails, fn runs
        again on the fresh state (one read, one write more), and both changes are kept. A Handle
        of an earlier request, several versions old, does the same."""

        async def body() -> None:
            async with opened(store, ManualClock()) as handles:
                minted = await handles.mint({"n": 0}, owner="alice")
                old = await handles.resolve(minted.id, principal="alice")
                await handles.update(minted.id, plus(1), principal="alice")  # another request
                seen: list[int] = []

                def add_ten(state: dict[str, Any]) -> dict[str, Any]:
                    seen.append(state["n"])
                    return {**state, "n": state["n"] + 10}

                updated, ops = await made_by(
                    handles, lambda: handles.update(old, add_ten, principal="alice")
                )
                assert seen == [0, 1]
                assert (updated.state, updated.version) == ({"n": 11}, 3)
                if store[0] != "redis":
                    assert ops == {"store_if": 2, "fetch": 1}
                for _ in range(3):
                    await handles.update(updated, plus(1), principal="alice")
                newest = await handles.update(old, plus(1000), principal="alice")
                assert (newest.state, newest.version) == ({"n": 1014}, 7)

        anyio.run(body)

    def test_stale_handle_does_not_bring_back_an_ended_handle(
        self, store: tuple[str, dict[str, Any]]
    ) -> None:
        """A Handle whose handle was revoked, or ran out of idle time or of its absolute
        lifetime, since it was read: update raises HandleNotFound and writes nothing (the
        handle stays ended; an expired record still stored is left as it was)."""

        async def body() -> None:
            clock = ManualClock()
            async with opened(store, clock, idle_timeout=10, absolute_timeout=25) as handles:

                async def read(state: dict[str, Any]) -> Handle:
                    minted = await handles.mint(state, owner="a")
                    return await handles.resolve(minted.id, principal="a")

                async def stored(handle_id: str) -> tuple[Any, ...] | None:
                    try:
                        found = await handles.manager.peek(handle_id, include_expired=True)
                    except SessionNotFound:
                        return None
                    return (found.version, found.metadata, found.last_accessed)

                revoked, idle, aged = (
                    await read({"n": 1}),
                    await read({"n": 2}),
                    await read({"n": 3}),
                )
                assert await handles.revoke(revoked.id, principal="a") is True
                for _ in range(2):  # aged is used every 8.5 s, idle never
                    clock.advance(8_500)
                    aged = await handles.resolve(aged.id, principal="a")
                with pytest.raises(HandleNotFound):  # idle: 17 s unused
                    await handles.resolve(idle.id, principal="a")
                clock.advance(8_500)  # aged: 25.5 s after minting, 8.5 s after its last use
                for stale in (revoked, idle, aged):
                    before = await stored(stale.id)
                    with pytest.raises(HandleNotFound):
                        await handles.update(stale, plus(5), principal="a")
                    assert await stored(stale.id) == before
                    with pytest.raises(HandleNotFound):
                        await handles.resolve(stale.id, principal="a")

        anyio.run(body)

    def test_handle_is_checked_against_the_caller_and_the_current_owner(
        self, store: tuple[str, dict[str, Any]]
    ) -> None:
        """Alice's Handle passed by Bob (or an anonymous caller) is HandleNotFound, nothing
        written; a Handle read before its handle was given to Bob fails for Alice (the store's
        owner decides) and works for Bob, on the fresh read."""

        async def body() -> None:
            async with opened(store, ManualClock()) as handles:
                minted = await handles.mint({"n": 1}, owner="alice")
                alices = await handles.resolve(minted.id, principal="alice")
                for caller in ("bob", None):
                    with pytest.raises(HandleNotFound):
                        await handles.update(alices, plus(1), principal=caller)
                manager = handles.manager
                current = await manager.peek(minted.id)
                await manager.store(current.replace(owner="bob"), if_version=current.version)
                with pytest.raises(HandleNotFound):
                    await handles.update(alices, plus(1), principal="alice")
                for_bob = await handles.update(alices, plus(1), principal="bob")
                assert (for_bob.state, for_bob.owner, for_bob.version) == ({"n": 2}, "bob", 3)

        anyio.run(body)

    def test_concurrent_updates_of_resolved_handles_lose_nothing(
        self, store: tuple[str, dict[str, Any]]
    ) -> None:
        """8 tasks, each resolving the one counter and updating it with its Handle, five
        times: the counter is exactly 40 (the stale reads among them re-read, never win)."""

        async def body() -> None:
            async with opened(store, ManualClock()) as handles:
                minted = await handles.mint({"n": 0}, owner="alice")

                async def agent() -> None:
                    for _ in range(5):
                        read = await handles.resolve(minted.id, principal="alice")
                        await anyio.sleep(0)  # let the other agents read the same version
                        await handles.update(read, plus(1), principal="alice")

                async with anyio.create_task_group() as group:
                    for _ in range(8):
                        group.start_soon(agent)
                final = await handles.resolve(minted.id, principal="alice")
                assert final.state == {"n": 40}

        anyio.run(body)


class TestHandleValue:
    """The Handle stays the value it was: equality, repr, constructor and evolve."""

    def test_read_is_not_part_of_the_value(self) -> None:
        """A resolved Handle equals one built from its four fields; its repr, attrs.asdict and
        attrs.fields are those four alone; a Handle built or evolved by hand carries no read:
        update given it reads the handle first."""

        async def body() -> None:
            async with opened(
                ("memory", {"table_name": "h" + uuid.uuid4().hex}), ManualClock()
            ) as handles:
                minted = await handles.mint({"n": 1}, owner="a")
                built = Handle(minted.id, {"n": 1}, "a", 1)
                assert minted == built
                assert (
                    repr(minted)
                    == repr(built)
                    == f"Handle(id={minted.id!r}, state={{'n': 1}}, owner='a', version=1)"
                )
                assert attrs.asdict(minted) == {
                    "id": minted.id,
                    "state": {"n": 1},
                    "owner": "a",
                    "version": 1,
                }
                assert [field.name for field in attrs.fields(Handle)] == [
                    "id",
                    "state",
                    "owner",
                    "version",
                ]
                for by_hand in (built, attrs.evolve(minted, state={"n": 50})):
                    updated, ops = await made_by(
                        handles,
                        lambda by_hand=by_hand: handles.update(by_hand, plus(1), principal="a"),
                    )
                    assert ops == {"fetch": 1, "store_if": 1}
                assert updated.state == {"n": 3}

        anyio.run(body)


def test_the_end_to_end_app_passes_the_handle() -> None:
    """The counter app of the HTTP tests (``handles_app``: 8 clients through 3 workers, a
    restart, exactly 80) passes the resolved Handle to update on this install, so those tests
    run the reused read under real concurrency; it would pass the id to an update that takes
    only the id (the earlier install ``bench_mcp_workers.py`` compares against)."""
    pytest.importorskip("mcp.server.mcpserver", reason="handles_app is an mcp 2.x MCPServer")
    import handles_app

    assert handles_app._UPDATE_TAKES_HANDLE is True
