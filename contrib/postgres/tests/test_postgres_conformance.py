"""The ``postgres`` backend runs the whole conformance kit against a real PostgreSQL server."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from sessionkeeper import SessionManager
from sessionkeeper.testing import BackendConformance


class TestPostgresConformance(BackendConformance):
    """Every shared semantic (DESIGN §3), checked on the ``postgres`` backend."""

    backend = "postgres"

    @pytest.fixture(autouse=True)
    def _server(self, pg_cluster: Any) -> None:
        self.cluster = pg_cluster

    def backend_opts(self, tmp_path: Path) -> dict[str, Any]:
        # One server for the whole run: a fresh table gives each test (and each example of
        # the stateful test) an empty store.
        return {"dsn": self.cluster.dsn(), "table_name": f"conf_{uuid.uuid4().hex[:24]}"}

    def shared_store_config(self, backend_opts: Mapping[str, Any]) -> Mapping[str, Any]:
        # Every process that names the server and the table shares the store: the kit's
        # multi-process races run child interpreters with the same options.
        return dict(backend_opts)

    def corrupt_stored_session(self, manager: SessionManager, session_id: str) -> None:
        table = manager.backend.statements.qualified
        with self.cluster.connect() as conn:
            query = table.as_string(conn)
            updated = conn.execute(
                f"UPDATE {query} SET record = %s WHERE id = %s",  # type: ignore[arg-type]
                (b"\xc1 not a msgpack record", session_id),
            ).rowcount
        assert updated == 1
