"""End to end: a real MCP client over HTTP, real uvicorn workers, one shared sessionkeeper store.

The client talks to the workers through a proxy the test steers (``proxy_app``), so one client
session can be sent to worker A, then to worker B, then to a restarted A.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from skmcp_client import (
    SDK1,
    call_text,
    call_tool,
    headers,
    mcp_session,
    open_session,
    sse_events,
    tool_text,
)
from skmcp_procs import Cluster, write_config

FLAVORS = ["app", "manual"]


def run(coroutine: Any) -> Any:
    """Run an async test body."""
    return anyio.run(coroutine)


class TestRoaming:
    """A session opened on one worker is served by any other, and after restarts."""

    @pytest.mark.parametrize("flavor", FLAVORS)
    @pytest.mark.parametrize("json_response", ["0", "1"], ids=["sse", "json"])
    def test_call_on_another_worker_and_after_restart(
        self, cluster: Cluster, flavor: str, json_response: str
    ) -> None:
        """Initialize on A; a tool call on B sees the client's name; A restarted serves it too."""
        env = {"SKMCP_FLAVOR": flavor, "SKMCP_JSON": json_response}
        a, b = cluster.worker("A", **env), cluster.worker("B", **env)
        url = cluster.route(a, b, index=0)

        async def body() -> None:
            async with mcp_session(url, name="roaming-client") as session:
                name, session_id, worker = (await call_text(session, "whoami")).split("|")
                assert (name, worker) == ("roaming-client", "A")
                cluster.route(a, b, index=1)
                assert (await call_text(session, "whoami")).split("|") == [
                    "roaming-client", session_id, "B"
                ]  # fmt: skip
                cluster.route(a.restart(), b, index=0)
                assert (await call_text(session, "whoami")).split("|") == [
                    "roaming-client", session_id, "A"
                ]  # fmt: skip

        run(body)

    def test_round_robin_many_calls(self, cluster: Cluster) -> None:
        """Every call of a session sent round-robin over three workers succeeds."""
        workers = [cluster.worker(name) for name in "ABC"]
        url = cluster.route(*workers, mode="round_robin")

        async def body() -> None:
            async with mcp_session(url) as session:
                seen = {(await call_text(session, "whoami")).split("|")[2] for _ in range(9)}
            assert seen == {"A", "B", "C"}

        run(body)


class TestEnding:
    """DELETE, expiry and credentials end or refuse a session everywhere."""

    def test_delete_on_one_worker_is_404_on_another(self, cluster: Cluster) -> None:
        """After DELETE on B, A (which holds the session in memory) answers 404."""
        a, b = cluster.worker("A", SKMCP_FLAVOR="manual"), cluster.worker("B")
        with httpx.Client(timeout=30) as client:
            session_id = open_session(client, f"{a.url}/mcp")
            assert tool_text(call_tool(client, f"{a.url}/mcp", session_id, "whoami")).endswith("A")
            deleted = client.delete(f"{b.url}/mcp", headers=headers(session_id))
            assert deleted.status_code == 200, deleted.text
            gone = call_tool(client, f"{a.url}/mcp", session_id, "whoami")
            assert gone.status_code == 404, gone.text
            assert call_tool(client, f"{b.url}/mcp", session_id, "whoami").status_code == 404

    def test_deleted_session_stops_on_a_fresh_worker_too(self, cluster: Cluster) -> None:
        """A session deleted through the real client is 404 on a worker started afterwards."""
        a = cluster.worker("A")
        url = cluster.route(a)

        async def body() -> str:
            async with mcp_session(url) as session:
                return (await call_text(session, "whoami")).split("|")[1]

        session_id = run(body)  # leaving the client session sends DELETE
        c = cluster.worker("C")
        with httpx.Client(timeout=30) as client:
            assert call_tool(client, f"{c.url}/mcp", session_id, "whoami").status_code == 404

    def test_other_credential_gets_404(self, cluster: Cluster) -> None:
        """Bob cannot use Alice's session id, on her worker or another; Alice still can."""
        a, b = cluster.worker("A"), cluster.worker("B", SKMCP_FLAVOR="manual")
        with httpx.Client(timeout=30) as client:
            session_id = open_session(client, f"{a.url}/mcp", token="token-alice")
            for worker in (a, b):
                for token in ("token-bob", None):
                    refused = call_tool(
                        client, f"{worker.url}/mcp", session_id, "whoami", token=token
                    )
                    assert refused.status_code == 404, (worker.name, token, refused.text)
            text = tool_text(
                call_tool(client, f"{b.url}/mcp", session_id, "whoami", token="token-alice")
            )
            assert text.split("|")[::2] == ["raw-client", "B"]

    def test_expired_session_is_404(self, cluster: Cluster) -> None:
        """A session idle for longer than its timeout is 404 on every worker."""
        a, b = cluster.worker("A", SKMCP_IDLE="1"), cluster.worker("B", SKMCP_IDLE="1")
        with httpx.Client(timeout=30) as client:
            session_id = open_session(client, f"{a.url}/mcp")
            time.sleep(1.5)  # longer than the 1 s timeout: the session is idle past it
            for worker in (b, a):
                expired = call_tool(client, f"{worker.url}/mcp", session_id, "whoami")
                assert expired.status_code == 404, (worker.name, expired.text)

    def test_unknown_session_is_404(self, cluster: Cluster) -> None:
        """An id no worker ever issued (or not even a valid id) is 404, as in the stock SDK."""
        a = cluster.worker("A")
        with httpx.Client(timeout=30) as client:
            for session_id in ("0" * 32, "x" * 300):
                assert call_tool(client, f"{a.url}/mcp", session_id, "whoami").status_code == 404


class TestResumability:
    """Events missed on one worker are replayed by another after a reconnect."""

    @pytest.mark.parametrize("flavor", FLAVORS)
    def test_replay_on_another_worker(self, cluster: Cluster, flavor: str) -> None:
        """The stream closed after part 1 on A; a GET with Last-Event-ID on B replays the rest."""
        env = {"SKMCP_FLAVOR": flavor, "SKMCP_RESUMABLE": "1"}
        a, b = cluster.worker("A", **env), cluster.worker("B", **env)
        with httpx.Client(timeout=30) as client:
            session_id = open_session(client, f"{a.url}/mcp")
            first = call_tool(client, f"{a.url}/mcp", session_id, "story", request_id=7)
            assert first.status_code == 200, first.text
            seen = sse_events(first.text)
            early = [e["data"]["params"]["data"] for e in seen if e.get("data")]
            assert early in ([], ["part 1"]), first.text  # the tool closed the stream early
            last_id = seen[-1]["id"]

            missed = _replay_until_result(client, f"{b.url}/mcp", session_id, last_id)
            notes = [
                m["params"]["data"] for m in missed if m.get("method") == "notifications/message"
            ]
            results = [m["result"]["content"][0]["text"] for m in missed if "result" in m]
            assert early + notes == ["part 1", "part 2", "part 3"]
            assert results == ["the end|A"]
            assert {m.get("id") for m in missed if "result" in m} == {7}

    def test_events_of_a_session_are_not_replayed_to_another(self, cluster: Cluster) -> None:
        """An event id of one session replays nothing in another session."""
        a = cluster.worker("A", SKMCP_RESUMABLE="1")
        with httpx.Client(timeout=30) as client:
            mine = open_session(client, f"{a.url}/mcp")
            first = call_tool(client, f"{a.url}/mcp", mine, "story")
            event_id = sse_events(first.text)[-1]["id"]
            other = open_session(client, f"{a.url}/mcp")
            response = client.get(
                f"{a.url}/mcp", headers=headers(other, **{"Last-Event-ID": event_id})
            )
            assert response.status_code == 200, response.text
            assert sse_events(response.text) == []
            assert "part" not in response.text


def _replay_until_result(
    client: httpx.Client, url: str, session_id: str, last_id: str
) -> list[dict[str, Any]]:
    """Reconnect with Last-Event-ID until the result arrives (a deadline, not an assertion)."""
    received: list[dict[str, Any]] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        text = ""
        try:
            with client.stream(
                "GET",
                url,
                headers=headers(session_id, **{"Last-Event-ID": last_id}),
                timeout=httpx.Timeout(30, read=1),
            ) as response:
                assert response.status_code == 200, response.read()
                for chunk in response.iter_text():
                    text += chunk
                    if '"result"' in text and text.endswith("\n\n"):
                        break
        except httpx.ReadTimeout:
            pass
        for event in sse_events(text):
            if event.get("data"):
                received.append(event["data"])
            if event.get("id"):
                last_id = event["id"]
        if any("result" in m for m in received):
            return received
    raise AssertionError(f"no result replayed before the deadline; got {received}")


class TestSingleWorkerRestart:
    """With sqlitedict (one process owns the file), a restarted worker still knows the session."""

    def test_restart_with_sqlitedict(self, tmp_path: Path) -> None:
        """Initialize, restart the only worker, call again: same session, same client name."""
        pytest.importorskip("sessionkeeper_sqlitedict")
        config = write_config(
            tmp_path / "disk.toml",
            "sqlitedict",
            {"file_path": str(tmp_path / "sessions.sqlite"), "auto_save": 0},
        )
        cluster = Cluster(config, tmp_path)
        try:
            a = cluster.worker("A")
            url = cluster.route(a)

            async def body() -> None:
                async with mcp_session(url, name="disk-client") as session:
                    first = (await call_text(session, "whoami")).split("|")
                    a.restart()
                    again = (await call_text(session, "whoami")).split("|")
                    assert again == first == ["disk-client", first[1], "A"]

            run(body)
        finally:
            cluster.close()


@pytest.mark.skipif(SDK1, reason="fastmcp 4 needs mcp 2.3")
class TestFastMCP:
    """fastmcp's FastMCP: sessions and ctx.set_state follow the client across workers."""

    def test_state_carries_across_workers(self, cluster: Cluster) -> None:
        """A counter in session state goes 1, 2, 3 over A, B and a restarted A."""
        pytest.importorskip("fastmcp")
        env = {"SKMCP_FLAVOR": "fastmcp"}
        a, b = cluster.worker("A", **env), cluster.worker("B", **env)
        url = cluster.route(a, b, index=0)

        async def body() -> None:
            async with mcp_session(url, name="fast-client") as session:
                assert await call_text(session, "count") == "1|A"
                cluster.route(a, b, index=1)
                assert await call_text(session, "count") == "2|B"
                assert (await call_text(session, "whoami")).split("|")[0] == "fast-client"
                cluster.route(a.restart(), b, index=0)
                assert await call_text(session, "count") == "3|A"

        run(body)

    def test_state_of_a_new_session_starts_empty(self, cluster: Cluster) -> None:
        """Another session's counter starts at 1 (state is per session)."""
        pytest.importorskip("fastmcp")
        a = cluster.worker("A", SKMCP_FLAVOR="fastmcp")
        url = cluster.route(a)

        async def body() -> None:
            for _ in range(2):
                async with mcp_session(url) as session:
                    assert await call_text(session, "count") == "1|A"

        run(body)
