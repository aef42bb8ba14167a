"""A small HTTP reverse proxy in front of the MCP workers, steered by the tests.

``uvicorn --factory proxy_app:create_app``. ``POST /__proxy__`` with JSON
``{"targets": ["http://127.0.0.1:PORT", ...], "mode": "pin" | "round_robin", "index": 0}``
chooses where requests go: all to ``targets[index]`` (``pin``) or to each target in turn
(``round_robin``). Every other request is forwarded, its response streamed back (SSE included).
A target that refuses the connection, or closes a kept-alive one before answering, is skipped in
round-robin mode and retried once when pinned (as nginx's ``proxy_next_upstream error``); when
that fails too, the answer is 502.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host",
     "content-length"}
)  # fmt: skip


class Router:
    """Where the next request goes."""

    def __init__(self) -> None:
        self.targets: list[str] = []
        self.mode = "pin"
        self.index = 0
        self._turns = itertools.count()

    def candidates(self) -> list[str]:
        """Targets to try for the next request, in order: its turn first, then the others."""
        if not self.targets:
            raise LookupError("no targets configured")
        if self.mode == "round_robin":
            start = next(self._turns)
            n = len(self.targets)
            return [self.targets[(start + i) % n] for i in range(n)]
        return [self.targets[self.index]] * 2


def create_app() -> Starlette:
    """The proxy app."""
    router = Router()
    # Keep a connection per request in flight (the benchmark runs dozens at once): httpx keeps
    # only 20 alive by default, and the rest would be opened and closed per request.
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    client = httpx.AsyncClient(timeout=httpx.Timeout(30.0, read=None), limits=limits)

    async def control(request: Request) -> Response:
        data: dict[str, Any] = await request.json()
        router.targets = list(data.get("targets", router.targets))
        router.mode = data.get("mode", router.mode)
        router.index = int(data.get("index", router.index))
        return JSONResponse({"targets": router.targets, "mode": router.mode, "index": router.index})

    async def forward(request: Request) -> Response:
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP]
        body = await request.body()
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        # Like nginx's proxy_next_upstream error: a worker that refuses the connection (it is
        # restarting) is skipped in round-robin mode.
        for target in router.candidates():
            upstream_request = client.build_request(
                request.method, target + path, headers=headers, content=body
            )
            try:
                upstream = await client.send(upstream_request, stream=True)
                break
            except (httpx.ConnectError, httpx.RemoteProtocolError) as exc:
                # refused, or a kept-alive connection closed before any response: not served
                error = exc
            except httpx.TransportError as exc:
                return JSONResponse(
                    {"proxy_error": f"{type(exc).__name__}: {exc}", "target": target},
                    status_code=502,
                )
        else:
            return JSONResponse({"proxy_error": str(error), "target": target}, status_code=502)
        response_headers = {
            k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP
        }
        if not upstream.headers.get("content-type", "").startswith("text/event-stream"):
            # A whole answer (JSON, or an empty 202): relayed in one piece. A streamed relay
            # (chunked, a background close) costs this proxy several times a worker's call.
            try:
                content = await upstream.aread()
            except httpx.TransportError as exc:
                return JSONResponse({"proxy_error": str(exc), "target": target}, status_code=502)
            finally:
                await upstream.aclose()
            return Response(content, status_code=upstream.status_code, headers=response_headers)

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in upstream.aiter_raw():
                    yield chunk
            except httpx.TransportError:
                return

        return StreamingResponse(
            relay(),
            status_code=upstream.status_code,
            headers=response_headers,
            background=BackgroundTask(upstream.aclose),
        )

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await client.aclose()

    methods = ["GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS", "HEAD"]
    return Starlette(
        routes=[
            Route("/__proxy__", control, methods=["POST"]),
            Route("/{path:path}", forward, methods=methods),
        ],
        lifespan=lifespan,
    )
