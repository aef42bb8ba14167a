"""State handles (issue 18): the store's rules in one process, then the SDK's own 2.x client in
its default mode (protocol 2026-07-28, no transport session) against ``MCPServer`` workers
behind a round-robin proxy, sharing one store (a sqlite file in shared mode, and Redis)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from skmcp_client import SDK1, call, client, refused
from skmcp_procs import Cluster

from sessionkeeper import AsyncSessionManager, Config, Unsupported
from sessionkeeper.testing import ManualClock
from sessionkeeper_mcp import UNKNOWN_HANDLE, HandleNotFound, Handles, McpStores

HANDLES_APP = "handles_app:create_app"


@asynccontextmanager
async def memory_handles(clock: ManualClock, **options: Any) -> AsyncIterator[Handles]:
    """Handles on a memory table of their own, on ``clock``; closed afterwards."""
    table = "h" + uuid.uuid4().hex
    async with AsyncSessionManager(backend_opts={"table_name": table}, clock=clock) as manager:
        yield Handles(manager, **options)


class TestHandleStore:
    """Mint, resolve, update, revoke and list, with explicit principals (no request)."""

    def test_owner_check_answers_like_an_unknown_handle(self) -> None:
        """A handle resolves for its owner; another principal, an anonymous caller and an
        unknown id all get HandleNotFound with the same message."""

        async def body() -> None:
            async with memory_handles(ManualClock()) as handles:
                minted = await handles.mint({"n": 1}, owner="alice")
                assert (minted.owner, minted.version) == ("alice", 1)
                got = await handles.resolve(minted.id, principal="alice")
                assert got.state == {"n": 1}
                messages = set()
                for handle, principal in [(minted.id, "bob"), (minted.id, None), ("nope", "alice")]:
                    with pytest.raises(HandleNotFound) as caught:
                        await handles.resolve(handle, principal=principal)
                    messages.add(str(caught.value))
                assert messages == {UNKNOWN_HANDLE}
                with pytest.raises(HandleNotFound):
                    await handles.update(minted.id, lambda s: {"n": 99}, principal="bob")
                assert await handles.revoke(minted.id, principal="bob") is False
                assert (await handles.resolve(minted.id, principal="alice")).state == {"n": 1}

        anyio.run(body)

    def test_bearer_handle_is_usable_by_anyone(self) -> None:
        """A handle minted with owner=None belongs to nobody: whoever holds it may use it, and
        no principal lists it."""

        async def body() -> None:
            async with memory_handles(ManualClock()) as handles:
                minted = await handles.mint({"n": 1}, owner=None)
                assert (await handles.resolve(minted.id, principal="bob")).id == minted.id
                assert (await handles.resolve(minted.id, principal=None)).id == minted.id
                assert await handles.list(owner="bob") == []

        anyio.run(body)

    def test_idle_and_absolute_timeouts(self) -> None:
        """A handle ends after its idle time without use (each use starts it again), and at
        its absolute lifetime however much it is used."""

        async def body() -> None:
            clock = ManualClock()
            async with memory_handles(clock, idle_timeout=10, absolute_timeout=25) as handles:
                used = await handles.mint(owner="a")
                idle = await handles.mint(owner="a")
                for _ in range(2):
                    clock.advance(9_000)
                    await handles.resolve(used.id, principal="a")
                with pytest.raises(HandleNotFound):
                    await handles.resolve(idle.id, principal="a")
                clock.advance(7_001)  # 25.001 s after minting, 7 s after the last use
                with pytest.raises(HandleNotFound):
                    await handles.resolve(used.id, principal="a")

        anyio.run(body)

    def test_update_revoke_list_and_revoke_all(self) -> None:
        """update changes the state and the version; revoke ends one handle; list shows a
        principal's live handles only; revoke_all ends every handle of one principal."""

        async def body() -> None:
            async with memory_handles(ManualClock()) as handles:
                first = await handles.mint({"n": 1}, owner="alice")
                second = await handles.mint({"n": 2}, owner="alice")
                other = await handles.mint({"n": 3}, owner="bob")
                updated = await handles.update(
                    first.id, lambda s: {"n": s["n"] + 10}, principal="alice"
                )
                assert (updated.state, updated.version) == ({"n": 11}, 2)
                assert await handles.list(owner="alice") == sorted([first.id, second.id])
                assert await handles.revoke(first.id, principal="alice") is True
                assert await handles.revoke(first.id, principal="alice") is False
                with pytest.raises(HandleNotFound):
                    await handles.resolve(first.id, principal="alice")
                assert await handles.list(owner="alice") == [second.id]
                assert await handles.revoke_all(owner="alice") == 1
                assert await handles.list(owner="alice") == []
                assert await handles.list(owner="bob") == [other.id]

        anyio.run(body)

    def test_update_is_one_read_and_one_conditional_write(self) -> None:
        """update reads the handle once (that read also checks the owner) and writes it once,
        conditionally: the backend's operation counters show one fetch and one store_if (the
        owner check used to be a read of its own, before the update's read)."""

        async def body() -> None:
            table = "h" + uuid.uuid4().hex
            async with AsyncSessionManager(
                backend_opts={"table_name": table}, clock=ManualClock(), stats=True
            ) as manager:
                handles = Handles(manager)
                minted = await handles.mint({"n": 1}, owner="alice")

                async def calls() -> dict[str, int]:
                    operations = (await manager.stats())["counters"]["operations"]
                    return {name: operations.get(name, {}).get("calls", 0) for name in operations}

                before = await calls()
                updated = await handles.update(
                    minted.id, lambda s: {"n": s["n"] + 1}, principal="alice"
                )
                after = await calls()
                assert (updated.state, updated.version, updated.owner) == ({"n": 2}, 2, "alice")
                changed = {k: after[k] - before.get(k, 0) for k in after}
                assert {k: n for k, n in changed.items() if n} == {
                    "fetch": 1,
                    "store_if": 1,
                    "count": 1,  # stats() itself
                }

        anyio.run(body)

    def test_update_reruns_after_a_write_in_between_and_sees_a_revoke(self) -> None:
        """A write that lands between update's read and its write makes the conditional write
        fail: fn runs again on the fresh state and both changes are kept. A handle revoked in
        between is HandleNotFound, not written back."""

        async def body() -> None:
            async with memory_handles(ManualClock()) as handles:
                minted = await handles.mint({"n": 0, "log": []}, owner="alice")
                seen: list[int] = []

                def add_ten(state: dict[str, Any]) -> dict[str, Any]:
                    seen.append(state["n"])
                    if len(seen) == 1:  # another worker's update, between read and write
                        handles.manager.sync.update(minted.id, lambda s: {**s, "n": s["n"] + 1})
                    return {**state, "n": state["n"] + 10}

                updated = await handles.update(minted.id, add_ten, principal="alice")
                assert seen == [0, 1]
                assert (updated.state["n"], updated.version) == (11, 3)

                def revoke_meanwhile(state: dict[str, Any]) -> dict[str, Any]:
                    handles.manager.sync.delete(minted.id)
                    return state

                with pytest.raises(HandleNotFound):
                    await handles.update(minted.id, revoke_meanwhile, principal="alice")
                with pytest.raises(HandleNotFound):
                    await handles.resolve(minted.id, principal="alice")

        anyio.run(body)

    def test_long_principal_is_digested_consistently(self) -> None:
        """A principal too long to be a sessionkeeper owner is stored as its digest: the same
        principal still resolves and lists its handles, another one does not."""

        async def body() -> None:
            async with memory_handles(ManualClock()) as handles:
                long = "x" * 300
                minted = await handles.mint(owner=long)
                assert str(minted.owner).startswith("sha256:")
                assert (await handles.resolve(minted.id, principal=long)).id == minted.id
                assert await handles.list(owner=long) == [minted.id]
                with pytest.raises(HandleNotFound):
                    await handles.resolve(minted.id, principal="x" * 299)

        anyio.run(body)

    def test_bad_input_is_refused_clearly(self) -> None:
        """Bad timeouts and state that is not JSON are ValueErrors naming what is wrong; a
        handle that is not a string is simply not found."""

        async def body() -> None:
            async with memory_handles(ManualClock()) as handles:
                with pytest.raises(ValueError, match="idle_timeout"):
                    Handles(handles.manager, idle_timeout=0)
                with pytest.raises(ValueError, match="absolute_timeout"):
                    Handles(handles.manager, absolute_timeout=float("nan"))
                with pytest.raises(ValueError, match="cannot keep this handle state"):
                    await handles.mint({"x": object()}, owner="a")
                minted = await handles.mint({"n": 1}, owner="a")
                with pytest.raises(ValueError, match="cannot keep this handle state"):
                    await handles.update(minted.id, lambda s: {"x": {1, 2}}, principal="a")
                with pytest.raises(HandleNotFound):
                    await handles.resolve(123, principal="a")  # type: ignore[arg-type]

        anyio.run(body)

    def test_update_is_unsupported_on_zmq(self, tmp_path: Path) -> None:
        """On a backend without ``atomic`` (a one-node zmq cluster) update raises Unsupported
        and the state is unchanged: never a silent unconditional write."""
        testing = pytest.importorskip("sessionkeeper_zmq.testing")
        opts = testing.cluster_opts(tmp_path, 1, curve=False)[0]
        stores = McpStores.from_settings(
            Config.from_mapping({"backend": "zmq", "backend_opts": opts, "cleanup_interval": 0})
        )

        async def body() -> None:
            async with stores:
                handles = Handles(stores)
                minted = await handles.mint({"n": 1}, owner="a")
                with pytest.raises(Unsupported):
                    await handles.update(minted.id, lambda s: {"n": 2}, principal="a")
                assert (await handles.resolve(minted.id, principal="a")).state == {"n": 1}

        anyio.run(body)


# --- end to end: the SDK's 2.x client, MCPServer workers, one Redis store ----------------------


@pytest.mark.skipif(SDK1, reason="MCPServer, Resolve and protocol 2026-07-28 are mcp 2.x")
@pytest.mark.sessionkeeper_slow
class TestHandlesEndToEnd:
    """Three ``MCPServer`` workers behind a round-robin proxy on one shared store (a sqlite
    file in shared mode, then Redis)."""

    def test_parallel_counter_is_exact_across_workers_and_a_restart(
        self, store_cluster: Cluster
    ) -> None:
        """8 clients adding 1 five times each at once, every call on the next worker, then a
        worker restarted, then the same again: the counter is exactly 80 (no lost update)."""
        workers = [store_cluster.worker(name, HANDLES_APP) for name in "ABC"]
        url = store_cluster.route(*workers, mode="round_robin")

        async def adds() -> None:
            async def one_client() -> None:
                async with client(url, "alice") as session:
                    for _ in range(5):
                        await call(session, "add", handle=handle, amount=1)

            async with anyio.create_task_group() as group:
                for _ in range(8):
                    group.start_soon(one_client)

        async def body() -> None:
            nonlocal handle
            async with client(url, "alice") as session:
                handle = await call(session, "new_counter", start=0)
            await adds()
            store_cluster.route(workers[0], workers[1].restart(), workers[2], mode="round_robin")
            await adds()
            async with client(url, "alice") as session:
                seen = [(await call(session, "read", handle=handle)) for _ in range(4)]
            assert {answer.split("|")[0] for answer in seen} == {"80"}
            assert len({answer.split("|")[1] for answer in seen}) >= 2  # read on several workers

        handle = ""
        anyio.run(body)

    def test_another_principal_cannot_use_the_handle(self, store_cluster: Cluster) -> None:
        """Bob gets, on every worker, exactly the answer an unknown handle gets, cannot change
        or revoke Alice's handle, and lists none of it."""
        workers = [store_cluster.worker(name, HANDLES_APP) for name in "ABC"]
        url = store_cluster.route(*workers, mode="round_robin")

        async def body() -> None:
            async with client(url, "alice") as alice:
                handle = await call(alice, "new_counter", start=7)
                async with client(url, "bob") as bob:
                    unknown = await refused(bob, "read", handle="no-such-handle")
                    assert UNKNOWN_HANDLE in unknown
                    for _ in range(3):  # one call per worker
                        assert await refused(bob, "read", handle=handle) == unknown
                    assert UNKNOWN_HANDLE in await refused(bob, "add", handle=handle, amount=1)
                    assert await call(bob, "revoke", handle=handle) is False
                    assert await call(bob, "mine") == []
                assert (await call(alice, "read", handle=handle)).startswith("7|")
                assert await call(alice, "mine") == [handle]

        anyio.run(body)

    def test_revoked_handle_is_refused_everywhere(self, store_cluster: Cluster) -> None:
        """Once its owner revoked it on one worker, the handle is refused on every worker."""
        workers = [store_cluster.worker(name, HANDLES_APP) for name in "ABC"]
        url = store_cluster.route(*workers, mode="round_robin")

        async def body() -> None:
            async with client(url, "alice") as alice:
                handle = await call(alice, "new_counter")
                assert await call(alice, "revoke", handle=handle) is True
                for _ in range(3):
                    assert UNKNOWN_HANDLE in await refused(alice, "read", handle=handle)
                assert await call(alice, "mine") == []

        anyio.run(body)
