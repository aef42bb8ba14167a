"""ASGI pieces the persistent session manager and the roaming requests share: reading headers,
building the request that replays a message into a session's transport, and error responses."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

import anyio
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from mcp.server.streamable_http import MCP_SESSION_ID_HEADER  # isort: skip

PROTOCOL_VERSION_HEADER: Final = b"mcp-protocol-version"
SESSION_HEADER: Final = MCP_SESSION_ID_HEADER.encode("ascii")
#: Headers of the real request copied onto a replayed one (the transport's DNS-rebinding
#: check reads Host and Origin; the rest keeps logs and middleware honest).
_KEPT_HEADERS: Final = frozenset(
    {b"host", b"origin", b"user-agent", b"authorization", b"x-forwarded-for"}
)


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def initialize_params(body: bytes) -> dict[str, Any] | None:
    try:
        message = json.loads(body)
    except ValueError:
        return None
    messages = message if isinstance(message, list) else [message]
    for item in messages:
        if isinstance(item, dict) and item.get("method") == "initialize":
            params = item.get("params")
            return params if isinstance(params, dict) else None
    return None


def json_rpc(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


def replay_scope(scope: Scope, session_id: str | None, version: str | None) -> Scope:
    headers = [(k, v) for k, v in scope.get("headers", ()) if k.lower() in _KEPT_HEADERS]
    headers += [
        (b"content-type", b"application/json"),
        (b"accept", b"application/json, text/event-stream"),
    ]
    if session_id is not None:
        headers.append((SESSION_HEADER, session_id.encode("ascii")))
    if version is not None:
        headers.append((PROTOCOL_VERSION_HEADER, version.encode("latin-1")))
    replay: MutableMapping[str, Any] = dict(scope)
    replay.update(method="POST", headers=headers, query_string=b"")
    return replay


class Status:
    """A ``send`` that swallows a response and remembers its status and its end."""

    def __init__(self) -> None:
        self.code: int | None = None
        self.done = anyio.Event()

    @property
    def ok(self) -> bool:
        return self.code is not None and self.code < 400

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.code = message["status"]
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            self.done.set()


def body_once(data: bytes, status: Status) -> Callable[[], Awaitable[Message]]:
    """A ``receive`` that yields ``data`` once, then a disconnect once the response is sent."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": data, "more_body": False}
        await status.done.wait()
        return {"type": "http.disconnect"}

    return receive


async def no_body() -> Message:
    return {"type": "http.disconnect"}


def error(
    status: int, message: str, code: int = -32600
) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The SDK's error response: a JSON-RPC error without an id, with the HTTP status."""
    body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}})
    return Response(body, status_code=status, media_type="application/json")
