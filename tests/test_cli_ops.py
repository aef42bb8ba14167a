"""``sessionkeeper export``, ``import``, ``migrate``, ``backup`` and ``stats --format``.

The commands run in-process through click's ``CliRunner`` against real stores on disk
(sqlitedict, leveldb), except where a real separate process is the point: a writer holding the
sqlitedict owner lock, and a migration killed with SIGKILL part-way and run again.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from sessionkeeper import Session, SessionManager
from sessionkeeper._errors import ExportTargetError, SameStoreError
from sessionkeeper._plugins import installed_backends
from sessionkeeper._transfer_backup import backup_name, backup_sessions
from sessionkeeper.cli import ExitCode, cli, exit_code_for
from sessionkeeper.transfer import EXPORT_FORMAT, EXPORT_VERSION

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"
HOUR = 3_600_000
DAY = 24 * HOUR

#: The ``make_dist`` fixture of conftest.py.
MakeDist = Callable[..., Path]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def needs(*backends: str) -> None:
    missing = [b for b in backends if b not in installed_backends()]
    if missing:
        pytest.skip(f"needs the {', '.join(missing)} backend")


def invoke(runner: CliRunner, *args: str | os.PathLike[str], input: bytes | None = None) -> Result:
    return runner.invoke(cli, [os.fspath(a) for a in args], input=input, catch_exceptions=False)


def write_config(path: Path, backend: str, **opts: Any) -> Path:
    lines = ["[sessionkeeper]", f'backend = "{backend}"', "cleanup_interval = 0", ""]
    lines.append("[sessionkeeper.backend_opts]")
    lines += [f"{key} = {json.dumps(value)}" for key, value in opts.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def sqlitedict_config(tmp_path: Path, name: str = "src", **opts: Any) -> Path:
    needs("sqlitedict")
    return write_config(tmp_path / f"{name}.toml", "sqlitedict", file_path=f"{name}.sqlite", **opts)


def leveldb_config(tmp_path: Path, name: str = "dst") -> Path:
    needs("leveldb")
    return write_config(tmp_path / f"{name}.toml", "leveldb", db_path=f"{name}.ldb", sync=False)


def sessions(count: int, now: int | None = None) -> list[Session]:
    at = now_ms() if now is None else now
    return [
        Session(f"s{i:05d}", at - HOUR, at - i, DAY, {"user": f"user_{i}", "n": [i, i / 2]})
        for i in range(count)
    ] + [Session("expired", at - 3 * HOUR, at - 2 * HOUR, HOUR, {})]


def seed(config: Path, items: list[Session]) -> None:
    with SessionManager.from_config(config) as manager:
        for session in items:
            manager.store(session)


def contents(config: Path) -> dict[str, Session]:
    with SessionManager.from_config(config, read_only=True) as manager:
        return {s.id: s for s in manager.iter_sessions(include_expired=True)}


def export_lines(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:  # type: ignore[operator]
        return [json.loads(line) for line in handle]


# --- export ------------------------------------------------------------------------------------


class TestExport:
    def test_writes_live_sessions_without_touching(self, runner: CliRunner, tmp_path: Path) -> None:
        """``export FILE`` writes the header, every live session and the end line, and leaves
        the store exactly as it was."""
        config = sqlitedict_config(tmp_path)
        items = sessions(30)
        seed(config, items)
        before = contents(config)
        result = invoke(runner, "export", tmp_path / "out.jsonl", "--config", config)
        assert result.exit_code == 0, result.output
        assert "Exported 30 sessions from the sqlitedict backend" in result.stderr
        lines = export_lines(tmp_path / "out.jsonl")
        assert lines[0]["format"] == EXPORT_FORMAT
        assert lines[0]["source_backend"] == "sqlitedict"
        assert {line["id"] for line in lines[1:-1]} == {s.id for s in items[:-1]}
        assert lines[-1]["count"] == 30
        assert contents(config) == before

    def test_gzip_json_and_stdout(self, runner: CliRunner, tmp_path: Path) -> None:
        """A ``.gz`` FILE is compressed; ``--json`` prints the summary; ``-`` streams to stdout;
        ``-`` with ``--json`` is a usage error."""
        config = sqlitedict_config(tmp_path)
        seed(config, sessions(3))
        result = invoke(
            runner, "export", tmp_path / "o.jsonl.gz", "--config", config, "--include-expired",
            "--json",
        )  # fmt: skip
        summary = json.loads(result.stdout)
        assert summary["count"] == 4
        assert len(export_lines(tmp_path / "o.jsonl.gz")) == 6
        result = invoke(runner, "export", "-", "--config", config, "--quiet")
        assert result.exit_code == 0
        assert [json.loads(line).get("id") for line in result.stdout.splitlines()][1:-1] == [
            "s00000",
            "s00001",
            "s00002",
        ]
        result = runner.invoke(cli, ["export", "-", "--json", "--config", str(config)])
        assert result.exit_code == ExitCode.USAGE

    def test_beside_a_running_owner(self, runner: CliRunner, tmp_path: Path) -> None:
        """Export opens the store read-only, so it runs while another process owns it."""
        config = sqlitedict_config(tmp_path, auto_save=0)
        seed(config, sessions(5))
        with Holder(config):
            result = invoke(runner, "export", tmp_path / "o.jsonl", "--config", config)
        assert result.exit_code == 0, result.output
        assert export_lines(tmp_path / "o.jsonl")[-1]["count"] == 5

    def test_unwritable_target_exits_4(self, runner: CliRunner, tmp_path: Path) -> None:
        """A FILE in a directory that does not exist is a clear error with exit 4."""
        config = sqlitedict_config(tmp_path)
        seed(config, sessions(2))
        result = invoke(runner, "export", tmp_path / "no" / "such" / "o.jsonl", "--config", config)
        assert result.exit_code == ExitCode.STORAGE
        assert "cannot write" in result.stderr
        assert "No such file or directory" in result.stderr

    def test_memory_backend_is_explained(self, runner: CliRunner, tmp_path: Path) -> None:
        """From the memory backend, whose store is per process, export says why there is
        nothing to export and exits with 3 instead of writing an empty file."""
        config = write_config(tmp_path / "m.toml", "memory")
        result = invoke(runner, "export", tmp_path / "o.jsonl", "--config", config)
        assert result.exit_code == ExitCode.CONFIG
        assert "the memory backend is per process" in result.stderr
        assert "sessionkeeper.transfer.export_sessions(manager" in result.stderr
        assert not (tmp_path / "o.jsonl").exists()

    def test_memory_table_shared_in_process_exports(
        self, runner: CliRunner, tmp_path: Path
    ) -> None:
        """A memory table that this process holds (sessions present) is exported with a note."""
        table = f"t{uuid.uuid4().hex}"
        config = write_config(tmp_path / "m.toml", "memory", table_name=table)
        with SessionManager(backend="memory", backend_opts={"table_name": table}) as manager:
            manager.store(Session("held", now_ms(), now_ms(), DAY))
            result = invoke(runner, "export", tmp_path / "o.jsonl", "--config", config)
        assert result.exit_code == 0, result.output
        assert export_lines(tmp_path / "o.jsonl")[1]["id"] == "held"


# --- import ------------------------------------------------------------------------------------


def export_file(tmp_path: Path, items: list[Session], name: str = "in.jsonl") -> Path:
    """An export of ``items`` written by ``sessionkeeper export`` from a sqlitedict store."""
    config = sqlitedict_config(tmp_path, name=f"exp{uuid.uuid4().hex[:6]}")
    seed(config, items)
    result = CliRunner().invoke(
        cli, ["export", str(tmp_path / name), "--config", str(config), "--include-expired", "-q"]
    )
    assert result.exit_code == 0, result.output
    return tmp_path / name


class TestImport:
    def test_round_trip_into_leveldb(self, runner: CliRunner, tmp_path: Path) -> None:
        """``import`` stores every live session exactly; importing again changes nothing."""
        items = sessions(20)
        path = export_file(tmp_path, items)
        target = leveldb_config(tmp_path)
        result = invoke(runner, "import", path, "--config", target, "--json")
        report = json.loads(result.stdout)
        assert (report["imported"], report["skipped_expired"], report["ok"]) == (20, 1, True)
        assert contents(target) == {s.id: s for s in items[:-1]}
        again = json.loads(invoke(runner, "import", path, "--config", target, "--json").stdout)
        assert (again["unchanged"], again["written"]) == (20, 0)

    def test_bad_lines_exit_5_and_good_lines_are_imported(
        self, runner: CliRunner, tmp_path: Path
    ) -> None:
        """Bad lines are reported on stderr with their line numbers, the good ones imported,
        and the exit status is 5."""
        path = export_file(tmp_path, sessions(4))
        lines = path.read_text().splitlines()
        lines[2] = "{broken"
        lines[3] = lines[3].replace('"s000', '"bad id s000')
        path.write_text("\n".join(lines) + "\n")
        target = leveldb_config(tmp_path)
        result = invoke(runner, "import", path, "--config", target, "--include-expired")
        assert result.exit_code == ExitCode.DATA
        assert "rejected line 3: not valid JSON" in result.stderr
        assert "rejected line 4: invalid session id" in result.stderr
        assert "2 lines were rejected (first: line 3: not valid JSON" in result.stderr
        assert "3 sessions were written" in result.stderr
        assert len(contents(target)) == 3

    def test_strict_writes_nothing(self, runner: CliRunner, tmp_path: Path) -> None:
        """With --strict a bad line anywhere stops the import before anything is written."""
        path = export_file(tmp_path, sessions(4))
        lines = path.read_text().splitlines()
        lines[4] = lines[4].replace('"timeout_ms":86400000', '"timeout_ms":-1')
        path.write_text("\n".join(lines) + "\n")
        target = leveldb_config(tmp_path)
        result = invoke(runner, "import", path, "--config", target, "--strict")
        assert result.exit_code == ExitCode.DATA
        assert re.search(r"in\.jsonl:5: invalid session timeout_ms", result.stderr)
        assert contents(target) == {}

    @pytest.mark.parametrize(
        ("damage", "message"),
        [
            (lambda text: text[: len(text) // 2], "cut off|without its end line"),
            (lambda text: "\n".join(text.splitlines()[:-1]) + "\n", "without its end line"),
            (
                lambda text: text.replace(f'"version":{EXPORT_VERSION}', '"version":7', 1),
                "version 7 is not supported .*upgrade",
            ),
            (lambda text: "hello\n" + text, "not a sessionkeeper export"),
        ],
        ids=["truncated-mid-line", "truncated-at-line", "newer-version", "not-an-export"],
    )
    def test_damaged_files_exit_5(
        self,
        runner: CliRunner,
        tmp_path: Path,
        damage: Callable[[str], str],
        message: str,
    ) -> None:
        """Truncated files, a newer format version and foreign files exit with 5 and say what
        is wrong."""
        path = export_file(tmp_path, sessions(6))
        path.write_text(damage(path.read_text()))
        target = leveldb_config(tmp_path)
        result = invoke(runner, "import", path, "--config", target)
        assert result.exit_code == ExitCode.DATA, result.output
        assert re.search(message, result.stderr), result.stderr

    def test_missing_file_is_a_usage_error(self, runner: CliRunner, tmp_path: Path) -> None:
        """A FILE that does not exist exits with 2."""
        result = runner.invoke(cli, ["import", str(tmp_path / "nope.jsonl")])
        assert result.exit_code == ExitCode.USAGE
        assert "does not exist" in result.output

    def test_stdin_and_skip_existing(self, runner: CliRunner, tmp_path: Path) -> None:
        """``-`` reads stdin; --skip-existing keeps a stored session that differs."""
        items = sessions(3)
        path = export_file(tmp_path, items)
        target = leveldb_config(tmp_path)
        seed(target, [items[0].replace(metadata={"mine": True})])
        result = invoke(
            runner, "import", "-", "--config", target, "--skip-existing", "--json",
            input=gzip.compress(path.read_bytes()),
        )  # fmt: skip
        report = json.loads(result.stdout)
        assert (report["imported"], report["skipped_existing"]) == (2, 1)
        assert contents(target)[items[0].id].metadata == {"mine": True}

    def test_store_locked_by_another_process_exits_4(
        self, runner: CliRunner, tmp_path: Path
    ) -> None:
        """A target store whose owner lock another process holds refuses the import: exit 4,
        naming the lock, and nothing is written."""
        path = export_file(tmp_path, sessions(3))
        target = sqlitedict_config(tmp_path, name="locked", auto_save=0)
        seed(target, [])
        with Holder(target) as holder:
            result = invoke(runner, "import", path, "--config", target)
        assert result.exit_code == ExitCode.STORAGE
        assert str(holder.pid) in result.stderr or "lock" in result.stderr
        assert contents(target) == {}

    def test_store_that_refuses_part_way_exits_4(
        self, runner: CliRunner, tmp_path: Path, make_dist: MakeDist
    ) -> None:
        """A store that refuses a write part-way stops the import with 4 and a summary of
        what was written before."""
        make_dist(
            "sessionkeeper-dict",
            {
                "sessionkeeper_dict": (
                    EXAMPLES / "dict_backend" / "sessionkeeper_dict.py"
                ).read_text()
            },
            {"sessionkeeper.backends": {"dict": "sessionkeeper_dict:DictBackend"}},
        )
        path = export_file(tmp_path, sessions(5))
        target = write_config(tmp_path / "dict.toml", "dict", max_sessions=2)
        result = invoke(runner, "import", path, "--config", target)
        assert result.exit_code == ExitCode.STORAGE
        assert "failed after 2 sessions were written" in result.stderr
        assert "full: max_sessions is 2" in result.stderr
        assert "Import stopped" in result.stdout


class Holder:
    """Another process that opens a store for writing and holds it until the block ends."""

    def __init__(self, config: Path) -> None:
        self.config = config

    def __enter__(self) -> Holder:
        script = textwrap.dedent(
            f"""
            import sys
            from sessionkeeper import SessionManager
            with SessionManager.from_config({str(self.config)!r}):
                print("ready", flush=True)
                sys.stdin.read()
            """
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", script],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "ready"
        self.pid = self.process.pid
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.process.communicate(timeout=30)


# --- migrate -----------------------------------------------------------------------------------


class TestMigrateCommand:
    def test_copies_verifies_and_prints_both_sides(self, runner: CliRunner, tmp_path: Path) -> None:
        """``migrate --to`` copies every live session exactly, prints both sides' counts and
        digests, and a second run copies nothing."""
        source = sqlitedict_config(tmp_path)
        target = leveldb_config(tmp_path)
        items = sessions(50)
        seed(source, items)
        result = invoke(runner, "migrate", "--config", source, "--to", target)
        assert result.exit_code == 0, result.output
        digests = re.findall(r"(source|target): digest\s+([0-9a-f]{32})", result.stdout)
        assert len(digests) == 2
        assert digests[0][1] == digests[1][1]
        assert re.search(r"verification\s+ok: both sides match", result.stdout)
        assert contents(target) == {s.id: s for s in items[:-1]}
        again = json.loads(
            invoke(runner, "migrate", "--config", source, "--to", target, "--json").stdout
        )
        assert (again["copied"], again["unchanged"], again["verified"]) == (0, 50, True)

    def test_delete_source(self, runner: CliRunner, tmp_path: Path) -> None:
        """--delete-source removes, after verification, what the target holds exactly so."""
        source = sqlitedict_config(tmp_path)
        target = leveldb_config(tmp_path)
        seed(source, sessions(10))
        result = invoke(
            runner, "migrate", "--config", source, "--to", target, "--delete-source", "--json"
        )
        report = json.loads(result.stdout)
        assert (report["verified"], report["deleted"]) == (True, 10)
        assert list(contents(source)) == ["expired"]

    def test_same_store_and_memory_source(self, runner: CliRunner, tmp_path: Path) -> None:
        """--to naming the source exits with 2; a memory source is explained with 3."""
        source = sqlitedict_config(tmp_path)
        seed(source, sessions(1))
        result = runner.invoke(cli, ["migrate", "--config", str(source), "--to", str(source)])
        assert result.exit_code == ExitCode.USAGE
        assert "same store" in result.output
        memory = write_config(tmp_path / "m.toml", "memory")
        result = runner.invoke(cli, ["migrate", "--config", str(memory), "--to", str(source)])
        assert result.exit_code == ExitCode.CONFIG
        assert "the memory backend is per process" in result.stderr
        assert "sessionkeeper.transfer.migrate_sessions(manager" in result.stderr

    def test_locked_target_exits_4(self, runner: CliRunner, tmp_path: Path) -> None:
        """A target owned by another process is refused with 4; the source is untouched."""
        source = sqlitedict_config(tmp_path)
        seed(source, sessions(3))
        target = sqlitedict_config(tmp_path, name="owned", auto_save=0)
        seed(target, [])
        before = contents(source)
        with Holder(target):
            result = invoke(runner, "migrate", "--config", source, "--to", target)
        assert result.exit_code == ExitCode.STORAGE
        assert "sqlitedict backend" in result.stderr
        assert contents(source) == before

    def test_killed_migration_resumes_without_duplicates_or_loss(
        self, runner: CliRunner, tmp_path: Path
    ) -> None:
        """A migration killed with SIGKILL part-way, then run again, ends with exactly the
        source's sessions in the target: the second run skips what the first committed."""
        total = 30_000
        source = sqlitedict_config(tmp_path, name="big")
        seed(source, sessions(total))
        target = sqlitedict_config(tmp_path, name="into", auto_save=0, synchronous="NORMAL")
        command = [
            sys.executable, "-m", "sessionkeeper", "migrate", "--config", str(source),
            "--to", str(target), "--quiet",
        ]  # fmt: skip
        with (tmp_path / "stderr.txt").open("wb") as stderr:
            process = subprocess.Popen(
                command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stderr
            )
        committed = 0
        database = tmp_path / "into.sqlite"
        deadline = time.monotonic() + 120
        try:
            while committed < 1000:
                assert process.poll() is None, (tmp_path / "stderr.txt").read_text()
                assert time.monotonic() < deadline, "the migration did not start copying"
                committed = rows(database)
                time.sleep(0.005)
            process.send_signal(signal.SIGKILL)
        finally:
            process.wait(timeout=30)
        assert process.returncode == -signal.SIGKILL
        at_kill = rows(database)
        assert 0 < at_kill < total
        result = invoke(runner, "migrate", "--config", source, "--to", target, "--json")
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["unchanged"] >= at_kill
        assert report["copied"] + report["unchanged"] + report["replaced"] == total
        assert report["verified"]
        expected = {s.id: s for s in contents(source).values() if s.id != "expired"}
        assert contents(target) == expected
        assert rows(database) == total


def rows(database: Path) -> int:
    """Rows committed in the sqlitedict file, read as SQLite sees them (0 before it exists)."""
    if not database.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as connection:
            (count,) = connection.execute("SELECT count(*) FROM sessions").fetchone()
    except sqlite3.OperationalError:
        return 0
    finally:
        connection.close()
    return int(count)


# --- backup ------------------------------------------------------------------------------------


class TestBackup:
    def test_timestamped_files_and_keep(self, runner: CliRunner, tmp_path: Path) -> None:
        """Each backup is a new PREFIX-<UTC time>.jsonl.gz; --keep N deletes the oldest beyond N
        of the same prefix only; a backup restores with import."""
        source = sqlitedict_config(tmp_path)
        items = sessions(5)
        seed(source, items)
        directory = tmp_path / "backups"
        other = directory / "other-20000101T000000.000Z.jsonl.gz"
        made = []
        for _ in range(4):
            result = invoke(
                runner, "backup", directory, "--config", source, "--keep", "2", "--json"
            )
            made.append(json.loads(result.stdout)["path"])
            if not other.exists():
                other.write_bytes(b"not ours")
        names = sorted(p.name for p in directory.iterdir())
        assert [Path(p).name for p in made[-2:]] == names[-2:]
        assert other.name in names
        assert len(names) == 3
        for name in names[-2:]:
            assert re.fullmatch(r"sessionkeeper-\d{8}T\d{6}\.\d{3}Z(-\d+)?\.jsonl\.gz", name)
        assert oct(directory.stat().st_mode & 0o777) == "0o700"
        target = leveldb_config(tmp_path)
        result = invoke(runner, "import", made[-1], "--config", target)
        assert result.exit_code == 0
        assert contents(target) == {s.id: s for s in items[:-1]}

    def test_one_clock_reading_names_the_file_and_stamps_the_header(self, tmp_path: Path) -> None:
        """The file name and the export's ``exported_at`` come from one reading of the manager's
        clock (the name used to come from the system's wall clock, so a backup of a store with
        an injected clock, or one taken across a clock step, was named for another instant than
        its header said)."""
        moment = 1_000_000_000_123  # 2001-09-09T01:46:40.123Z, far from the wall clock
        with SessionManager(backend="memory", clock=lambda: moment) as manager:
            live = Session("backup-me", moment - 1_000, moment - 1_000, 60_000, {"k": 1})
            manager.store_many([live])
            report = backup_sessions(manager, tmp_path / "b", prefix="app")
        assert Path(report.path).name == "app-20010909T014640.123Z.jsonl.gz"
        assert backup_name("app", moment) == Path(report.path).name
        with gzip.open(report.path, "rt", encoding="utf-8") as handle:
            header = json.loads(handle.readline())
        assert header["exported_at"] == moment == report.exported_at
        assert report.count == 1  # judged live at the same instant

    def test_bad_prefix_and_memory(self, runner: CliRunner, tmp_path: Path) -> None:
        """A prefix with a path separator is a usage error; a memory store is explained."""
        result = runner.invoke(cli, ["backup", str(tmp_path), "--prefix", "../x"])
        assert result.exit_code == ExitCode.USAGE
        result = runner.invoke(cli, ["backup", str(tmp_path / "b")])
        assert result.exit_code == ExitCode.CONFIG
        assert "per process" in result.stderr


# --- exit codes --------------------------------------------------------------------------------


class TestExitCodes:
    @pytest.mark.parametrize(
        "error",
        [
            SameStoreError("the source and the target are the same store (x)"),
            ExportTargetError("out.jsonl is a FIFO (named pipe): refusing to replace it"),
        ],
        ids=["same-store", "export-target"],
    )
    def test_refused_targets_are_usage_errors(self, error: Exception) -> None:
        """A migration onto its own store and an export target that would be replaced are the
        caller naming the wrong thing: exit 2 (usage) wherever they surface, as the commands
        report them, not 4 (storage), which says the store failed."""
        assert exit_code_for(error) == ExitCode.USAGE


# --- stats --format ----------------------------------------------------------------------------


class TestStatsFormat:
    def test_prometheus_text(self, runner: CliRunner, tmp_path: Path) -> None:
        """``stats --format prometheus`` prints the exposition format with the live count."""
        from prometheus_client.parser import text_string_to_metric_families

        source = sqlitedict_config(tmp_path)
        seed(source, sessions(7))
        result = invoke(runner, "stats", "--format", "prometheus", "--config", source)
        assert result.exit_code == 0
        families = {f.name: f for f in text_string_to_metric_families(result.stdout)}
        live = families["sessionkeeper_live_sessions"].samples[0]
        assert live.value == 7
        assert live.labels == {"backend": "sqlitedict"}

    def test_json_and_format_conflict(self, runner: CliRunner) -> None:
        """--json with --format prometheus is a usage error; --format json equals --json."""
        result = runner.invoke(cli, ["stats", "--json", "--format", "prometheus"])
        assert result.exit_code == ExitCode.USAGE
        result = runner.invoke(cli, ["stats", "--format", "json"])
        assert json.loads(result.stdout)["backend"] == "memory"
