"""The real ``mcp`` SDK client, the same way on the 1.x and the 2.x line, plus raw HTTP helpers."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

import sessionkeeper_mcp

SDK1 = sessionkeeper_mcp.SDK_VERSION.startswith("1.")
#: The handshake version the raw helpers speak (the 2025-11-25 one has priming events).
PROTOCOL = "2025-11-25"


@contextlib.asynccontextmanager
async def mcp_session(
    url: str, *, name: str = "roaming-client", token: str | None = None
) -> AsyncIterator[Any]:
    """An initialized ``mcp.ClientSession`` on ``url``; the session is deleted on exit."""
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.types import Implementation

    http_module: Any = httpx
    if not SDK1:
        import httpx2

        http_module = httpx2
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = http_module.Timeout(30, read=300)
    info = Implementation(name=name, version="1")
    async with (
        http_module.AsyncClient(headers=headers, timeout=timeout) as http,
        streamable_http_client(url, http_client=http) as streams,
        ClientSession(streams[0], streams[1], client_info=info) as session,
    ):
        await session.initialize()
        yield session


async def call_text(session: Any, tool: str, arguments: dict[str, Any] | None = None) -> str:
    """Call ``tool`` and return the text of its first content block (fails on a tool error)."""
    result = await session.call_tool(tool, arguments or {})
    is_error = getattr(result, "is_error", None)
    if is_error is None:
        is_error = result.isError
    assert not is_error, result
    return str(result.content[0].text)


# --- the 2.x client in its default mode (protocol 2026-07-28) ---------------------------------


@contextlib.asynccontextmanager
async def client(url: str, name: str) -> AsyncIterator[Any]:
    """The SDK's own client in its default mode, authenticated as ``name``."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    auth = {"Authorization": f"Bearer token-{name}"}
    async with (
        httpx2.AsyncClient(headers=auth) as http,
        Client(streamable_http_client(url, http_client=http)) as session,
    ):
        assert session.protocol_version == "2026-07-28"
        yield session


async def call(session: Any, tool: str, **arguments: Any) -> Any:
    """A tool's structured result; a tool error raises AssertionError with its text."""
    result = await session.call_tool(tool, arguments)
    text = result.content[0].text if result.content else ""
    if result.is_error:
        raise AssertionError(text)
    return result.structured_content["result"]


async def refused(session: Any, tool: str, **arguments: Any) -> str:
    """The error text of a tool call that must fail."""
    result = await session.call_tool(tool, arguments)
    assert result.is_error, result
    text: str = result.content[0].text
    return text


# --- raw HTTP ---------------------------------------------------------------------------------


def headers(
    session_id: str | None = None, token: str | None = None, **extra: str
) -> dict[str, str]:
    """The headers of a Streamable HTTP request."""
    found = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": PROTOCOL,
    }
    if session_id is not None:
        found["Mcp-Session-Id"] = session_id
    if token is not None:
        found["Authorization"] = f"Bearer {token}"
    found.update(extra)
    return found


def initialize_body(
    name: str = "raw-client", request_id: int = 1, capabilities: dict[str, Any] | None = None
) -> dict[str, Any]:
    """An ``initialize`` request."""
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "initialize",
        "params": {
            "protocolVersion": PROTOCOL,
            "capabilities": capabilities or {},
            "clientInfo": {"name": name, "version": "1"},
        },
    }


def sse_events(text: str) -> list[dict[str, Any]]:
    """The events of an SSE body: ``{"id": …, "data": <parsed JSON or "">}``."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        event: dict[str, Any] = {}
        data = []
        for line in block.split("\n"):
            key, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if key == "id":
                event["id"] = value
            elif key == "data":
                data.append(value)
        if event or data:
            joined = "\n".join(data)
            event["data"] = json.loads(joined) if joined else ""
            events.append(event)
    return events


def messages(response: httpx.Response) -> list[dict[str, Any]]:
    """The JSON-RPC messages of a response, JSON or SSE."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        return [e["data"] for e in sse_events(response.text) if e.get("data")]
    return [response.json()] if response.content else []


def open_session(
    client: httpx.Client,
    url: str,
    *,
    token: str | None = None,
    name: str = "raw-client",
    capabilities: dict[str, Any] | None = None,
) -> str:
    """Initialize a session over raw HTTP; return its id."""
    body = initialize_body(name, capabilities=capabilities)
    response = client.post(url, json=body, headers=headers(token=token))
    assert response.status_code == 200, response.text
    session_id = response.headers["mcp-session-id"]
    done = client.post(
        url,
        json={"jsonrpc": "2.0", "method": "notifications/initialized"},
        headers=headers(session_id, token),
    )
    assert done.status_code == 202, done.text
    return session_id


def call_tool(
    client: httpx.Client,
    url: str,
    session_id: str,
    tool: str,
    *,
    token: str | None = None,
    request_id: int = 2,
) -> httpx.Response:
    """POST a ``tools/call`` request; return the raw response."""
    body = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": tool, "arguments": {}},
    }
    return client.post(url, json=body, headers=headers(session_id, token))


def tool_text(response: httpx.Response) -> str:
    """The text of the tool result in ``response`` (asserting it is one)."""
    assert response.status_code == 200, response.text
    for message in messages(response):
        if "result" in message:
            return str(message["result"]["content"][0]["text"])
    raise AssertionError(f"no result in {response.text!r}")
