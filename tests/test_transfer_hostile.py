"""Regression tests of issue 12 for export, import, migrate and backup.

Each test reproduces one way a hostile (or unlucky) operator lost sessions or got a wrong answer
from the transfers, against real stores: the memory backend (two managers naming one
``table_name`` share one table in this process), sqlitedict files reached through symbolic and hard
links, real FIFOs, sockets and device nodes, and the CLI through click's ``CliRunner``.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import socket
import stat
import subprocess
import sys
import uuid
import zlib
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from hypothesis import given
from hypothesis import strategies as st

from sessionkeeper import Session, SessionManager
from sessionkeeper._errors import ExportTargetError, SameStoreError
from sessionkeeper._plugins import installed_backends
from sessionkeeper._transfer_common import Fingerprints
from sessionkeeper.backend import hookimpl
from sessionkeeper.cli import ExitCode, cli
from sessionkeeper.transfer import (
    EXPORT_FORMAT,
    EXPORT_VERSION,
    ExportHeader,
    ExportWriter,
    export_sessions,
    import_sessions,
    migrate_sessions,
)

NOW = 1_700_000_000_000
DAY = 86_400_000


def table() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


def memory(name: str, **kwargs: Any) -> SessionManager:
    """A manager on the in-process memory table ``name`` (shared by every manager naming it)."""
    return SessionManager(
        backend="memory",
        backend_opts={"table_name": name},
        cleanup_interval=0,
        clock=lambda: NOW,
        **kwargs,
    )


def sample(count: int, timeout: int | None = DAY) -> list[Session]:
    """Sessions live at NOW (with ``timeout=None``, live whatever the clock: for the CLI)."""
    return [Session(f"s{i:04d}", NOW - 1000, NOW - i, timeout, {"n": i}) for i in range(count)]


def ids(manager: SessionManager) -> list[str]:
    return sorted(s.id for s in manager.iter_sessions(include_expired=True))


class ForcedIdentity:
    """A wrapper plugin that makes the manager report ``value`` as its store identity, whatever
    the backend says: how the tests reach a backend that cannot tell (``None``), or stores
    proven distinct, independently of the backends' own identity hooks."""

    def __init__(self, value: str | None) -> None:
        self.value = value

    @hookimpl(wrapper=True)
    def sessionkeeper_identity(self) -> Generator[None, str | None, str | None]:
        yield
        return self.value


def invoke(runner: CliRunner, *args: str | os.PathLike[str]) -> Result:
    return runner.invoke(cli, [os.fspath(a) for a in args], catch_exceptions=False)


def write_config(path: Path, backend: str, **opts: Any) -> Path:
    lines = ["[sessionkeeper]", f'backend = "{backend}"', "cleanup_interval = 0", ""]
    lines.append("[sessionkeeper.backend_opts]")
    lines += [f"{key} = {json.dumps(value)}" for key, value in opts.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def needs(backend: str) -> None:
    if backend not in installed_backends():
        pytest.skip(f"needs the {backend} backend")


def sqlite_opts(path: Path) -> dict[str, Any]:
    return {"file_path": str(path), "auto_save": 0}


# --- item 1: migrate onto itself -----------------------------------------------------------------


class TestMigrateOntoItself:
    def test_memory_table_named_twice_is_refused(self) -> None:
        """Two managers on one memory table (the memory backend's identity is the shared
        table): migrate refuses with SameStoreError before anything is read or written, and
        --delete-source deletes nothing. (Waits on the memory backend's identity hook.)"""
        name = table()
        with memory(name) as source, memory(name) as target:
            for session in sample(10):
                source.store(session)
            with pytest.raises(SameStoreError, match="the same store") as info:
                migrate_sessions(source, target, delete_source=True)
            assert info.value.report is not None
            assert ids(source) == [s.id for s in sample(10)]

    @pytest.mark.parametrize("link", ["symlink", "hardlink"])
    def test_sqlitedict_through_a_link_is_refused(self, tmp_path: Path, link: str) -> None:
        """A sqlitedict file reached through a symbolic or a hard link is the same store (its
        identity is the file's device and inode): migrate refuses it. (Waits on the sqlitedict
        backend's identity hook.)"""
        needs("sqlitedict")
        real, alias = tmp_path / "real.sqlite", tmp_path / "alias.sqlite"
        with SessionManager(backend="sqlitedict", backend_opts=sqlite_opts(real)) as seeding:
            for session in sample(5):
                seeding.store(session)
        if link == "symlink":
            alias.symlink_to(real)
        else:
            os.link(real, alias)
        with (
            SessionManager(
                backend="sqlitedict", backend_opts=sqlite_opts(real), read_only=True
            ) as source,
            SessionManager(backend="sqlitedict", backend_opts=sqlite_opts(alias)) as target,
        ):
            with pytest.raises(SameStoreError, match="the same store"):
                migrate_sessions(source, target)
            assert ids(source) == [s.id for s in sample(5)]

    def test_cli_hard_link_delete_source_loses_nothing(
        self, runner: CliRunner, tmp_path: Path
    ) -> None:
        """`migrate --delete-source` between two configs naming one sqlitedict file (one through
        a hard link) is refused and every session stays. Without --delete-source the refusal
        comes from the identities (exit 2, "same store"); with it the second writer may instead
        be refused by the file's owner lock (exit 4) once the lock follows links: either way
        nothing is deleted. (Waits on the sqlitedict identity hook.)"""
        needs("sqlitedict")
        source = write_config(tmp_path / "a.toml", "sqlitedict", file_path="s.sqlite", auto_save=0)
        target = write_config(
            tmp_path / "b.toml", "sqlitedict", file_path="link.sqlite", auto_save=0
        )
        with SessionManager.from_config(source) as seeding:
            for session in sample(20, timeout=None):
                seeding.store(session)
        os.link(tmp_path / "s.sqlite", tmp_path / "link.sqlite")
        result = invoke(runner, "migrate", "--config", source, "--to", target)
        assert result.exit_code == ExitCode.USAGE, result.output
        assert "same store" in result.output
        result = invoke(runner, "migrate", "--config", source, "--to", target, "--delete-source")
        assert result.exit_code in (ExitCode.USAGE, ExitCode.STORAGE), result.output
        with SessionManager.from_config(source, read_only=True) as check:
            assert len(ids(check)) == 20


class TestDeleteSourceSecondLine:
    def test_unknown_identity_onto_itself_deletes_nothing(self) -> None:
        """With a backend that cannot tell its identity (None), a migration of one memory table
        onto itself finds every session "already in the target"; --delete-source deletes none
        of them (this run copied none) and counts them as kept."""
        name = table()
        with (
            memory(name, plugins=[ForcedIdentity(None)]) as source,
            memory(name, plugins=[ForcedIdentity(None)]) as target,
        ):
            for session in sample(25):
                source.store(session)
            report = migrate_sessions(source, target, delete_source=True)
            assert ids(source) == [s.id for s in sample(25)]
            assert report.verified
            assert (report.unchanged, report.deleted, report.kept) == (25, 0, 25)

    def test_unknown_identity_deletes_what_this_run_copied(self) -> None:
        """With unknown identities, the sessions this run copied are deleted from the source,
        and those it found already in the target are kept."""
        with (
            memory(table(), plugins=[ForcedIdentity(None)]) as source,
            memory(table(), plugins=[ForcedIdentity(None)]) as target,
        ):
            for session in sample(10):
                source.store(session)
            for session in sample(10)[:4]:
                target.store(session)
            report = migrate_sessions(source, target, delete_source=True)
            assert ids(source) == [s.id for s in sample(10)[:4]]
            assert (report.copied, report.unchanged) == (6, 4)
            assert (report.deleted, report.kept) == (6, 4)
            assert ids(target) == [s.id for s in sample(10)]

    def test_distinct_identities_delete_what_an_earlier_run_copied(self) -> None:
        """When both stores report identities that differ, a resumed --delete-source run also
        deletes the sessions an earlier run copied (found in the target exactly so)."""
        with (
            memory(table(), plugins=[ForcedIdentity("test:a")]) as source,
            memory(table(), plugins=[ForcedIdentity("test:b")]) as target,
        ):
            for session in sample(10):
                source.store(session)
            for session in sample(10)[:4]:
                target.store(session)
            report = migrate_sessions(source, target, delete_source=True)
            assert (report.deleted, report.kept) == (10, 0)
            assert ids(source) == []
            assert (report.source_identity, report.target_identity) == ("test:a", "test:b")

    def test_session_written_after_the_copy_is_never_deleted(self) -> None:
        """A session that appears in the source (and, identical, in the target) after the
        verification was not copied by this run: --delete-source leaves it in the source, even
        between stores proven distinct."""
        late = Session("late", NOW, NOW, DAY, {"late": True})
        with (
            memory(table(), plugins=[ForcedIdentity("test:a")]) as source,
            memory(table(), plugins=[ForcedIdentity("test:b")]) as target,
        ):
            for session in sample(3):
                source.store(session)

            def progress(phase: str, done: int, total: int | None) -> None:
                if phase == "verify" and done == total and "late" not in ids(source):
                    source.store(late)
                    target.store(late)

            report = migrate_sessions(source, target, delete_source=True, progress=progress)
            assert ids(source) == ["late"]
            assert report.verified
            assert (report.deleted, report.kept) == (3, 1)

    def test_cli_reports_kept_sessions(self, runner: CliRunner, tmp_path: Path) -> None:
        """The migrate summary has the kept count, and a note says why they were kept."""
        needs("sqlitedict")
        source = write_config(tmp_path / "a.toml", "sqlitedict", file_path="a.sqlite", auto_save=0)
        target = write_config(tmp_path / "b.toml", "sqlitedict", file_path="b.sqlite", auto_save=0)
        fresh = sample(4, timeout=None)
        with SessionManager.from_config(source) as a, SessionManager.from_config(target) as b:
            for session in fresh:
                a.store(session)
            b.store(fresh[0])
        result = invoke(
            runner, "migrate", "--config", source, "--to", target, "--delete-source", "--json"
        )
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        if report["source_identity"] is None:  # until the sqlitedict identity hook lands
            assert (report["deleted"], report["kept"]) == (3, 1)
        else:
            assert (report["deleted"], report["kept"]) == (4, 0)


# --- item 11: sameness on the encoded form -------------------------------------------------------


class TestEncodedSameness:
    @pytest.mark.parametrize(
        ("stored", "wanted"),
        [({"n": 10}, {"n": 10.0}), ({"a": 1, "b": 2}, {"b": 2, "a": 1}), ({"f": 1}, {"f": True})],
        ids=["int-vs-float", "key-order", "one-vs-true"],
    )
    def test_migrate_rewrites_and_verifies(
        self, stored: dict[str, Any], wanted: dict[str, Any]
    ) -> None:
        """Metadata that compares equal decoded but encodes differently is a different session:
        migrate replaces it in the target and verifies (it used to say "unchanged" and fail the
        verification on every run)."""
        with memory(table()) as source, memory(table()) as target:
            source.store(Session("x", NOW, NOW, DAY, wanted))
            target.store(Session("x", NOW, NOW, DAY, stored))
            report = migrate_sessions(source, target)
            assert (report.unchanged, report.replaced) == (0, 1)
            assert report.verified
            assert report.source_digest == report.target_digest
            got = target.peek("x").metadata
            assert json.dumps(got) == json.dumps(wanted)

    def test_import_replaces_one_with_true(self, tmp_path: Path) -> None:
        """A stored ``1`` where the file says ``true`` is replaced by the import."""
        with memory(table()) as source:
            source.store(Session("x", NOW, NOW, DAY, {"flag": True}))
            export_sessions(source, tmp_path / "e.jsonl")
        with memory(table()) as target:
            target.store(Session("x", NOW, NOW, DAY, {"flag": 1}))
            report = import_sessions(target, tmp_path / "e.jsonl")
            assert (report.unchanged, report.replaced) == (0, 1)
            assert target.peek("x").metadata["flag"] is True


# --- item 12: duplicate ids in one file ----------------------------------------------------------


def plain_export(path: Path, *records: dict[str, Any], end: bool = True) -> Path:
    head = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "source_backend": "memory",
        "exported_at": NOW,
    }
    lines = [head, *records]
    if end:
        lines.append({"end": True, "count": len(records), "digest": "0" * 32})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def rec(session_id: str, **metadata: Any) -> dict[str, Any]:
    return Session(session_id, NOW, NOW, None, metadata).to_dict()


class TestDuplicateIds:
    def test_counts_exactly_and_last_line_wins(self, tmp_path: Path) -> None:
        """Two lines for one id (different content) import one session, the last line's, and
        the report says so: imported 2 (a and b), duplicates 1, replaced 0; a third identical
        line is a duplicate too and writes nothing."""
        path = plain_export(
            tmp_path / "d.jsonl", rec("a", v=1), rec("b"), rec("a", v=2), rec("a", v=2)
        )
        with memory(table()) as manager:
            report = import_sessions(manager, path)
            assert ids(manager) == ["a", "b"]
            assert manager.peek("a").metadata == {"v": 2}
        assert (report.read, report.imported, report.replaced) == (4, 2, 0)
        assert (report.duplicates, report.unchanged) == (2, 0)

    def test_duplicate_of_a_stored_session(self, tmp_path: Path) -> None:
        """A first line replacing a stored session and a second line for it: replaced 1,
        duplicates 1, the last line's content stored; with --skip-existing both are skipped."""
        path = plain_export(tmp_path / "d.jsonl", rec("a", v=1), rec("a", v=2))
        for existing, metadata, counts in (
            ("replace", {"v": 2}, (0, 1, 1, 0)),
            ("skip", {"v": 0}, (0, 0, 0, 2)),
        ):
            with memory(table()) as manager:
                manager.store(Session("a", NOW, NOW, DAY, {"v": 0}))
                report = import_sessions(manager, path, existing=existing)  # type: ignore[arg-type]
                assert manager.peek("a").metadata == metadata
            assert (report.imported, report.replaced) == counts[:2]
            assert (
                report.imported,
                report.replaced,
                report.duplicates,
                report.skipped_existing,
            ) == counts

    def test_cli_summary_counts_duplicates(self, runner: CliRunner, tmp_path: Path) -> None:
        """The CLI's --json summary of such a file has imported 1, duplicates 1, written 1."""
        needs("sqlitedict")
        path = plain_export(tmp_path / "d.jsonl", rec("a", v=1), rec("a", v=2))
        config = write_config(tmp_path / "t.toml", "sqlitedict", file_path="t.sqlite")
        result = invoke(runner, "import", path, "--config", config, "--json")
        summary = json.loads(result.stdout)
        assert (summary["imported"], summary["duplicates"], summary["written"]) == (1, 1, 1)


# --- items 8 and 9: damaged compression, deep nesting --------------------------------------------


@pytest.fixture
def held() -> Iterator[tuple[SessionManager, Path]]:
    """A memory table held open by the test, and a config naming it (the CLI shares it)."""
    name = table()
    with memory(name) as manager:
        yield manager, Path(name)


def memory_config(tmp_path: Path, name: Path) -> Path:
    return write_config(tmp_path / "m.toml", "memory", table_name=str(name))


def a_export(tmp_path: Path, count: int, *, gz: bool) -> Path:
    """A real export of ``count`` sessions with some bulk (so gzip spans many blocks)."""
    with memory(table()) as source:
        for i in range(count):
            source.store(Session(f"s{i:04d}", NOW, NOW, None, {"pad": f"{i}" * 300, "i": i}))
        path = tmp_path / ("e.jsonl.gz" if gz else "e.jsonl")
        export_sessions(source, path)
    return path


class TestDamagedGzip:
    def test_truncated_gzip_imports_the_prefix_and_exits_5(
        self, runner: CliRunner, tmp_path: Path, held: tuple[SessionManager, Path]
    ) -> None:
        """A .jsonl.gz cut in the middle imports every intact session before the cut (as the
        same file uncompressed does) and exits 5 naming the truncation, the line and the byte
        offset; it used to import nothing and exit 4 blaming the store."""
        manager, name = held
        path = a_export(tmp_path, 400, gz=True)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        result = invoke(runner, "import", path, "--config", memory_config(tmp_path, name))
        assert result.exit_code == ExitCode.DATA, result.output
        assert "bad input file" in result.stderr
        assert re.search(
            r"after line \d+, the compressed data ends early \(at byte \d+ of the file\)",
            result.stderr,
        )
        imported = ids(manager)
        assert len(imported) > 50
        assert imported == [f"s{i:04d}" for i in range(len(imported))]

    def test_same_prefix_as_the_plain_file(self, tmp_path: Path) -> None:
        """The gzip file cut anywhere imports exactly the sessions that the uncompressed data
        it still holds would: gzip or not makes no difference to what is saved."""
        path = a_export(tmp_path, 300, gz=True)
        data = path.read_bytes()
        for cut in (len(data) // 3, len(data) // 2, len(data) - 9):
            path.write_bytes(data[:cut])
            readable = zlib.decompressobj(31).decompress(data[:cut])
            plain = tmp_path / "p.jsonl"
            plain.write_bytes(readable)
            with memory(table()) as a, memory(table()) as b:
                gz_report = import_sessions(a, path)
                plain_report = import_sessions(b, plain)
                assert ids(a) == ids(b)
            assert gz_report.imported == plain_report.imported
            assert gz_report.rejected == plain_report.rejected
            assert "the compressed data ends early" in (gz_report.end_problem or "")

    def test_trailing_garbage_exits_5(
        self, runner: CliRunner, tmp_path: Path, held: tuple[SessionManager, Path]
    ) -> None:
        """Garbage after the gzip stream: every session is imported, and the import exits 5
        naming the garbage and its byte offset (gzip's own reader raised and nothing was
        imported)."""
        manager, name = held
        path = a_export(tmp_path, 120, gz=True)
        size = path.stat().st_size
        path.write_bytes(path.read_bytes() + b"this is not gzip")
        result = invoke(runner, "import", path, "--config", memory_config(tmp_path, name))
        assert result.exit_code == ExitCode.DATA, result.output
        assert f"garbage after the end of the compressed data (at byte {size}" in result.stderr
        assert len(ids(manager)) == 120

    def test_padding_and_concatenated_members_are_fine(self, tmp_path: Path) -> None:
        """Zero padding after the stream and a file of several gzip members (what ``cat a.gz
        b.gz`` makes) are valid gzip and import cleanly."""
        path = a_export(tmp_path, 50, gz=True)
        text = gzip.decompress(path.read_bytes())
        half = text.index(b"\n", len(text) // 2) + 1
        path.write_bytes(gzip.compress(text[:half]) + gzip.compress(text[half:]) + b"\0" * 700)
        with memory(table()) as manager:
            report = import_sessions(manager, path)
            assert len(ids(manager)) == 50
        assert report.ok, report

    def test_corrupt_byte_imports_the_prefix(self, tmp_path: Path) -> None:
        """A flipped byte in the middle of the compressed data: the sessions before it are
        imported, and the problem names the corruption."""
        path = a_export(tmp_path, 400, gz=True)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        with memory(table()) as manager:
            report = import_sessions(manager, path)
            assert len(ids(manager)) > 10
        assert not report.ok
        assert re.search(r"compressed data is corrupt|ends early", report.end_problem or "")


class TestDeepNesting:
    def test_deep_line_is_rejected_and_the_rest_imported(
        self, runner: CliRunner, tmp_path: Path, held: tuple[SessionManager, Path]
    ) -> None:
        """A session line whose metadata nests 100,000 deep is one rejected line (exit 5,
        "nested too deeply", its line number); the 200 good sessions around it are imported.
        It used to abort the whole import with RecursionError (exit 4, nothing imported)."""
        manager, name = held
        good = [rec(f"g{i:03d}") for i in range(200)]
        path = plain_export(tmp_path / "n.jsonl", *good[:150], end=False)
        deep = '{"id": "deep", "created_at": 1, "last_accessed": 1, "timeout_ms": null, '
        deep += '"metadata": {"x": ' + "[" * 100_000 + "]" * 100_000 + "}}\n"
        with path.open("a", encoding="utf-8") as handle:
            handle.write(deep)
            handle.writelines(json.dumps(line) + "\n" for line in good[150:])
        result = invoke(runner, "import", path, "--config", memory_config(tmp_path, name))
        assert result.exit_code == ExitCode.DATA, result.output
        assert "line 152: nested too deeply" in result.stderr
        assert len(ids(manager)) == 200

    def test_deep_header_is_not_an_export(self, runner: CliRunner, tmp_path: Path) -> None:
        """A first line nested 100,000 deep: not an export (exit 5), no traceback."""
        path = tmp_path / "h.jsonl"
        path.write_text("[" * 100_000 + "]" * 100_000 + "\n", encoding="utf-8")
        result = invoke(runner, "import", path)
        assert result.exit_code == ExitCode.DATA, result.output
        assert "not a sessionkeeper export: nested too deeply" in result.stderr


# --- item 10: what export and backup may replace -------------------------------------------------


class TestExportTargets:
    def export(self, runner: CliRunner, tmp_path: Path, target: Path) -> Result:
        needs("sqlitedict")
        config = write_config(tmp_path / "c.toml", "sqlitedict", file_path="c.sqlite")
        with SessionManager.from_config(config) as seeding:
            seeding.store(Session("one", NOW, NOW, None, {}))
        return invoke(runner, "export", target, "--config", config)

    def test_fifo_is_refused_and_kept(self, runner: CliRunner, tmp_path: Path) -> None:
        """A FIFO at FILE is refused (exit 2, the hint names '-') and is still a FIFO."""
        fifo = tmp_path / "pipe"
        os.mkfifo(fifo)
        result = self.export(runner, tmp_path, fifo)
        assert result.exit_code == ExitCode.USAGE, result.output
        assert "is a FIFO (named pipe): refusing to replace it" in result.output
        assert "export to '-'" in result.output
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode)

    def test_symlink_is_refused_and_kept(self, runner: CliRunner, tmp_path: Path) -> None:
        """A symbolic link at FILE (to an earlier export, even) is refused and left pointing
        where it did; the file it points to is unchanged."""
        real = tmp_path / "real.jsonl"
        real.write_text("precious\n")
        link = tmp_path / "link.jsonl"
        link.symlink_to(real)
        result = self.export(runner, tmp_path, link)
        assert result.exit_code == ExitCode.USAGE, result.output
        assert "is a symbolic link" in result.output
        assert link.is_symlink()
        assert os.readlink(link) == str(real)
        assert real.read_text() == "precious\n"

    def test_socket_is_refused_and_kept(self, runner: CliRunner, tmp_path: Path) -> None:
        """A Unix socket at FILE is refused and left in place."""
        path = tmp_path / "s.sock"
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(str(path))
            result = self.export(runner, tmp_path, path)
        assert result.exit_code == ExitCode.USAGE, result.output
        assert "is a socket" in result.output
        assert stat.S_ISSOCK(os.lstat(path).st_mode)

    def test_device_node_is_refused_and_kept(self, runner: CliRunner, tmp_path: Path) -> None:
        """A character device node at FILE (made here with mknod, where permitted) is refused
        and left in place."""
        node = tmp_path / "null"
        try:
            os.mknod(node, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        except PermissionError:
            pytest.skip("mknod of a character device needs privileges here")
        result = self.export(runner, tmp_path, node)
        assert result.exit_code == ExitCode.USAGE, result.output
        assert "is a character device" in result.output
        assert stat.S_ISCHR(os.lstat(node).st_mode)

    def test_foreign_file_is_refused_and_an_export_replaced(
        self, runner: CliRunner, tmp_path: Path
    ) -> None:
        """A regular file that is not an export (here the store's own database) is refused
        and unchanged; an earlier export (plain or gzip) is replaced atomically."""
        database = tmp_path / "c.sqlite"
        before = b""
        result = self.export(runner, tmp_path, tmp_path / "first.jsonl")
        assert result.exit_code == 0, result.output
        before = database.read_bytes()
        result = self.export(runner, tmp_path, database)
        assert result.exit_code == ExitCode.USAGE, result.output
        assert "is not a sessionkeeper export: refusing to replace it" in result.output
        assert database.read_bytes()[:16] == b"SQLite format 3\0"
        assert len(database.read_bytes()) >= len(before) // 2
        for name in ("first.jsonl", "again.jsonl.gz"):
            assert self.export(runner, tmp_path, tmp_path / name).exit_code == 0
            assert self.export(runner, tmp_path, tmp_path / name).exit_code == 0
        assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []

    def test_fifo_appearing_during_the_export_is_kept(self, tmp_path: Path) -> None:
        """A FIFO created at the target while the export is written is not replaced by the
        final rename: the writer refuses, and leaves no temporary file."""
        target = tmp_path / "e.jsonl"
        writer = ExportWriter(target, ExportHeader(source_backend="memory", exported_at=NOW))
        writer.write(Session("a", NOW, NOW))
        os.mkfifo(target)
        with pytest.raises(ExportTargetError, match="FIFO"):
            writer.close()
        assert stat.S_ISFIFO(os.lstat(target).st_mode)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["e.jsonl"]

    def test_backup_prunes_only_its_own_regular_files(
        self, runner: CliRunner, tmp_path: Path
    ) -> None:
        """`backup --keep 1` deletes older backups, but not a symbolic link that merely has a
        backup's name (it is not a file the backup wrote)."""
        needs("sqlitedict")
        config = write_config(tmp_path / "c.toml", "sqlitedict", file_path="c.sqlite")
        with SessionManager.from_config(config) as seeding:
            seeding.store(Session("one", NOW, NOW, None, {}))
        backups = tmp_path / "b"
        backups.mkdir()
        elsewhere = tmp_path / "elsewhere.jsonl.gz"
        elsewhere.write_bytes(b"")
        link = backups / "sessionkeeper-20000101T000000.000Z.jsonl.gz"
        link.symlink_to(elsewhere)
        old = backups / "sessionkeeper-20000102T000000.000Z.jsonl.gz"
        old.write_bytes(b"")
        result = invoke(runner, "backup", backups, "--keep", "1", "--config", config)
        assert result.exit_code == 0, result.output
        assert link.is_symlink()
        assert not old.exists()
        assert len([p for p in backups.iterdir() if not p.is_symlink()]) == 1


# --- the fingerprint set behind both --------------------------------------------------------------


@given(st.lists(st.binary(max_size=12), max_size=3000), st.lists(st.binary(max_size=12)))
def test_fingerprints_behave_as_a_set(added: list[bytes], probed: list[bytes]) -> None:
    """The compact fingerprint table (what import and migrate remember per session) answers
    membership exactly as a set of the same byte strings, across its growth."""
    table, model = Fingerprints(slots=8), set[bytes]()
    for item in added:
        table.add(item)
        model.add(item)
    assert len(table) == len(model)
    for item in [*added, *probed]:
        assert (item in table) == (item in model)


def test_endless_input_without_a_newline_is_refused(tmp_path: Path) -> None:
    """`import /dev/zero` (an endless input with no newline) stops after the longest line
    allowed with exit 5, "not a sessionkeeper export"; it used to read past the over-long first
    line forever. Run as a subprocess, killed if it hangs (a hang fails the test)."""
    if not Path("/dev/zero").exists():
        pytest.skip("needs /dev/zero")
    env = {**os.environ, "SESSIONKEEPER_CONFIG": "", "SESSIONKEEPER_DEBUG": ""}
    done = subprocess.run(
        [sys.executable, "-m", "sessionkeeper", "import", "/dev/zero"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert done.returncode == ExitCode.DATA, done.stderr
    assert "/dev/zero:1: longer than" in done.stderr
    assert "not a sessionkeeper export" in done.stderr
