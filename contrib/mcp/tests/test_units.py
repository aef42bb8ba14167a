"""The pieces of sessionkeeper-mcp in one process: SDK check, records, event store, state store."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

import sessionkeeper_mcp
from sessionkeeper import AsyncSessionManager, Session
from sessionkeeper.testing import ManualClock
from sessionkeeper_mcp import (
    SUPPORTED_SDK,
    McpStores,
    PersistentSessionManager,
    SessionKeeperEventStore,
    SessionRecord,
    SessionStateStore,
    UnsupportedSDK,
    check_sdk,
    lowlevel_server,
)
from sessionkeeper_mcp._compat import load_message

#: The metadata of a recorded transport session (what PersistentSessionManager stores).
RECORD = SessionRecord({"protocolVersion": "2025-11-25"}, "2025-11-25", None).to_metadata()


def kv_error(name: str) -> type[Exception]:
    """The error class ``name`` SessionStateStore raises: py-key-value's own when it is
    installed (with fastmcp), else the stand-in of the same name."""
    import importlib

    try:
        module = importlib.import_module("key_value.aio.errors")
    except ImportError:
        module = importlib.import_module("sessionkeeper_mcp._kv_errors")
    found: type[Exception] = getattr(module, name)
    return found


def run(function: Callable[[], Any]) -> Any:
    """Run an async test body."""
    return anyio.run(function)


def stores_with(clock: ManualClock) -> McpStores:
    """Memory stores (three tables of their own) on ``clock``."""
    table = "u" + uuid.uuid4().hex[:10]
    managers = [
        AsyncSessionManager(backend_opts={"table_name": f"{table}{suffix}"}, clock=clock)
        for suffix in ("", "_events", "_state")
    ]
    return McpStores(*managers, owned=True)


def notification(text: str) -> Any:
    """A JSON-RPC notification object of the installed SDK."""
    return load_message(
        {
            "jsonrpc": "2.0",
            "method": "notifications/message",
            "params": {"level": "info", "data": text},
        }
    )


async def replayed(store: Any, last_event_id: str) -> tuple[str | None, list[tuple[str, str]]]:
    """Replay after ``last_event_id``: the stream and (event id, text) of each event sent."""
    sent: list[tuple[str, str]] = []

    async def send(event: Any) -> None:
        data = sessionkeeper_mcp._compat.dump_message(event.message)
        sent.append((event.event_id, data["params"]["data"]))

    stream = await store.replay_events_after(last_event_id, send)
    return stream, sent


async def live_ids(manager: AsyncSessionManager) -> list[str]:
    """Every live record id of ``manager``."""
    return await manager.list()


class TestSDKCheck:
    """Only the tested SDK lines are accepted, with a message naming them."""

    @pytest.mark.parametrize("found", ["1.29.1", "1.26.0", "2.0.0", "2.2.0", "2.4.0", "3.0.0"])
    def test_other_versions_are_refused(self, found: str) -> None:
        """A release outside 1.30.x / 2.3.x is refused, naming the supported ones."""
        with pytest.raises(UnsupportedSDK, match=r"supports mcp 1\.30\.x or 2\.3\.x") as caught:
            check_sdk(found, skip_version_check=False)
        assert caught.value.found == found
        assert found in str(caught.value)
        assert "SESSIONKEEPER_MCP_SKIP_VERSION_CHECK" in str(caught.value)

    def test_installed_version_is_accepted(self) -> None:
        """The installed SDK (a supported one in this test run) passes the check."""
        assert check_sdk() == sessionkeeper_mcp.SDK_VERSION
        assert sessionkeeper_mcp.SDK_VERSION.split(".")[:2] in (["1", "30"], ["2", "3"])

    def test_skip_flag_still_checks_the_structure(self) -> None:
        """With the version check skipped, a release whose manager looks right is accepted."""
        assert check_sdk("9.9.9", skip_version_check=True) == "9.9.9"

    def test_unsupported_sdk_is_an_import_error(self) -> None:
        """The error is an ImportError, as failing to import a dependency would be."""
        error = UnsupportedSDK(None, "install the mcp package")
        assert isinstance(error, ImportError)
        assert SUPPORTED_SDK in str(error)
        assert "no mcp SDK" in str(error)


class TestSessionRecord:
    """The stored metadata of an MCP session."""

    def test_round_trip(self) -> None:
        """A record survives storing in a Session's metadata."""
        record = SessionRecord(
            {"protocolVersion": "2025-11-25", "clientInfo": {"name": "c", "version": "1"}},
            "2025-11-25",
            {"client_id": "alice", "issuer": None, "subject": None},
        )
        session = Session("a" * 32, 1, 1, 1000, record.to_metadata())
        assert SessionRecord.from_session(session) == record

    @pytest.mark.parametrize(
        "metadata",
        [
            {},
            {"user_id": "x"},
            {"mcp": 99, "initialize": {}, "protocol_version": "v"},
            {"mcp": 1, "initialize": [], "protocol_version": "v", "owner": None},
            {"mcp": 1, "initialize": {}, "protocol_version": "v", "owner": "alice"},
        ],
    )
    def test_other_metadata_is_not_a_record(self, metadata: dict[str, Any]) -> None:
        """Metadata that is not a version-1 MCP record reads as no record."""
        assert SessionRecord.from_session(Session("b" * 32, 1, 1, None, metadata)) is None

    def test_owner(self) -> None:
        """Only the creating credential owns a session; anonymous owns only anonymous ones."""
        alice = {"client_id": "alice", "issuer": None, "subject": None}
        owned = SessionRecord({}, "v", alice)
        anonymous = SessionRecord({}, "v", None)
        assert owned.owned_by(dict(alice))
        assert not owned.owned_by({**alice, "client_id": "bob"})
        assert not owned.owned_by(None)
        assert anonymous.owned_by(None)
        assert not anonymous.owned_by(alice)


class TestEventStore:
    """Events in sessionkeeper, scoped by session, capped and purged."""

    def test_replay_after_an_event_sends_the_rest_of_its_stream(self) -> None:
        """Replay sends the later events of the same stream, in order, and names the stream."""

        async def body() -> None:
            async with stores_with(ManualClock()) as stores:
                events = SessionKeeperEventStore(stores).for_session("a" * 32)
                priming = await events.store_event("7", None)
                first = await events.store_event("7", notification("one"))
                await events.store_event("_GET_stream", notification("elsewhere"))
                second = await events.store_event("7", notification("two"))
                third = await events.store_event("7", notification("three"))
                assert await replayed(events, first) == ("7", [(second, "two"), (third, "three")])
                assert await replayed(events, priming) == (
                    "7",
                    [(first, "one"), (second, "two"), (third, "three")],
                )
                assert await replayed(events, third) == ("7", [])

        run(body)

    def test_another_worker_continues_and_replays_the_stream(self) -> None:
        """A second view of the same session (another worker) numbers on and replays all."""

        async def body() -> None:
            async with stores_with(ManualClock()) as stores:
                parent = SessionKeeperEventStore(stores)
                one = await parent.for_session("a" * 32).store_event(
                    "_GET_stream", notification("a")
                )
                later = parent.for_session("a" * 32)
                two = await later.store_event("_GET_stream", notification("b"))
                assert two != one
                assert await replayed(later, one) == ("_GET_stream", [(two, "b")])

        run(body)

    def test_sessions_do_not_see_each_others_events(self) -> None:
        """An event id of one session replays nothing in another."""

        async def body() -> None:
            async with stores_with(ManualClock()) as stores:
                parent = SessionKeeperEventStore(stores)
                mine = await parent.for_session("a" * 32).store_event("1", notification("secret"))
                await parent.for_session("a" * 32).store_event("1", notification("more"))
                assert await replayed(parent.for_session("b" * 32), mine) == (None, [])

        run(body)

    @pytest.mark.parametrize("bad", ["", "nonsense", "0123456789abcdef", "xyz.1", "0" * 16 + ".-1"])
    def test_malformed_event_ids_replay_nothing(self, bad: str) -> None:
        """A Last-Event-ID that this store did not issue replays nothing."""

        async def body() -> None:
            async with stores_with(ManualClock()) as stores:
                events = SessionKeeperEventStore(stores).for_session("a" * 32)
                await events.store_event("1", notification("x"))
                assert await replayed(events, bad) == (None, [])

        run(body)

    def test_stream_cap_drops_the_oldest(self) -> None:
        """Only the last max_events_per_stream events of a stream are kept."""

        async def body() -> None:
            async with stores_with(ManualClock()) as stores:
                events = SessionKeeperEventStore(stores, max_events_per_stream=3).for_session(
                    "a" * 32
                )
                ids = [await events.store_event("s", notification(str(n))) for n in range(6)]
                stream, sent = await replayed(events, ids[0])
                assert stream == "s"
                assert [text for _, text in sent] == ["3", "4", "5"]
                # one stream record, one index, three events
                assert len(await live_ids(stores.events)) == 5

        run(body)

    def test_stream_count_cap_drops_the_oldest_stream(self) -> None:
        """Only the last max_streams_per_session streams of a session are kept."""

        async def body() -> None:
            async with stores_with(ManualClock()) as stores:
                parent = SessionKeeperEventStore(stores, max_streams_per_session=2)
                events = parent.for_session("a" * 32)
                first = await events.store_event("s1", notification("1"))
                await events.store_event("s1", notification("1b"))
                second = await events.store_event("s2", notification("2"))
                await events.store_event("s2", notification("2b"))
                await events.store_event("s3", notification("3"))
                assert await replayed(events, first) == (None, [])
                assert [t for _, t in (await replayed(events, second))[1]] == ["2b"]

        run(body)

    def test_events_expire_after_ttl(self) -> None:
        """An event is gone ttl seconds after it was written."""

        async def body() -> None:
            clock = ManualClock()
            async with stores_with(clock) as stores:
                events = SessionKeeperEventStore(stores, ttl=10).for_session("a" * 32)
                first = await events.store_event("s", notification("1"))
                await events.store_event("s", notification("2"))
                clock.advance(10_001)
                assert await replayed(events, first) == (None, [])

        run(body)

    def test_purge_removes_every_record_of_the_session(self) -> None:
        """purge() leaves nothing of the session and leaves other sessions alone."""

        async def body() -> None:
            async with stores_with(ManualClock()) as stores:
                parent = SessionKeeperEventStore(stores)
                for stream in ("1", "2", "_GET_stream"):
                    await parent.for_session("a" * 32).store_event(stream, notification("x"))
                kept = await parent.for_session("b" * 32).store_event("1", notification("y"))
                removed = await parent.purge("a" * 32)
                assert removed == 7  # index, three streams, three events
                assert all(".bbbb" in key for key in await live_ids(stores.events))
                assert await replayed(parent.for_session("b" * 32), "0" * 16 + ".0") == (None, [])
                assert kept.endswith(".1")  # events are numbered from 1

        run(body)

    def test_muted_store_writes_nothing(self) -> None:
        """While muted (a handshake replay) no event is stored."""

        async def body() -> None:
            async with stores_with(ManualClock()) as stores:
                events = SessionKeeperEventStore(stores).for_session("a" * 32)
                events.muted = True
                await events.store_event("1", notification("x"))
                assert await live_ids(stores.events) == []

        run(body)

    def test_too_large_event_is_skipped_not_raised(self) -> None:
        """An event over the metadata limit is not stored, and storing does not fail."""

        async def body() -> None:
            clock = ManualClock()
            small = [
                AsyncSessionManager(
                    backend_opts={"table_name": "small" + uuid.uuid4().hex[:8]},
                    clock=clock,
                    max_metadata_bytes=1024,
                )
                for _ in range(3)
            ]
            async with McpStores(*small, owned=True) as stores:
                events = SessionKeeperEventStore(stores).for_session("a" * 32)
                first = await events.store_event("s", notification("small"))
                await events.store_event("s", notification("x" * 5000))
                last = await events.store_event("s", notification("after"))
                assert await replayed(events, first) == ("s", [(last, "after")])

        run(body)

    @pytest.mark.parametrize(
        "options",
        [{"max_events_per_stream": 0}, {"max_streams_per_session": 0}, {"ttl": 0}, {"ttl": -1.0}],
    )
    def test_bad_options_are_refused(self, options: dict[str, Any]) -> None:
        """Caps below one and non-positive TTLs are refused with a message naming them."""
        stores = McpStores.memory("bad" + uuid.uuid4().hex[:8])
        with pytest.raises(ValueError, match=next(iter(options))):
            SessionKeeperEventStore(stores, **options)
        run(stores.aclose)


class TestStateStore:
    """The AsyncKeyValue adapter FastMCP's ctx.set_state uses."""

    def _state(self) -> tuple[SessionStateStore, McpStores, ManualClock]:
        clock = ManualClock()
        stores = stores_with(clock)
        return SessionStateStore(stores), stores, clock

    def test_put_get_delete(self) -> None:
        """A value put is got back (a fresh dict), per collection, until it is deleted."""

        async def body() -> None:
            kv, stores, _ = self._state()
            async with stores:
                await kv.put("k", {"value": [1, 2]}, collection="c1")
                await kv.put("k", {"value": "other"}, collection="c2")
                got = await kv.get("k", collection="c1")
                assert got == {"value": [1, 2]}
                assert await kv.get("k", collection="c2") == {"value": "other"}
                assert await kv.get("k") is None
                assert await kv.delete("k", collection="c1") is True
                assert await kv.delete("k", collection="c1") is False
                assert await kv.get("k", collection="c1") is None

        run(body)

    def test_ttl(self) -> None:
        """ttl() reports the time left; the value is gone once it ran out."""

        async def body() -> None:
            kv, stores, clock = self._state()
            async with stores:
                await kv.put("k", {"v": 1}, ttl=10)
                await kv.put("forever", {"v": 2})
                clock.advance(4_000)
                assert await kv.ttl("k") == ({"v": 1}, 6.0)
                assert await kv.ttl("forever") == ({"v": 2}, None)
                assert await kv.ttl("missing") == (None, None)
                clock.advance(6_001)
                assert await kv.get("k") is None

        run(body)

    def test_many(self) -> None:
        """The bulk calls do what the single calls do, key by key."""

        async def body() -> None:
            kv, stores, _ = self._state()
            async with stores:
                await kv.put_many(["a", "b"], [{"n": 1}, {"n": 2}], ttl=60)
                assert await kv.get_many(["a", "b", "c"]) == [{"n": 1}, {"n": 2}, None]
                assert [v for v, _ in await kv.ttl_many(["a", "c"])] == [{"n": 1}, None]
                assert await kv.delete_many(["a", "c"]) == 1
                with pytest.raises(ValueError, match="2 keys and 1 values"):
                    await kv.put_many(["a", "b"], [{"n": 1}])

        run(body)

    def test_session_keys_follow_the_session(self) -> None:
        """A key of a transport session reads only while that session is live, and is purged."""

        async def body() -> None:
            kv, stores, clock = self._state()
            async with stores:
                sid = uuid.uuid4().hex
                now = clock()
                await stores.sessions.store(Session(sid, now, now, 60_000, RECORD))
                await kv.put(f"{sid}:count", {"value": 3}, collection="fastmcp_state", ttl=86400)
                await kv.put(f"{sid}:other", {"value": 4}, collection="fastmcp_state", ttl=86400)
                assert await kv.get(f"{sid}:count", collection="fastmcp_state") == {"value": 3}
                clock.advance(60_001)  # the session expires: its state is hidden at once
                assert await kv.get(f"{sid}:count", collection="fastmcp_state") is None
                assert await kv.purge(sid) == 2  # the two keys, by their owner
                assert await live_ids(stores.state) == []

        run(body)

    def test_bad_values_and_ttls_raise_py_key_value_errors(self) -> None:
        """A value that is not JSON-compatible raises py-key-value's SerializationError naming
        the key; a ttl that is zero, negative, a bool, not a number or not finite raises its
        InvalidTTLError; nothing is stored."""
        serialization_error, invalid_ttl = (
            kv_error("SerializationError"),
            kv_error("InvalidTTLError"),
        )

        async def body() -> None:
            kv, stores, _ = self._state()
            async with stores:
                for bad in ({"v": object()}, {"v": {1, 2}}, {"v": float("nan")}):
                    with pytest.raises(serialization_error, match="key 'k'"):
                        await kv.put("k", bad)
                for ttl in (0, -100, True, "soon", float("inf")):
                    with pytest.raises(invalid_ttl):
                        await kv.put("k", {"v": 1}, ttl=ttl)  # type: ignore[arg-type]
                assert await live_ids(stores.state) == []

        run(body)

    def test_value_size_limit_is_configurable_and_named(self) -> None:
        """A value over ``max_value_bytes`` raises ValueTooLargeError whose message names its
        size and the limit, and is not stored; one at the limit is. The default limit is what
        the table's max_metadata_bytes leaves beside the key; a limit over that is refused."""
        too_large = kv_error("ValueTooLargeError")

        async def body() -> None:
            clock = ManualClock()
            stores = stores_with(clock)
            async with stores:
                kv = SessionStateStore(stores, max_value_bytes=100)
                # {"s": "a" * n} packs to n + 4 bytes (map, key, str header) below 32 chars,
                # n + 5 from 32 to 255
                await kv.put("k", {"s": "a" * 95})
                with pytest.raises(too_large, match=r"size: 101;max_size: 100"):
                    await kv.put("big", {"s": "a" * 96})
                assert await kv.get("big") is None
                assert await kv.get("k") == {"s": "a" * 95}
                table = stores.state.config.max_metadata_bytes
                # beside the value: the map and its three keys (7), "default" (8), "key" (4)
                with pytest.raises(too_large, match=rf"max_size: {table - 19}"):
                    await SessionStateStore(stores).put("key", {"s": "a" * table})
                for bad in (0, table + 1, True, 1.5):
                    with pytest.raises(ValueError, match="max_value_bytes"):
                        SessionStateStore(stores, max_value_bytes=bad)  # type: ignore[arg-type]

        run(body)

    def test_session_shaped_key_without_a_transport_session_is_a_plain_key(self) -> None:
        """On the sessionless protocol a key shaped like ``<32 hex digits>:<key>`` is a key
        like any other: it reads back, has no owner, and no purge removes it (issue 18; before,
        it read as missing because no transport session of that id was live)."""

        async def body() -> None:
            kv, stores, _ = self._state()
            async with stores:
                key = f"{uuid.uuid4().hex}:count"
                await kv.put(key, {"value": 1}, ttl=60)
                assert await kv.get(key) == {"value": 1}
                assert await kv.purge(key.split(":")[0]) == 0
                assert await kv.get(key) == {"value": 1}
                [record] = await live_ids(stores.state)
                assert (await stores.state.peek(record)).owner is None

        run(body)

    def test_ttl_counts_from_the_put_not_from_reads(self) -> None:
        """Reads do not extend an entry's life: it expires ``ttl`` after the put, as in
        py-key-value's stores."""

        async def body() -> None:
            kv, stores, clock = self._state()
            async with stores:
                await kv.put("k", {"v": 1}, ttl=10)
                for _ in range(3):
                    clock.advance(3_000)
                    assert await kv.get("k") == {"v": 1}
                clock.advance(1_001)
                assert await kv.ttl("k") == (None, None)

        run(body)

    def test_empty_collection_is_the_default_one(self) -> None:
        """``collection=""`` names the default collection, as in py-key-value's stores."""

        async def body() -> None:
            kv, stores, _ = self._state()
            async with stores:
                await kv.put("k", {"v": 1}, collection="")
                assert await kv.get("k") == {"v": 1}

        run(body)


class TestStores:
    """McpStores opens the sessions, events and state tables from one config file."""

    def test_separate_tables_when_the_backend_has_them(self, tmp_path: Path) -> None:
        """With sqlitedict the events, the state and the handles get tables of their own in
        the same file."""
        pytest.importorskip("sessionkeeper_sqlitedict")
        config = tmp_path / "sk.toml"
        config.write_text(
            '[sessionkeeper]\nbackend = "sqlitedict"\n\n[sessionkeeper.backend_opts]\n'
            'file_path = "s.sqlite"\ntable_name = "mine"\n'
        )

        async def body() -> None:
            async with McpStores.from_config(config) as stores:
                assert len(stores.managers()) == 4
                tables = [m.config.backend_opts["table_name"] for m in stores.managers()]
                assert tables == ["mine", "mine_mcp_events", "mine_mcp_state", "mine_mcp_handles"]
                events = SessionKeeperEventStore(stores).for_session("a" * 32)
                await events.store_event("1", notification("x"))
                assert await stores.sessions.list() == []
                assert len(await stores.events.list()) == 3
            assert (tmp_path / "s.sqlite").exists()

        run(body)

    def test_shared_table_when_given_one_manager(self) -> None:
        """Built from one manager, all four share it (ids cannot collide)."""
        manager = AsyncSessionManager(backend_opts={"table_name": "one" + uuid.uuid4().hex[:8]})
        stores = McpStores(manager)
        assert stores.managers() == [manager]
        assert stores.events is manager
        assert stores.state is manager
        assert stores.handles is manager
        run(stores.aclose)
        assert not manager.sync.closed  # not owned: left open
        run(manager.aclose)


class TestPlumbing:
    """Argument checks of the public entry points."""

    def test_lowlevel_server_rejects_other_objects(self) -> None:
        """Something that is not an MCP server is refused with a message saying what is."""
        with pytest.raises(TypeError, match="is not an MCP server"):
            lowlevel_server(object())

    def test_lowlevel_server_of_the_sdk_server(self) -> None:
        """The SDK's high-level server unwraps to its low-level Server."""
        from mcp.server.lowlevel.server import Server

        if sessionkeeper_mcp.SDK_VERSION.startswith("1."):
            from mcp.server.fastmcp import FastMCP as High
        else:
            from mcp.server.mcpserver import MCPServer as High
        assert isinstance(lowlevel_server(High("x")), Server)

    def test_check_interval_must_be_non_negative(self) -> None:
        """A negative check interval is refused."""
        from mcp.server.lowlevel.server import Server

        stores = McpStores.memory("ci" + uuid.uuid4().hex[:8])
        with pytest.raises(ValueError, match="check_interval"):
            PersistentSessionManager(app=Server("x"), stores=stores, check_interval=-1)
        run(stores.aclose)

    def test_timeout_follows_the_idle_timeout(self) -> None:
        """The stored timeout is the SDK's session_idle_timeout in ms (None: never)."""
        from mcp.server.lowlevel.server import Server

        stores = McpStores.memory("to" + uuid.uuid4().hex[:8])
        assert (
            PersistentSessionManager(
                app=Server("x"), stores=stores, session_idle_timeout=2.5
            ).timeout_ms
            == 2500
        )
        assert (
            PersistentSessionManager(
                app=Server("x"), stores=stores, session_idle_timeout=None
            ).timeout_ms
            is None
        )
        run(stores.aclose)
