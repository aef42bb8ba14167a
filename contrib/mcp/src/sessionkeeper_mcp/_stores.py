"""Where the MCP integration keeps its records: three tables of the configured sessionkeeper store.

- ``sessions``: one record per MCP session, under the SDK's own session id.
- ``events``: resumability events (:class:`~sessionkeeper_mcp.SessionKeeperEventStore`).
- ``state``: FastMCP session state (:class:`~sessionkeeper_mcp.SessionStateStore`).
- ``handles``: state handles of protocol 2026-07-28 (:class:`~sessionkeeper_mcp.Handles`).

:meth:`McpStores.from_config` opens the three from one sessionkeeper config file. When the
backend has a ``table_name`` option (memory, sqlitedict, redis, postgres) the events, the state
and the handles get tables of their own, ``<table_name>_mcp_events``, ``<table_name>_mcp_state``
and ``<table_name>_mcp_handles``, so ``sessionkeeper list`` shows only sessions; otherwise (e.g.
zmq) they share the sessions' store, under ids that cannot collide with session ids (``e.…``,
``s.…``; a handle is a fresh session id, and is never mistaken for a transport session: it
holds no session record).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Final

import attrs

from sessionkeeper import AsyncSessionManager, Config, ConfigError, load_config

__all__ = ["EVENTS_SUFFIX", "HANDLES_SUFFIX", "STATE_SUFFIX", "McpStores"]

#: Appended to the sessions' ``table_name`` to name the events' table.
EVENTS_SUFFIX: Final = "_mcp_events"
#: Appended to the sessions' ``table_name`` to name the state's table.
STATE_SUFFIX: Final = "_mcp_state"
#: Appended to the sessions' ``table_name`` to name the handles' table.
HANDLES_SUFFIX: Final = "_mcp_handles"


class McpStores:
    """The sessionkeeper managers the MCP integration writes to.

    Build it with :meth:`from_config` (one config file, the usual way) or from managers you
    opened yourself; ``events``, ``state`` and ``handles`` default to ``sessions``. Close it with
    :meth:`aclose` or ``async with`` (closing also closes the managers it opened).
    """

    def __init__(
        self,
        sessions: AsyncSessionManager,
        events: AsyncSessionManager | None = None,
        state: AsyncSessionManager | None = None,
        *,
        handles: AsyncSessionManager | None = None,
        owned: bool = False,
    ) -> None:
        self.sessions = sessions
        self.events = events if events is not None else sessions
        self.state = state if state is not None else sessions
        self.handles = handles if handles is not None else sessions
        self._owned = owned
        self._closed = False

    @classmethod
    def from_config(cls, path: str | os.PathLike[str] | None = None) -> McpStores:
        """Open the stores a sessionkeeper config file describes (lookup as ``load_config``)."""
        return cls.from_settings(load_config(path))

    @classmethod
    def from_settings(cls, config: Config) -> McpStores:
        """Open the stores for an already loaded :class:`sessionkeeper.Config`."""
        opened: list[AsyncSessionManager | None] = [_open(config)]
        try:
            for suffix in (EVENTS_SUFFIX, STATE_SUFFIX, HANDLES_SUFFIX):
                opened.append(_open_sibling(config, suffix))
        except BaseException:
            for manager in reversed(opened):
                if manager is not None:
                    _close_now(manager)
            raise
        sessions, events, state, handles = opened
        assert sessions is not None
        return cls(sessions, events, state, handles=handles, owned=True)

    @classmethod
    def memory(cls, table_name: str = "mcp_sessions", **settings: Any) -> McpStores:
        """Stores on the in-process memory backend (tests, single-process development)."""
        return cls.from_settings(
            Config.from_mapping(
                {"backend": "memory", "backend_opts": {"table_name": table_name}, **settings}
            )
        )

    def managers(self) -> list[AsyncSessionManager]:
        """The distinct managers, sessions first."""
        found: list[AsyncSessionManager] = []
        for manager in (self.sessions, self.events, self.state, self.handles):
            if all(manager is not seen for seen in found):
                found.append(manager)
        return found

    async def cleanup_expired(self) -> int:
        """Remove expired sessions, events and state from every table; return how many."""
        return sum([await manager.cleanup_expired() for manager in self.managers()])

    async def aclose(self) -> None:
        """Close the managers this object opened (LIFO). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._owned:
            for manager in reversed(self.managers()):
                await manager.aclose()

    async def __aenter__(self) -> McpStores:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        tables = ", ".join(m.backend_name for m in self.managers())
        return f"<McpStores {tables}>"


def _open(config: Config) -> AsyncSessionManager:
    return AsyncSessionManager(
        config.backend,
        config.backend_opts,
        cleanup_interval=config.cleanup_interval,
        touch_resolution=config.touch_resolution,
        default_timeout=config.default_timeout,
        max_metadata_bytes=config.max_metadata_bytes,
        stats=config.stats,
        base_dir=config.base_dir,
    )


def _open_sibling(config: Config, suffix: str) -> AsyncSessionManager | None:
    """A manager on table ``<table_name><suffix>`` of the same store, or ``None`` if tables
    are not an option of this backend."""
    opts: Mapping[str, Any] = config.backend_opts
    table = opts.get("table_name", "sessions")
    if not isinstance(table, str):
        return None
    sibling = attrs.evolve(config, backend_opts={**opts, "table_name": table + suffix})
    try:
        return _open(sibling)
    except ConfigError:  # the backend has no table_name option
        return None


def _close_now(manager: AsyncSessionManager) -> None:
    with contextlib.suppress(Exception):
        manager.sync.close()
