"""The export format and the transfers of :mod:`sessionkeeper._transfer` (issue 5).

Round trips run between every pair of installed backends — memory (in-process, through the API),
sqlitedict, leveldb, a single zmq node without CURVE and redis (when ``redis-server`` is on the
machine) — and check that ids, timestamps, timeouts and metadata arrive exactly and that the
source is not touched. Bad input is written by hand, line by line, and each problem must be named
with its line number.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import shutil
import socket
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from sessionkeeper import Session, SessionManager, StorageError
from sessionkeeper._plugins import installed_backends
from sessionkeeper.transfer import (
    EXPORT_FORMAT,
    EXPORT_VERSION,
    ExportFormatError,
    ExportHeader,
    ExportReader,
    ExportWriter,
    LineError,
    SessionDigest,
    TransferAborted,
    export_sessions,
    import_sessions,
    migrate_sessions,
)

HOUR = 3_600_000
DAY = 24 * HOUR

# --- stores of every installed backend ---------------------------------------------------------

Opener = Callable[[], SessionManager]


class RedisProcess:
    """One ``redis-server`` on a free loopback port, for the whole module."""

    def __init__(self, directory: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        binary = shutil.which("redis-server")
        assert binary is not None
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(directory), "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"redis-server did not answer on port {self.port}")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=15)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server for this module's tests (skipped where there is none)."""
    if "redis" not in installed_backends() or shutil.which("redis-server") is None:
        pytest.skip("needs sessionkeeper-redis and redis-server")
    server = RedisProcess(tmp_path_factory.mktemp("redis"))
    yield server.url
    server.stop()


BACKENDS = ("memory", "sqlitedict", "leveldb", "zmq", "redis")


def backend_opts(name: str, directory: Path, request: pytest.FixtureRequest) -> dict[str, Any]:
    """Options for a fresh store of ``name`` in ``directory``; skips when it is not installed."""
    if name not in installed_backends():
        pytest.skip(f"the {name} backend is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    table = f"t{uuid.uuid4().hex[:12]}"
    if name == "memory":
        return {"table_name": table}
    if name == "sqlitedict":
        return {"file_path": str(directory / "sessions.sqlite")}
    if name == "leveldb":
        return {"db_path": str(directory / "sessions.ldb"), "sync": False}
    if name == "zmq":
        from sessionkeeper_zmq.testing import cluster_opts

        # Its own cluster id: two one-node clusters with one id and one member name are one
        # store by identity (what the zmq backend reports), and migrate would refuse them.
        return cluster_opts(directory, 1, curve=False, cluster_id=table)[0]
    assert name == "redis"
    return {"url": request.getfixturevalue("redis_url"), "table_name": table}


class Stores:
    """Opens managers on fresh stores and closes them all at the end of the test.

    A memory store lives as long as a manager holds its table, so :meth:`store` keeps one
    manager open per store (the *keeper*); reopening a memory store then sees its sessions, as
    reopening a file does.
    """

    def __init__(self, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.tmp_path = tmp_path
        self.request = request
        self.stack = ExitStack()

    def store(self, name: str, label: str) -> Opener:
        """A new, empty store of backend ``name``; returns a function that opens it."""
        opts = backend_opts(name, self.tmp_path / label, self.request)
        if name in ("memory", "zmq"):  # per process: keep one manager open for the whole test
            keeper = self.stack.enter_context(
                SessionManager(backend=name, backend_opts=opts, cleanup_interval=0)
            )
            if name == "zmq":
                from sessionkeeper_zmq.testing import wait_ready

                wait_ready([keeper])
            return lambda: _Borrowed(keeper)  # type: ignore[return-value]
        return lambda: SessionManager(backend=name, backend_opts=opts, cleanup_interval=0)

    def close(self) -> None:
        self.stack.close()


class _Borrowed:
    """A manager handed out for a ``with`` block without being closed at its end."""

    def __init__(self, manager: SessionManager) -> None:
        self.manager = manager

    def __enter__(self) -> SessionManager:
        return self.manager

    def __exit__(self, *exc_info: object) -> None:
        return None


@pytest.fixture
def stores(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Stores]:
    """Fresh stores of any backend, closed after the test."""
    opened = Stores(tmp_path, request)
    yield opened
    opened.close()


def sample_sessions(now: int, *, live: int = 20) -> list[Session]:
    """Sessions that exercise every field: no timeout, long timeouts, idle ones, metadata of
    every JSON type (nested, unicode, floats, 64-bit integers, empty), versions above 1, owners
    and absolute timeouts, plus four expired (one by its absolute timeout only)."""
    sessions = [
        Session(
            "versioned-owned",
            now - HOUR,
            now - 5,
            DAY,
            {"n": 41},
            version=42,
            owner="user_456 é漢字🙂",
            absolute_timeout_ms=8 * HOUR,
        ),
        Session("owner-only", now - HOUR, now - HOUR, None, {}, version=2**63 - 1, owner="o"),
        Session("absolute-only", now - HOUR, now, None, {}, absolute_timeout_ms=2 * HOUR),
        Session("plain", now - HOUR, now - HOUR, None, {}),
        Session(
            "rich-metadata",
            now - 2 * HOUR,
            now - 10,
            DAY,
            {
                "user_id": "user_456",
                "roles": ["admin", "ops"],
                "nested": {"a": [1, 2.5, None, True, {"b": "é漢字🙂"}]},
                "big": 2**63 - 1,
                "negative": -(2**63),
                "float": 0.1,
                "empty": {},
            },
        ),
        Session("!~odd-but-valid~!", now - DAY, now - 5, 10 * DAY, {"k": "v"}),
        Session("x" * 256, now, now, DAY, {"long": "id"}),
    ]
    for i in range(live):
        sessions.append(
            Session(f"s{i:03d}", now - 1000 - i, now - i, DAY + i, {"user": i, "tags": ["t"] * i})
        )
    sessions += [
        Session("expired-a", now - 3 * HOUR, now - 2 * HOUR, HOUR, {"gone": True}),
        Session("expired-b", now - DAY, now - DAY, 1, {}),
        Session("expired-c", now - 10 * DAY, now - 9 * DAY, DAY, {"n": 1}),
        Session(
            "expired-absolute",
            now - 2 * DAY,
            now - 1,
            DAY,
            {"busy": True},
            version=9,
            owner="user_456",
            absolute_timeout_ms=DAY,
        ),
    ]
    return sessions


#: The ids of the sample sessions that are expired.
EXPIRED = ("expired-a", "expired-b", "expired-c", "expired-absolute")


def live_only(sessions: list[Session], now: int) -> dict[str, Session]:
    return {s.id: s for s in sessions if not s.is_expired(now)}


def contents(manager: SessionManager) -> dict[str, Session]:
    """Every stored session, expired ones included, without touching any."""
    return {s.id: s for s in manager.iter_sessions(include_expired=True)}


def seed(opener: Opener, sessions: list[Session]) -> None:
    """Store ``sessions`` exactly as they are, versions included (``store_many`` writes what it
    is given; ``store`` gives each a new version)."""
    with opener() as manager:
        manager.store_many(sessions)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def assert_same(found: dict[str, Session], expected: dict[str, Session]) -> None:
    """Same ids, and each session equal field by field (metadata compared decoded), its
    version, owner and absolute timeout included."""
    assert sorted(found) == sorted(expected)
    for session_id, session in expected.items():
        got = found[session_id]
        fields = ("created_at", "last_accessed", "timeout_ms", "version", "owner")
        fields += ("absolute_timeout_ms",)
        assert [getattr(got, f) for f in fields] == [getattr(session, f) for f in fields], (
            session_id
        )
        assert got.metadata == session.metadata, session_id
        assert got == session


PAIRS = [(a, b) for a in BACKENDS for b in BACKENDS]


class TestRoundTrips:
    @pytest.mark.parametrize(("source", "target"), PAIRS, ids=[f"{a}-{b}" for a, b in PAIRS])
    def test_export_then_import_preserves_everything(
        self, stores: Stores, source: str, target: str, tmp_path: Path
    ) -> None:
        """export → import between two backends carries every live session exactly (ids, both
        timestamps, both timeouts, metadata, version, owner), leaves out the expired ones, and
        touches nothing."""
        now = now_ms()
        sessions = sample_sessions(now)
        src, dst = stores.store(source, "src"), stores.store(target, "dst")
        seed(src, sessions)
        with src() as manager:
            before = contents(manager)
            exported = export_sessions(manager, tmp_path / "out.jsonl.gz")
            assert contents(manager) == before, "export touched the source"
        expected = live_only(sessions, now)
        assert exported.count == len(expected)
        with dst() as manager:
            report = import_sessions(manager, tmp_path / "out.jsonl.gz")
            assert report.ok
            assert report.imported == len(expected)
            assert_same(contents(manager), expected)

    @pytest.mark.parametrize(("source", "target"), PAIRS, ids=[f"{a}-{b}" for a, b in PAIRS])
    def test_migrate_preserves_everything_and_verifies(
        self, stores: Stores, source: str, target: str
    ) -> None:
        """migrate_sessions copies every live session exactly (versions and owners included:
        versions are data), touches nothing in the source, and its verification reports the
        same count and digest on both sides."""
        now = now_ms()
        sessions = sample_sessions(now)
        src, dst = stores.store(source, "src"), stores.store(target, "dst")
        seed(src, sessions)
        expected = live_only(sessions, now)
        with src() as source_manager, dst() as target_manager:
            before = contents(source_manager)
            report = migrate_sessions(source_manager, target_manager)
            assert contents(source_manager) == before, "migrate touched the source"
            assert_same(contents(target_manager), expected)
        assert report.verified
        assert report.copied == report.source_count == report.target_count == len(expected)
        assert report.source_digest == report.target_digest
        digest = SessionDigest()
        for session in expected.values():
            digest.add(session)
        assert report.source_digest == digest.hexdigest()

    @pytest.mark.parametrize("backend", ["memory", "sqlitedict", "leveldb"])
    def test_include_expired_carries_expired_sessions(
        self, stores: Stores, backend: str, tmp_path: Path
    ) -> None:
        """With include_expired, export, import and migrate take expired sessions too."""
        now = now_ms()
        sessions = sample_sessions(now, live=2)
        src, dst, dst2 = (stores.store(backend, n) for n in ("src", "dst", "dst2"))
        seed(src, sessions)
        with src() as manager:
            assert export_sessions(manager, tmp_path / "all.jsonl", include_expired=True).count == (
                len(sessions)
            )
        with dst() as manager:
            report = import_sessions(manager, tmp_path / "all.jsonl", include_expired=True)
            assert report.imported == len(sessions)
            assert_same(contents(manager), {s.id: s for s in sessions})
        with src() as source_manager, dst2() as target_manager:
            migrated = migrate_sessions(source_manager, target_manager, include_expired=True)
            assert migrated.verified
            assert migrated.copied == len(sessions)

    def test_import_skips_expired_by_default(self, stores: Stores, tmp_path: Path) -> None:
        """Sessions that expired by the time of the import are counted and not stored."""
        now = now_ms()
        sessions = sample_sessions(now, live=1)
        src, dst = stores.store("memory", "src"), stores.store("memory", "dst")
        seed(src, sessions)
        with src() as manager:
            export_sessions(manager, tmp_path / "all.jsonl", include_expired=True)
        with dst() as manager:
            report = import_sessions(manager, tmp_path / "all.jsonl")
            assert report.skipped_expired == 4
            assert sorted(contents(manager)) == sorted(live_only(sessions, now))


# --- the file format ---------------------------------------------------------------------------


def write_lines(path: Path, *lines: object, raw: bytes = b"") -> Path:
    """A file of JSON lines (str items are written as they are) plus ``raw`` bytes."""
    with path.open("wb") as handle:
        for line in lines:
            text = line if isinstance(line, str) else json.dumps(line)
            handle.write(text.encode() + b"\n")
        handle.write(raw)
    return path


def header(**changes: Any) -> dict[str, Any]:
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "source_backend": "memory",
        "exported_at": 1_700_000_000_000,
        **changes,
    }


def record(session_id: str = "abc", **changes: Any) -> dict[str, Any]:
    """A session line of the current export format (every key present)."""
    return {
        "id": session_id,
        "created_at": 1_700_000_000_000,
        "last_accessed": 1_700_000_000_000,
        "timeout_ms": None,
        "metadata": {"k": 1},
        "version": 1,
        "owner": None,
        "absolute_timeout_ms": None,
        **changes,
    }


def end_line(*sessions: dict[str, Any]) -> dict[str, Any]:
    digest = SessionDigest()
    for data in sessions:
        digest.add(Session(**data))
    return {"end": True, "count": digest.count, "digest": digest.hexdigest()}


def read_all(path: Path) -> tuple[ExportReader, list[tuple[int, Session | LineError]]]:
    with ExportReader(path) as reader:
        items = list(reader)
    return reader, items


class TestWriter:
    def test_file_has_header_sessions_and_end_line(self, tmp_path: Path) -> None:
        """A written file is the header, one line per session, and the end line with the count
        and digest, each a JSON object on its own line."""
        sessions = sample_sessions(now_ms(), live=2)
        target = tmp_path / "out.jsonl"
        with ExportWriter(target, ExportHeader(source_backend="x", exported_at=5)) as writer:
            for session in sessions:
                writer.write(session)
        lines = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
        assert lines[0] == {
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "source_backend": "x",
            "exported_at": 5,
            "include_expired": False,
        }
        assert lines[1:-1] == [s.to_dict() for s in sessions]
        assert lines[-1] == {
            "end": True,
            "count": len(sessions),
            "digest": writer.digest.hexdigest(),
        }

    def test_gzip_by_suffix_and_private_mode(self, tmp_path: Path) -> None:
        """A ``.gz`` target is gzip-compressed; every export file is created with mode 0600."""
        target = tmp_path / "out.jsonl.gz"
        with ExportWriter(target, ExportHeader(source_backend="x", exported_at=1)) as writer:
            writer.write(Session("a", 1, 2))
        with gzip.open(target, "rt", encoding="utf-8") as handle:
            assert json.loads(handle.readline())["format"] == EXPORT_FORMAT
        assert stat.S_IMODE(target.stat().st_mode) == 0o600

    def test_failure_leaves_no_file(self, tmp_path: Path) -> None:
        """A write interrupted by an exception leaves neither the file nor a temporary one."""
        target = tmp_path / "out.jsonl"

        def interrupted() -> None:
            with ExportWriter(target, ExportHeader(source_backend="x", exported_at=1)) as writer:
                writer.write(Session("a", 1, 2))
                raise RuntimeError("the store failed")

        with pytest.raises(RuntimeError, match="the store failed"):
            interrupted()
        assert list(tmp_path.iterdir()) == []

    def test_failing_store_leaves_no_export(self, tmp_path: Path) -> None:
        """export_sessions of a store that fails while being read raises StorageError and leaves
        no file behind."""
        path = tmp_path / "s.sqlite"
        with SessionManager(backend="sqlitedict", backend_opts={"file_path": str(path)}) as m:
            m.store(Session("good", 1, 2))
        import contextlib
        import sqlite3

        with contextlib.closing(sqlite3.connect(path)) as raw, raw:
            raw.execute("INSERT INTO sessions VALUES ('bad', x'00ff')")
        with (
            SessionManager(
                backend="sqlitedict", backend_opts={"file_path": str(path)}, read_only=True
            ) as manager,
            pytest.raises(StorageError, match="do not decode"),
        ):
            export_sessions(manager, tmp_path / "out.jsonl")
        assert not list(tmp_path.glob("*.jsonl*"))
        assert not list(tmp_path.glob(".out.jsonl*"))

    def test_dash_writes_to_stdout(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """``-`` streams the export to standard output."""
        buffer = io.BytesIO()
        monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(buffer))
        with SessionManager(cleanup_interval=0) as manager:
            manager.store(Session("a", 1, 2, None, {"x": [1]}))
            report = export_sessions(manager, "-")
        lines = buffer.getvalue().decode().splitlines()
        assert report.count == 1
        assert json.loads(lines[1]) == Session("a", 1, 2, None, {"x": [1]}).to_dict()
        assert json.loads(lines[-1])["count"] == 1


class TestDigest:
    def test_order_does_not_matter(self) -> None:
        """The digest of a set of sessions is the same whatever the order they are added in."""
        sessions = sample_sessions(1_700_000_000_000)
        forward, backward = SessionDigest(), SessionDigest()
        for session in sessions:
            forward.add(session)
        for session in reversed(sessions):
            backward.add(session)
        assert forward == backward
        assert forward.hexdigest() == backward.hexdigest()

    def test_each_format_version_has_a_fixed_digest(self) -> None:
        """The digest of a fixed session is pinned for every export format version: version 1's
        is the value the version-1 writer computed (so old files still check), version 2's
        covers every field. A change of the session codec that moved either would leave files
        on disk failing their check: it must bump the export format instead."""
        fields = ("pinned", 1_700_000_000_000, 1_700_000_000_500, 60_000, {"k": [1, 2.5, None]})
        old, new = SessionDigest(1), SessionDigest(2)
        old.add(Session(*fields))
        new.add(Session(*fields, version=7, owner="user_456", absolute_timeout_ms=3_600_000))
        assert old.hexdigest() == "9f508a1d0846bebc18ac6422fc78f480"
        assert new.hexdigest() == "73bed7b5f0d354bbd966bf5755a6fc4f"

    def test_any_field_changes_it(self) -> None:
        """Changing one field of one session changes the digest."""
        base = Session("a", 10, 20, 30, {"k": "v"})
        variants = [
            base.replace(id="b"),
            base.replace(created_at=11),
            base.replace(last_accessed=21),
            base.replace(timeout_ms=None),
            base.replace(metadata={"k": "w"}),
            base.replace(version=2),
            base.replace(owner="someone"),
            base.replace(absolute_timeout_ms=60_000),
        ]
        digests = set()
        for session in [base, *variants]:
            digest = SessionDigest()
            digest.add(session)
            digests.add(digest.hexdigest())
        assert len(digests) == 9


class TestReaderRejectsBadInput:
    def test_valid_file_reads_back(self, tmp_path: Path) -> None:
        """A hand-written valid file yields its sessions with their line numbers."""
        first, second = record("a"), record("b", timeout_ms=5)
        path = write_lines(tmp_path / "f.jsonl", header(), first, second, end_line(first, second))
        reader, items = read_all(path)
        assert [(n, s.id) for n, s in items if isinstance(s, Session)] == [(2, "a"), (3, "b")]
        assert reader.end_problem() is None

    @pytest.mark.parametrize(
        ("first_line", "message"),
        [
            ("not json at all", r":1: not a sessionkeeper export: not valid JSON"),
            ("[1, 2]", "header must be a JSON object, got an array"),
            ({"hello": 1}, "not a sessionkeeper export: line 1 has no format key"),
            ({**header(), "format": "other"}, "line 1 has format 'other'"),
            (header(version=3), "version 3 is not supported .*upgrade sessionkeeper"),
            (header(version=0), "version 0 is not supported"),
            (header(version=True), "version True is not supported"),
            (header(version="1"), "version '1' is not supported"),
            (header(exported_at="yesterday"), "exported_at: expected an integer"),
            (header(surprise=True), "surprise: unknown key"),
        ],
    )
    def test_bad_header_is_refused(self, tmp_path: Path, first_line: object, message: str) -> None:
        """A file whose first line is not an export header this version reads is refused as a
        whole,
        with the file name, line 1 and what is wrong."""
        path = write_lines(tmp_path / "f.jsonl", first_line, record())
        with pytest.raises(ExportFormatError, match=message) as info:
            ExportReader(path)
        assert info.value.line == 1
        assert str(path) in str(info.value)

    def test_empty_file_is_refused(self, tmp_path: Path) -> None:
        """An empty file is not an export."""
        path = tmp_path / "empty.jsonl"
        path.write_bytes(b"")
        with pytest.raises(ExportFormatError, match="the file is empty"):
            ExportReader(path)

    @pytest.mark.parametrize(
        ("line", "message"),
        [
            ("{not json", "not valid JSON"),
            ("[]", "session must be a JSON object, got an array"),
            ('"text"', "session must be a JSON object, got a string"),
            (record(created_at="1700000000000"), "created_at: expected an integer, got str"),
            (record(created_at=1.5), "created_at: expected an integer, got float"),
            (record(timeout_ms=True), "timeout_ms: expected an integer, got bool"),
            (record(metadata=[1]), "metadata: expected an object, got an array"),
            (record(extra=1), "extra: unknown key"),
            ({"id": "a"}, "created_at: required key is missing"),
            (record(id="has space"), "invalid session id"),
            (record(id=""), "invalid session id: must not be empty"),
            (record(timeout_ms=0), "invalid session timeout_ms"),
            (record(last_accessed=1), "invalid session last_accessed: .* is before created_at"),
            (record(metadata={"f": 1e400}), "not valid JSON|not a JSON number"),
            (record(version=0), "invalid session version"),
            (record(version="2"), "version: expected an integer, got str"),
            (record(version=None), "version: expected an integer"),
            (record(owner=""), "invalid session owner: must not be empty"),
            (record(owner="a\nb"), "invalid session owner: contains the control character"),
            (record(owner=7), "owner: expected a string"),
            (record(owner="é" * 129), "invalid session owner: is 258 bytes"),
            (record(absolute_timeout_ms=0), "invalid session absolute_timeout_ms"),
            (record(absolute_timeout_ms=1.5), "absolute_timeout_ms: expected an integer"),
            ({k: v for k, v in record().items() if k != "owner"}, "owner: required key"),
        ],
    )
    def test_bad_session_line_is_reported_with_its_number(
        self, tmp_path: Path, line: object, message: str
    ) -> None:
        """A bad session line is yielded as a LineError with its line number and the reason;
        the lines around it still read."""
        good = record("good")
        path = write_lines(tmp_path / "f.jsonl", header(), record("before"), line, good)
        _, items = read_all(path)
        errors = [item for _, item in items if isinstance(item, LineError)]
        assert [e.line for e in errors] == [3]
        assert errors[0].message
        import re

        assert re.search(message, errors[0].message), errors[0].message
        assert [s.id for _, s in items if isinstance(s, Session)] == ["before", "good"]

    def test_non_utf8_line(self, tmp_path: Path) -> None:
        """Bytes that are not UTF-8 are a bad line, named as such."""
        path = write_lines(tmp_path / "f.jsonl", header(), raw=b'{"id": "\xff"}\n')
        _, items = read_all(path)
        assert isinstance(items[0][1], LineError)
        assert "not UTF-8" in items[0][1].message

    def test_truncated_mid_line(self, tmp_path: Path) -> None:
        """A file cut in the middle of a line reports that line as cut off and the file as
        ending without its end line."""
        path = write_lines(
            tmp_path / "f.jsonl", header(), record("a"), raw=json.dumps(record("b")).encode()[:30]
        )
        reader, items = read_all(path)
        assert isinstance(items[-1][1], LineError)
        assert items[-1][0] == 3
        assert "cut off" in items[-1][1].message
        assert "without its end line" in (reader.end_problem() or "")

    def test_truncated_at_a_line_boundary(self, tmp_path: Path) -> None:
        """A file cut between two lines has only good lines, but no end line: truncated."""
        path = write_lines(tmp_path / "f.jsonl", header(), record("a"), record("b"))
        reader, items = read_all(path)
        assert all(isinstance(item, Session) for _, item in items)
        assert reader.end_problem() == (
            "the file ends at line 3 without its end line: it was truncated "
            "(or is still being written)"
        )

    def test_truncated_gzip(self, tmp_path: Path) -> None:
        """A gzip file cut short yields every intact line before the cut (the cut one is
        rejected as cut off), and the end problem says the compressed data ends early, after
        which line and at which byte of the file."""
        full = tmp_path / "full.jsonl.gz"
        with gzip.open(full, "wt") as handle:
            handle.write(json.dumps(header()) + "\n")
            for i in range(2000):
                handle.write(json.dumps(record(f"s{i}", metadata={"pad": "x" * i})) + "\n")
        cut = tmp_path / "cut.jsonl.gz"
        size = full.stat().st_size // 2
        cut.write_bytes(full.read_bytes()[:size])
        reader, items = read_all(cut)
        sessions = [item for _, item in items if isinstance(item, Session)]
        assert len(sessions) > 100
        assert [item.id for item in sessions] == [f"s{i}" for i in range(len(sessions))]
        assert [type(item) for _, item in items[len(sessions) :]] in ([], [LineError])
        problem = reader.end_problem() or ""
        assert re.fullmatch(
            rf"after line \d+, the compressed data ends early \(at byte {size} of the file\): "
            "the file was truncated",
            problem,
        ), problem

    def test_count_and_digest_mismatches(self, tmp_path: Path) -> None:
        """A line removed or a session edited after writing is caught by the end line."""
        a, b = record("a"), record("b")
        removed = write_lines(tmp_path / "r.jsonl", header(), a, end_line(a, b))
        reader, _ = read_all(removed)
        assert "says 2 sessions, the file holds 1" in (reader.end_problem() or "")
        edited = write_lines(
            tmp_path / "e.jsonl", header(), a, record("b", timeout_ms=9), end_line(a, b)
        )
        reader, _ = read_all(edited)
        assert "the file was changed after it was written" in (reader.end_problem() or "")

    def test_data_after_the_end_line(self, tmp_path: Path) -> None:
        """A line after the end line is rejected."""
        a = record("a")
        path = write_lines(tmp_path / "f.jsonl", header(), a, end_line(a), record("late"))
        _, items = read_all(path)
        assert items[-1] == (4, LineError(4, "data after the end line"))


# --- import ------------------------------------------------------------------------------------


#: An export written by sessionkeeper before sessions had a version, an owner and an absolute
#: timeout (export format version 1), byte for byte as that writer wrote it: it must import
#: forever, its end line's digest computed as version 1 did.
OLD_FORMAT_EXPORT = (
    b'{"format":"sessionkeeper-export","version":1,"source_backend":"sqlitedict",'
    b'"exported_at":1700000600000,"include_expired":false,"sessionkeeper_version":"0.1.0"}\n'
    b'{"id":"v1-session-a","created_at":1700000000000,"last_accessed":1700000300000,'
    b'"timeout_ms":1800000,"metadata":{"user_id":"user_456","n":1.5}}\n'
    b'{"id":"v1-session-b","created_at":1700000000000,"last_accessed":1700000000000,'
    b'"timeout_ms":null,"metadata":{}}\n'
    b'{"end":true,"count":2,"digest":"e45aad833b00d64be5a267d54f3b0442"}\n'
)
OLD_FORMAT_NOW = 1_700_000_600_000


class TestFormatVersions:
    def test_writes_the_current_version_with_every_field(self, tmp_path: Path) -> None:
        """A new export says version 2 and every session line carries version, owner and
        absolute_timeout_ms (null when unset), whatever their values."""
        assert EXPORT_VERSION == 2
        plain = Session("plain", 10, 20, None, {})
        full = Session("full", 10, 20, 30, {}, version=7, owner="u", absolute_timeout_ms=99)
        target = tmp_path / "out.jsonl"
        with ExportWriter(target, ExportHeader(source_backend="x", exported_at=5)) as writer:
            writer.write(plain)
            writer.write(full)
        lines = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
        assert lines[0]["version"] == 2
        assert lines[1]["version"] == 1
        assert (lines[1]["owner"], lines[1]["absolute_timeout_ms"]) == (None, None)
        assert (lines[2]["version"], lines[2]["owner"], lines[2]["absolute_timeout_ms"]) == (
            7,
            "u",
            99,
        )

    def test_an_old_export_imports_with_the_defaults(self, tmp_path: Path) -> None:
        """A version-1 export (a literal file the previous writer produced) imports completely:
        each session as version 1, without an owner and without an absolute timeout, and its
        end line's count and digest check (the digest computed as version 1 did)."""
        path = tmp_path / "old.jsonl"
        path.write_bytes(OLD_FORMAT_EXPORT)
        with ExportReader(path) as reader:
            assert reader.header.version == 1
            items = [item for _, item in reader]
            assert reader.end_problem() is None
        assert all(isinstance(item, Session) for item in items)
        with SessionManager(backend="memory", clock=lambda: OLD_FORMAT_NOW) as manager:
            report = import_sessions(manager, path)
            stored = contents(manager)
        assert report.ok, report
        assert (report.imported, report.digest) == (2, "e45aad833b00d64be5a267d54f3b0442")
        a, b = stored["v1-session-a"], stored["v1-session-b"]
        assert (a.created_at, a.last_accessed, a.timeout_ms) == (
            1_700_000_000_000,
            1_700_000_300_000,
            1_800_000,
        )
        assert a.metadata == {"user_id": "user_456", "n": 1.5}
        assert (b.timeout_ms, b.metadata) == (None, {})
        for session in (a, b):
            assert (session.version, session.owner, session.absolute_timeout_ms) == (1, None, None)

    def test_an_old_export_gzip_compressed_imports_too(self, tmp_path: Path) -> None:
        """The same old export, gzip-compressed, reads the same."""
        path = tmp_path / "old.jsonl.gz"
        path.write_bytes(gzip.compress(OLD_FORMAT_EXPORT))
        with SessionManager(backend="memory", clock=lambda: OLD_FORMAT_NOW) as manager:
            report = import_sessions(manager, path)
        assert report.ok
        assert report.imported == 2

    def test_an_old_export_with_a_changed_session_fails_its_digest(self, tmp_path: Path) -> None:
        """The version-1 digest is really checked: one changed value in an old file is found."""
        path = tmp_path / "old.jsonl"
        path.write_bytes(OLD_FORMAT_EXPORT.replace(b'"n":1.5', b'"n":2.5'))
        with ExportReader(path) as reader:
            list(reader)
            problem = reader.end_problem()
        assert problem is not None
        assert "digest" in problem

    def test_a_version_1_line_may_not_carry_the_new_fields(self, tmp_path: Path) -> None:
        """A version-1 file has exactly the five fields per line: a line with ``owner`` (which
        no version-1 writer wrote) is a bad line, named, and the others read."""
        old = {k: v for k, v in record("old").items() if k not in ("version", "owner")}
        del old["absolute_timeout_ms"]
        path = write_lines(
            tmp_path / "f.jsonl", header(version=1), old, {**old, "id": "x", "owner": "u"}
        )
        _, items = read_all(path)
        errors = [item for _, item in items if isinstance(item, LineError)]
        assert [(e.line, "owner: unknown key" in e.message) for e in errors] == [(3, True)]
        assert [s.id for _, s in items if isinstance(s, Session)] == ["old"]

    def test_a_version_2_line_needs_every_field(self, tmp_path: Path) -> None:
        """A current file's session line without the new fields (a version-1 line under a
        version-2 header) is a bad line naming the missing key."""
        old = {k: v for k, v in record("old").items() if k not in ("version", "owner")}
        del old["absolute_timeout_ms"]
        path = write_lines(tmp_path / "f.jsonl", header(), old)
        _, items = read_all(path)
        errors = [item for _, item in items if isinstance(item, LineError)]
        assert len(errors) == 1
        assert "version: required key is missing" in errors[0].message

    def test_a_writer_refuses_an_old_header(self, tmp_path: Path) -> None:
        """ExportWriter writes only the current version: a header naming another is refused
        before any file is made (its lines would not match it)."""
        with pytest.raises(ValueError, match="writes export format version 2, not 1"):
            ExportWriter(
                tmp_path / "x.jsonl", ExportHeader(source_backend="x", exported_at=1, version=1)
            )
        assert not list(tmp_path.iterdir())


class TestImport:
    def test_bad_lines_are_skipped_and_reported(self, tmp_path: Path) -> None:
        """Without strict, good lines are imported and bad ones counted with their numbers."""
        good = [record("a"), record("b")]
        path = write_lines(
            tmp_path / "f.jsonl", header(), good[0], "{oops", good[1], record("c", id="bad id")
        )
        with SessionManager(cleanup_interval=0) as manager:
            report = import_sessions(manager, path, include_expired=True)
            assert sorted(manager.list()) == ["a", "b"]
        assert report.imported == 2
        assert report.rejected == 2
        assert [e.line for e in report.errors] == [3, 5]
        assert not report.ok
        assert "without its end line" in (report.end_problem or "")

    def test_strict_writes_nothing_when_a_line_is_bad(self, tmp_path: Path) -> None:
        """With strict, the first problem raises before any session is written."""
        path = write_lines(tmp_path / "f.jsonl", header(), record("a"), "{oops", record("b"))
        with SessionManager(cleanup_interval=0) as manager:
            with pytest.raises(ExportFormatError, match=r"f.jsonl:3: not valid JSON") as info:
                import_sessions(manager, path, strict=True, include_expired=True)
            assert info.value.line == 3
            assert manager.list() == []

    def test_strict_refuses_a_truncated_file(self, tmp_path: Path) -> None:
        """With strict, a file without its end line is refused before anything is written."""
        path = write_lines(tmp_path / "f.jsonl", header(), record("a"))
        with SessionManager(cleanup_interval=0) as manager:
            with pytest.raises(ExportFormatError, match="without its end line"):
                import_sessions(manager, path, strict=True, include_expired=True)
            assert manager.list() == []

    def test_existing_sessions_replace_or_skip(self, tmp_path: Path) -> None:
        """An identical stored session is left alone; a different one is replaced by default
        and kept with existing="skip"."""
        a, b, c = record("a"), record("b", timeout_ms=None), record("c")
        path = write_lines(tmp_path / "f.jsonl", header(), a, b, c, end_line(a, b, c))
        stored_b = Session("b", 1_700_000_000_000, 1_700_000_000_500, None, {"other": True})
        for existing, kept in (("replace", Session(**b)), ("skip", stored_b)):
            with SessionManager(cleanup_interval=0) as manager:
                manager.store(Session(**a))
                manager.store(stored_b)
                report = import_sessions(
                    manager,
                    path,
                    existing=existing,  # type: ignore[arg-type]
                    include_expired=True,
                )
                assert manager.peek("b") == kept
                assert (report.unchanged, report.imported) == (1, 1)
                assert report.ok
                if existing == "replace":
                    assert (report.replaced, report.skipped_existing) == (1, 0)
                else:
                    assert (report.replaced, report.skipped_existing) == (0, 1)

    def test_target_that_fails_part_way(self, tmp_path: Path) -> None:
        """A store that refuses a write stops the import with TransferAborted, whose report
        says how many sessions were written before."""
        sessions = [record(f"s{i}") for i in range(5)]
        path = write_lines(tmp_path / "f.jsonl", header(), *sessions, end_line(*sessions))
        with SessionManager(
            backend="sqlitedict", backend_opts={"file_path": str(tmp_path / "t.sqlite")}
        ) as manager:
            manager.store(Session("s0", 1, 2))
            manager.close()
            reopened = SessionManager(
                backend="sqlitedict",
                backend_opts={"file_path": str(tmp_path / "t.sqlite")},
                read_only=True,
            )
            with reopened, pytest.raises(TransferAborted, match="after 0 sessions") as info:
                import_sessions(reopened, path, include_expired=True)
        assert info.value.report is not None
        assert "read-only" in str(info.value)

    def test_versions_are_kept_when_a_batch_is_stored_one_by_one(self, tmp_path: Path) -> None:
        """A batch the target refuses in part (one session over its max_metadata_bytes) is
        stored again one session at a time, and those sessions still arrive exactly as in the
        file, versions included: the one-by-one path writes as store_many does, never through
        store(), which gives a session a new version."""
        sessions = [
            record("v5", version=5, owner="u"),
            record("big", metadata={"blob": "x" * 500}, version=3),
            record("v6", version=6, absolute_timeout_ms=DAY),
        ]
        path = write_lines(tmp_path / "f.jsonl", header(), *sessions, end_line(*sessions))
        with SessionManager(backend="memory", max_metadata_bytes=256) as manager:
            report = import_sessions(manager, path, include_expired=True)
            stored = contents(manager)
        assert (report.imported, report.rejected) == (2, 1)
        assert sorted(stored) == ["v5", "v6"]
        assert (stored["v5"].version, stored["v5"].owner) == (5, "u")
        assert (stored["v6"].version, stored["v6"].absolute_timeout_ms) == (6, DAY)

    def test_stdin(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """``-`` reads the export from standard input (gzip recognised), also with strict."""
        a = record("a")
        data = write_lines(tmp_path / "f.jsonl", header(), a, end_line(a)).read_bytes()
        for payload in (data, gzip.compress(data)):
            for strict in (False, True):
                stdin = io.TextIOWrapper(io.BufferedReader(io.BytesIO(payload)))  # type: ignore[arg-type]
                monkeypatch.setattr(sys, "stdin", stdin)
                with SessionManager(cleanup_interval=0) as manager:
                    report = import_sessions(manager, "-", strict=strict, include_expired=True)
                    assert manager.list() == ["a"]
                assert report.ok


# --- migrate -----------------------------------------------------------------------------------


class TestMigrate:
    def test_resumes_without_duplicates(self, stores: Stores) -> None:
        """A migration run again over a target that already holds part of the source writes only
        what is missing or different, and ends with the same verified content."""
        now = now_ms()
        sessions = sample_sessions(now)
        src, dst = stores.store("sqlitedict", "src"), stores.store("leveldb", "dst")
        seed(src, sessions)
        expected = live_only(sessions, now)
        ids = sorted(expected)
        with dst() as manager:  # as if an earlier run stopped part-way (it wrote as given)
            manager.store_many(expected[session_id] for session_id in ids[: len(ids) // 2])
            manager.store_many([expected[ids[-1]].replace(metadata={"stale": True})])
        with src() as source_manager, dst() as target_manager:
            report = migrate_sessions(source_manager, target_manager)
            assert_same(contents(target_manager), expected)
        assert report.unchanged == len(ids) // 2
        assert report.replaced == 1
        assert report.copied == len(ids) - len(ids) // 2 - 1
        assert report.verified

    def test_verification_fails_when_the_source_changes(self, stores: Stores) -> None:
        """A session written in the source after the copy makes the verification fail (and
        nothing is deleted); running the migration again copies it and verifies."""
        now = now_ms()
        src, dst = stores.store("memory", "src"), stores.store("memory", "dst")
        seed(src, sample_sessions(now, live=3))
        with src() as source_manager, dst() as target_manager:

            def progress(phase: str, done: int, total: int | None) -> None:
                if phase == "copy" and done == total and "late" not in source_manager.list():
                    source_manager.store(Session("late", now, now, DAY))

            report = migrate_sessions(
                source_manager, target_manager, delete_source=True, progress=progress
            )
            assert not report.verified
            assert report.missing == 1
            assert report.source_count == report.target_count + 1
            assert report.deleted == 0
            assert "late" in source_manager.list()
            again = migrate_sessions(source_manager, target_manager)
            assert again.verified
            assert (again.copied, again.unchanged) == (1, report.read)

    def test_delete_source_after_verified_copy(self, stores: Stores) -> None:
        """With delete_source, a verified migration empties the source of what it copied."""
        now = now_ms()
        sessions = sample_sessions(now, live=5)
        src, dst = stores.store("sqlitedict", "src"), stores.store("memory", "dst")
        seed(src, sessions)
        with src() as source_manager, dst() as target_manager:
            report = migrate_sessions(source_manager, target_manager, delete_source=True)
            assert report.verified
            assert report.deleted == len(live_only(sessions, now))
            assert sorted(contents(source_manager)) == sorted(EXPIRED)
            assert_same(contents(target_manager), live_only(sessions, now))

    def test_progress_reports_every_phase(self, stores: Stores) -> None:
        """The progress callback hears each phase up to its total."""
        seen: dict[str, tuple[int, int | None]] = {}
        src, dst = stores.store("memory", "src"), stores.store("memory", "dst")
        seed(src, sample_sessions(now_ms(), live=2500))
        with src() as source_manager, dst() as target_manager:
            report = migrate_sessions(
                source_manager,
                target_manager,
                delete_source=True,
                progress=lambda phase, done, total: seen.__setitem__(phase, (done, total)),
            )
        assert set(seen) == {"copy", "verify", "delete"}
        assert seen["copy"] == (report.read, report.read)
        assert report.read == 2500 + 7  # the fixed sample sessions that are live
