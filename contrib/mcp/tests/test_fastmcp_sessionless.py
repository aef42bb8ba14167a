"""fastmcp 4 on protocol 2026-07-28 (issue 18): the example server
(``examples/fastmcp_sessions.py``), whose ``SessionId`` and ``UserSession`` state is kept by
:class:`SessionStateStore`, follows the client over three workers behind a round-robin proxy,
and through a worker restart, on each shared store (a sqlite file in shared mode, and Redis).
Driven by the SDK's own 2.x client in its default mode."""

from __future__ import annotations

import anyio
import pytest
from skmcp_client import SDK1, call, client, refused
from skmcp_procs import Cluster

pytestmark = [
    pytest.mark.skipif(SDK1, reason="fastmcp 4 needs mcp 2.3"),
    pytest.mark.sessionkeeper_slow,
]

APP = "fastmcp_app:create_app"


def test_session_state_follows_the_client_across_workers_and_a_restart(
    store_cluster: Cluster,
) -> None:
    """A ``SessionId`` total and ``UserSession`` facts grow by one on every call, each call
    on the next of three workers, with one worker restarted midway; a second principal cannot
    use the first one's session id and has its own ``UserSession``."""
    pytest.importorskip("fastmcp")
    workers = [store_cluster.worker(name, APP) for name in "ABC"]
    url = store_cluster.route(*workers, mode="round_robin")

    async def body() -> None:
        async with client(url, "alice") as alice:
            session_id = await call(alice, "create_session")
            seen = set()
            for n in range(1, 4):
                assert await call(alice, "add", session_id=session_id, amount=1) == n
                seen.add(await call(alice, "worker"))  # 4 calls a round: each on a new worker
                assert await call(alice, "remember", fact=f"f{n}") == n
                seen.add(await call(alice, "worker"))
            # The rotation reached every worker. Any other request through the balancer (one
            # the client sends on its own) shifts which worker answers which call, so ask on
            # until all three have answered, or a full rotation more has passed.
            for _ in range(6):
                if seen == {"A", "B", "C"}:
                    break
                seen.add(await call(alice, "worker"))
            assert seen == {"A", "B", "C"}
            workers[1].restart()
            for n in range(4, 7):
                assert await call(alice, "add", session_id=session_id, amount=1) == n
            assert await call(alice, "recall") == ["f1", "f2", "f3"]
        async with client(url, "bob") as bob:
            for _ in range(3):  # one call per worker
                error = await refused(bob, "add", session_id=session_id, amount=1)
                assert "Invalid or unknown session" in error
            assert await call(bob, "recall") == []
        async with client(url, "alice") as alice:
            assert await call(alice, "add", session_id=session_id, amount=0) == 6

    anyio.run(body)
