"""The ``redis`` backend runs the whole conformance kit against a real ``redis-server``."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import redis

from sessionkeeper import SessionManager
from sessionkeeper.testing import AsyncConformance, BackendConformance


class OneServer:
    """The store of each test: a fresh table on the one server of the run."""

    backend = "redis"

    @pytest.fixture(autouse=True)
    def _server(self, redis_server: Any) -> None:
        self.url: str = redis_server.url

    def backend_opts(self, tmp_path: Path) -> dict[str, Any]:
        # One server for the whole run: a fresh table name gives each test (and each example of
        # the stateful test) an empty store. The tests move a manual clock far faster than
        # Redis's own, so keys keep a long TTL margin and only the manager's clock decides.
        return {
            "url": self.url,
            "table_name": f"conformance-{uuid.uuid4().hex}",
            "ttl_margin_ms": 3_600_000,
        }


class TestRedisConformance(OneServer, BackendConformance):
    """Every shared semantic (DESIGN §3), checked on the ``redis`` backend over one server."""

    def shared_store_config(self, backend_opts: Mapping[str, Any]) -> Mapping[str, Any] | None:
        # Another process opens the same table on the same server.
        return backend_opts

    def corrupt_stored_session(self, manager: SessionManager, session_id: str) -> None:
        key = manager.backend.session_key(session_id)
        with redis.Redis.from_url(self.url) as client:
            assert client.set(key, b"\xc1 not a msgpack record", keepttl=True, xx=True)


class TestRedisAsyncConformance(OneServer, AsyncConformance):
    """The contract through AsyncSessionManager, every operation awaited on redis.asyncio
    (issue 15), with 50 tasks of one loop in each race."""

    race_tasks = 50
