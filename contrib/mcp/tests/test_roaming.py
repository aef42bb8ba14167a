"""Handshake-era requests that land on another worker than the one they belong to (issue 18):
an elicitation answer POSTed to a worker whose copy of the session never asked reaches the
tool waiting on the worker that did; a polling reconnect on a worker that does not run the
request ends after the stored events instead of waiting for ever; one that no worker can
resume gets a JSON-RPC error. Real uvicorn workers on one Redis store, raw HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
from skmcp_client import call_tool, headers, open_session, sse_events
from skmcp_procs import Cluster
from test_e2e import _replay_until_result

from sessionkeeper_mcp._roaming import read_body

ELICITING = {"elicitation": {}}
#: The longest a test waits for a result (a hang guard: the SSE keep-alive resets read timeouts).
DEADLINE_S = 60


def sse_messages(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The JSON-RPC messages of an SSE response, as they arrive; fails past DEADLINE_S."""
    data: list[str] = []
    deadline = time.monotonic() + DEADLINE_S
    for line in response.iter_lines():
        assert time.monotonic() < deadline, "no result before the deadline: the client waits"
        if line.startswith("data:"):
            data.append(line.removeprefix("data:").removeprefix(" "))
        elif not line and data:
            joined = "\n".join(data)
            data = []
            if joined:
                yield json.loads(joined)


class TestAnswerOnAnotherWorker:
    """The client's answer to a server request reaches the worker that sent the request."""

    def test_elicitation_answer_relayed_to_the_asking_worker(self, cluster: Cluster) -> None:
        """The tool on A elicits; the client's answer goes to B, which accepts it (202) and
        relays it through the store; the tool on A gets it and its result reaches the client
        on A's stream (before, B dropped the answer and the client waited for ever: here the
        deadline)."""
        a, b = cluster.worker("A"), cluster.worker("B")
        with httpx.Client(timeout=httpx.Timeout(30, read=30)) as client:
            session_id = open_session(client, f"{a.url}/mcp", capabilities=ELICITING)
            call = {"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                    "params": {"name": "ask", "arguments": {}}}  # fmt: skip
            results, relayed = [], []
            with client.stream(
                "POST", f"{a.url}/mcp", json=call, headers=headers(session_id)
            ) as stream:
                for message in sse_messages(stream):
                    if message.get("method") == "elicitation/create":
                        accept = {"action": "accept", "content": {"name": "ann"}}
                        answer = {"jsonrpc": "2.0", "id": message["id"], "result": accept}
                        posted = client.post(
                            f"{b.url}/mcp", json=answer, headers=headers(session_id)
                        )
                        relayed.append(posted.status_code)
                    elif message.get("id") == 5:
                        results.append(message["result"]["content"][0]["text"])
                        break
            assert relayed == [202]
            assert results == ["hello ann|A"]


class TestPollingOnAnotherWorker:
    """Reconnects with Last-Event-ID on a worker that does not run the request."""

    def test_replay_elsewhere_ends_then_polling_gets_the_result(self, cluster: Cluster) -> None:
        """While the tool still runs on A, a reconnect on B replays the stored events and ends
        (before, B kept the stream open for live events only A sends: here a read timeout,
        shorter than the SSE keep-alive); reconnecting again gets the rest and the result."""
        env = {"SKMCP_RESUMABLE": "1"}
        a, b = cluster.worker("A", **env), cluster.worker("B", **env)
        with httpx.Client(timeout=30) as client:
            session_id = open_session(client, f"{a.url}/mcp")
            first = call_tool(client, f"{a.url}/mcp", session_id, "long_story", request_id=7)
            assert first.status_code == 200, first.text
            last_id = sse_events(first.text)[-1]["id"]
            with client.stream(
                "GET",
                f"{b.url}/mcp",
                headers=headers(session_id, **{"Last-Event-ID": last_id}),
                timeout=httpx.Timeout(30, read=10),
            ) as response:
                assert response.status_code == 200
                response.read()  # the replayed stream ends: no ReadTimeout
            missed = _replay_until_result(client, f"{b.url}/mcp", session_id, last_id)
            results = [m["result"]["content"][0]["text"] for m in missed if "result" in m]
            assert results == ["the end|A"]

    def test_no_worker_keeps_events_is_a_clear_error(self, cluster: Cluster) -> None:
        """Without resumability no worker can resume a stream: a reconnect with Last-Event-ID
        gets a JSON-RPC error saying so, HTTP 409 (before, the SDK answered nothing: 500)."""
        a = cluster.worker("A")
        with httpx.Client(timeout=30) as client:
            session_id = open_session(client, f"{a.url}/mcp")
            response = client.get(
                f"{a.url}/mcp", headers=headers(session_id, **{"Last-Event-ID": "0123.4"})
            )
        assert response.status_code == 409, response.text
        error = response.json()["error"]
        assert error["code"] == -32600
        assert "keeps no events" in error["message"]
        assert "resumable=True" in error["message"]


class TestReadBody:
    """How the legacy layer reads a POST body to look for answers."""

    @staticmethod
    def _receive(chunks: list[bytes]) -> Any:
        messages = [
            {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
            for i, c in enumerate(chunks)
        ]

        async def receive() -> Any:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        return receive

    def test_body_within_the_limit_is_read_and_replayed(self) -> None:
        """A body in several chunks is returned whole, and the new receive yields the same
        chunks to the SDK."""

        async def body() -> None:
            found, receive = await read_body(self._receive([b'{"a":', b"1}"]), 100)
            assert found == b'{"a":1}'
            replayed = [await receive() for _ in range(3)]
            assert [m.get("body") for m in replayed] == [b'{"a":', b"1}", None]

        anyio.run(body)

    def test_body_over_the_limit_is_passed_on_unread(self) -> None:
        """Past the limit nothing is kept (the SDK's own size check answers): the body is
        ``None`` and the SDK still receives every chunk, in order."""

        async def body() -> None:
            chunks = [b"x" * 60, b"y" * 60, b"z" * 60]
            found, receive = await read_body(self._receive(chunks), 100)
            assert found is None
            assert [(await receive())["body"] for _ in range(3)] == chunks

        anyio.run(body)
