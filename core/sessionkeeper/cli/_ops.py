"""The operators' transfer commands: ``export``, ``import``, ``migrate`` and ``backup``.

:mod:`sessionkeeper.cli` adds them to the ``sessionkeeper`` group; what they share with the other
commands comes from :mod:`sessionkeeper.cli._common`. Each command streams (constant memory),
reads without touching, shows a rich progress bar on a terminal (``--quiet`` turns it and the
summary off), prints a summary (``--json``: as JSON on stdout), and reports failures through the
exit codes of :class:`~sessionkeeper.cli.ExitCode`: 2 for an export target that is not a new
path or an earlier export (a FIFO, a device, a symbolic link, another program's file: refused,
never replaced) and for a migration whose two configs name one store, 5 for an export file that
cannot be used or lines that were rejected, 6 for a migration whose verification failed.

The module is long because these four commands carry their help texts and options with them;
the work itself is in :mod:`sessionkeeper.transfer`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress
from rich.text import Text

from .._config import Config, load_config
from .._errors import ExportFormatError, ExportTargetError, SameStoreError, VerificationFailed
from .._manager import SessionManager
from .._transfer import export_sessions, import_sessions, migrate_sessions
from .._transfer_backup import backup_sessions
from .._transfer_common import ImportReport, MigrationReport, Progress
from ._common import ExitCode, common_options, emit_json, fail, is_per_process
from ._render import error_console, output_console, plain
from ._render import table as make_table

__all__ = ["backup", "export_command", "import_command", "migrate"]

_QUIET_HELP: Final = "No progress bar and no summary (errors are still printed on stderr)."
_EXPIRED_HELP: Final = "Take expired sessions too (by default they are left out)."
#: Rejected lines (or sessions) printed by the human output; --json has the first 100.
_SHOWN: Final = 20
_PREFIX: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_PHASES: Final = {
    "export": "exporting",
    "import": "importing",
    "copy": "copying",
    "verify": "verifying",
    "delete": "deleting from the source",
}


def _quiet_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--quiet", "-q", is_flag=True, help=_QUIET_HELP)(func)


def _expired_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--include-expired", is_flag=True, help=_EXPIRED_HELP)(func)


# --- progress ----------------------------------------------------------------------------------


def _megabytes(count: float | None) -> str:
    return "?" if count is None else f"{count / 1e6:,.1f} MB"


class _Bars:
    """A rich progress bar per phase on stderr, with count, rate, elapsed time and ETA.

    A no-op (the callback is ``None``) when quiet or when stderr is not a terminal (a cron job's
    log gets the summary only).
    """

    def __init__(self, quiet: bool, console: Console | None = None) -> None:
        self.console = console or error_console()
        self.enabled = not quiet and self.console.is_terminal
        self._progress: RichProgress | None = None
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> Progress | None:
        if not self.enabled:
            return None
        self._progress = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[count]}"),
            TextColumn("{task.fields[rate]}", style="progress.data.speed"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self._progress.start()
        return self.update

    def update(self, phase: str, done: int, total: int | None) -> None:
        """The :data:`~sessionkeeper._transfer_common.Progress` callback."""
        progress = self._progress
        if progress is None:
            return
        task = self._tasks.get(phase)
        if task is None:
            task = self._tasks[phase] = progress.add_task(
                _PHASES.get(phase, phase), total=total, count="", rate=""
            )
        progress.update(task, completed=done, total=total)
        speed = next(t for t in progress.tasks if t.id == task).speed
        if phase == "import":  # counted in bytes of the file
            count, rate = f"{_megabytes(done)} of {_megabytes(total)}", f"{_megabytes(speed)}/s"
        else:
            shown = "?" if total is None else f"{total:,}"
            count = f"{done:,}/{shown}"
            rate = "-/s" if speed is None else f"{speed:,.0f}/s"
        progress.update(task, count=count, rate=rate)

    def __exit__(self, *exc_info: object) -> None:
        if self._progress is not None:
            self._progress.stop()


# --- opening stores ----------------------------------------------------------------------------


def _explain_per_process(config: Config, what: str, inside: str) -> click.exceptions.Exit:
    """The error for a per-process backend that the command cannot see into (exit 3)."""

    return fail(
        Exception(
            f"the {config.backend} backend is per process: this command opened its own store, "
            f"which is empty, not the sessions of a running application, so there is nothing "
            f"to {what}. Run it inside the application instead ({inside}), or use a backend "
            "that keeps sessions outside the process (sqlitedict, leveldb, zmq, redis)."
        ),
        ExitCode.CONFIG,
    )


def _empty(manager: SessionManager) -> bool:
    return next(manager.iter_sessions(include_expired=True), None) is None


@contextlib.contextmanager
def _source(
    config_path: Path | None, *, read_only: bool, what: str, inside: str
) -> Iterator[SessionManager]:
    """Open the configured store to read from; a per-process one that is empty is explained."""
    config = load_config(config_path)
    with SessionManager.from_settings(config, read_only=read_only, schedule=False) as manager:
        if is_per_process(manager) and _empty(manager):
            raise _explain_per_process(config, what, inside)
        yield manager


@contextlib.contextmanager
def _target(config: Config) -> Iterator[SessionManager]:
    """Open a store to write into; a per-process one gets a note (its sessions die with us)."""
    with SessionManager.from_settings(config, schedule=False) as manager:
        if is_per_process(manager):
            error_console().print(
                Text(
                    f"note: the {manager.backend_name} backend is per process: what this "
                    "command writes lives only until it exits."
                ),
                style="yellow",
            )
        yield manager


def _summary(rows: list[tuple[str, object]], title: str | None = None) -> None:
    table = make_table(show_header=False, title=title)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value")
    for key, value in rows:
        table.add_row(plain(key), plain(f"{value:,}" if isinstance(value, int) else value))
    output_console().print(table)


@contextlib.contextmanager
def _refused_target() -> Iterator[None]:
    """An export target that would be replaced (not a new path nor an earlier export) is a
    usage error (exit 2): the FILE or DIR argument names the wrong thing."""
    try:
        yield
    except ExportTargetError as exc:
        raise click.UsageError(str(exc)) from None


# --- export ------------------------------------------------------------------------------------


@click.command(
    "export",
    epilog="""\b
Examples:
  sessionkeeper export sessions.jsonl --config /etc/myapp/sessionkeeper.toml
  sessionkeeper export sessions.jsonl.gz --include-expired
  sessionkeeper export - | gzip > sessions.jsonl.gz
""",
)
@click.argument("file", metavar="FILE", type=click.Path(dir_okay=False, allow_dash=True))
@_expired_option
@_quiet_option
@common_options
def export_command(
    file: str, config_path: Path | None, as_json: bool, quiet: bool, include_expired: bool
) -> None:
    """Write every live session to FILE in the export format (JSON Lines).

    Reads without touching (no session is kept alive by being exported) from a read-only
    open, so it runs beside the server that owns the store, in constant memory. FILE
    ending in .gz is gzip-compressed; - writes to stdout. The file appears under its name
    only once complete: a header line, one line per session, an end line with the count
    and a digest. Expired sessions are left out unless --include-expired. FILE must be a
    new path or an earlier export: a FIFO, a device, a symbolic link or any other file is
    refused (exit 2) and left as it is; to feed a pipe, write to - and redirect stdout.
    """
    if file == "-" and as_json:
        raise click.UsageError("--json prints on stdout, which carries the export with FILE '-'")
    inside = "sessionkeeper.transfer.export_sessions(manager, 'sessions.jsonl')"
    with (
        _source(config_path, read_only=True, what="export", inside=inside) as manager,
        _Bars(quiet) as progress,
        _refused_target(),
    ):
        report = export_sessions(manager, file, include_expired=include_expired, progress=progress)
    if as_json:
        emit_json(report.to_dict())
    elif not quiet:
        where = "stdout" if file == "-" else file
        message = f"Exported {report.count:,} sessions from the {report.backend} backend to {where}"
        error_console().print(Text(f"{message} (digest {report.digest})."))


# --- import ------------------------------------------------------------------------------------


def _import_rows(report: ImportReport) -> list[tuple[str, object]]:
    return [
        ("file", report.path),
        ("into", f"{report.backend} backend"),
        ("exported from", f"{report.source_backend} backend"),
        ("sessions read", report.read),
        ("imported (new)", report.imported),
        ("replaced", report.replaced),
        ("unchanged (already stored)", report.unchanged),
        ("skipped (existing)", report.skipped_existing),
        ("skipped (expired)", report.skipped_expired),
        ("duplicate ids (last line wins)", report.duplicates),
        ("rejected lines", report.rejected),
    ]


def _import_failure(report: ImportReport) -> ExportFormatError | None:
    if report.ok:
        return None
    parts = []
    if report.rejected:
        first = report.errors[0] if report.errors else None
        noun = "line was" if report.rejected == 1 else "lines were"
        parts.append(f"{report.rejected} {noun} rejected" + (f" (first: {first})" if first else ""))
    if report.end_problem is not None:
        parts.append(report.end_problem)
    written = f"{report.written:,} sessions were written"
    return ExportFormatError(f"bad input file: {'; '.join(parts)}; {written}", source=report.path)


@click.command(
    "import",
    epilog="""\b
Examples:
  sessionkeeper import sessions.jsonl --config /etc/myapp/sessionkeeper.toml
  sessionkeeper import backup.jsonl.gz --skip-existing
  sessionkeeper import sessions.jsonl --strict --json
  gunzip -c sessions.jsonl.gz | sessionkeeper import -
""",
)
@click.argument(
    "file", metavar="FILE", type=click.Path(exists=True, dir_okay=False, allow_dash=True)
)
@click.option(
    "--strict",
    is_flag=True,
    help="Validate the whole file first and stop at the first bad line, writing nothing.",
)
@click.option(
    "--skip-existing/--replace",
    "skip_existing",
    default=False,
    help="For an id already stored with different content: keep the stored session, or "
    "replace it with the file's (the default). Identical sessions are never rewritten.",
)
@_expired_option
@_quiet_option
@common_options
def import_command(
    file: str,
    config_path: Path | None,
    as_json: bool,
    quiet: bool,
    include_expired: bool,
    strict: bool,
    skip_existing: bool,
) -> None:
    """Store the sessions of an export FILE (- reads stdin; gzip is recognised).

    Every line is validated: a bad line is reported with its line number and skipped, and
    the good ones are imported (--strict: the whole file is checked first and nothing is
    written if any line is bad). Opens the store for writing. Sessions that expired are
    skipped unless --include-expired. A later line for an id that an earlier line stored
    replaces it (the last line wins) and is counted as a duplicate. Exits with 5 when lines
    were rejected or the file is truncated, damaged or followed by garbage, gzip or not (the
    sessions before the problem are imported and counted), with 4 when the store refuses a
    write (the summary says how many were written before).
    """
    config = load_config(config_path)
    with _target(config) as manager, _Bars(quiet) as progress:
        try:
            report = import_sessions(
                manager,
                file,
                strict=strict,
                existing="skip" if skip_existing else "replace",
                include_expired=include_expired,
                progress=progress,
            )
        except Exception as exc:
            partial = getattr(exc, "report", None)
            if isinstance(partial, ImportReport) and not quiet and not as_json:
                _summary(_import_rows(partial), title="Import stopped")
            raise
    if as_json:
        emit_json(report.to_dict())
    elif not quiet:
        _summary(_import_rows(report))
        if report.errors:
            err = error_console()
            for problem in report.errors[:_SHOWN]:
                err.print(Text.assemble(("rejected ", "red"), str(problem)))
            if report.rejected > _SHOWN:
                err.print(Text(f"... {report.rejected - _SHOWN} more (see --json)"))
    failure = _import_failure(report)
    if failure is not None:
        raise failure


# --- migrate -----------------------------------------------------------------------------------


def _migration_rows(report: MigrationReport) -> list[tuple[str, object]]:
    verdict = "ok: both sides match" if report.verified else "FAILED"
    return [
        ("from", f"{report.source_backend} backend"),
        ("to", f"{report.target_backend} backend"),
        ("sessions read", report.read),
        ("copied (new)", report.copied),
        ("replaced (differed)", report.replaced),
        ("already in the target", report.unchanged),
        ("rejected by the target", report.rejected),
        ("source: count", report.source_count),
        ("source: digest", report.source_digest),
        ("target: count", report.target_count),
        ("target: digest", report.target_digest),
        ("missing in the target", report.missing),
        ("different in the target", report.differing),
        ("verification", verdict),
        ("deleted from the source", report.deleted),
        ("kept in the source (not copied by this run)", report.kept),
    ]


def _same_store(source: Config, target: Config) -> bool:
    if (
        source.source is not None
        and target.source is not None
        and source.source.resolve() == target.source.resolve()
    ):
        return True
    return (
        source.backend == target.backend
        and source.backend_opts == target.backend_opts
        and source.base_dir.resolve() == target.base_dir.resolve()
    )


@click.command(
    epilog="""\b
Examples:
  sessionkeeper migrate --config sqlitedict.toml --to zmq.toml
  sessionkeeper migrate --config old.toml --to new.toml --delete-source
  sessionkeeper migrate --config old.toml --to new.toml --quiet --json
""",
)
@click.option(
    "--to",
    "to_path",
    required=True,
    metavar="OTHER.toml",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The config file of the store to copy into.",
)
@click.option(
    "--delete-source",
    is_flag=True,
    help="After a verified copy, delete from the source every session the target holds "
    "exactly so. Opens the source for writing: stop its owner first.",
)
@_expired_option
@_quiet_option
@common_options
def migrate(
    config_path: Path | None,
    as_json: bool,
    quiet: bool,
    include_expired: bool,
    to_path: Path,
    delete_source: bool,
) -> None:
    """Copy every live session from the --config store to the --to store, and verify.

    Streams one session at a time with a progress bar (rate and ETA); reads the source
    without touching it (read-only, so it can run beside its owner, unless
    --delete-source). Resumable: a session already in the target exactly so is not
    written again, so after an interruption run the same command again. Ends with a
    verification that reads the source again and looks every session up in the target,
    and prints both sides' counts and content digests. Exits with 6 when they differ
    (sessions changed in a live source: run it again), with 4 when a store fails, with 2
    when both configs name one store (however its path or URL is spelled: the stores are
    compared by the identity they report).

    --delete-source deletes only what this run copied, or found already copied when both
    stores report an identity; the rest is kept and counted.
    """
    source_config = load_config(config_path)
    target_config = load_config(to_path)
    if _same_store(source_config, target_config):
        raise click.UsageError("--to names the same store as --config: nothing to migrate")
    inside = (
        "sessionkeeper.transfer.migrate_sessions(manager, "
        "sessionkeeper.SessionManager.from_config('OTHER.toml'))"
    )
    with (
        _source(config_path, read_only=not delete_source, what="migrate", inside=inside) as src,
        _target(target_config) as dst,
        _Bars(quiet) as progress,
    ):
        try:
            report = migrate_sessions(
                src,
                dst,
                include_expired=include_expired,
                delete_source=delete_source,
                progress=progress,
            )
        except SameStoreError as exc:
            raise click.UsageError(f"--to names the same store as --config: {exc}") from None
    if as_json:
        emit_json(report.to_dict())
    elif not quiet:
        _summary(_migration_rows(report))
        if report.kept:
            error_console().print(
                Text(
                    f"note: {report.kept:,} sessions were left in the source: this run did not "
                    "copy them (they were in the target already, and "
                    + _unproven(report)
                    + ", or they were written to the source after the copy)."
                ),
                style="yellow",
            )
    if not report.verified:
        kept = " The source was left as it is." if delete_source else ""
        raise VerificationFailed(
            f"verification failed: {report.missing:,} sessions missing and "
            f"{report.differing:,} different in the target (rejected by it: "
            f"{report.rejected:,}). Sessions that changed in a live source are copied by "
            f"running the same command again.{kept}",
            report=report,
        )


def _unproven(report: MigrationReport) -> str:
    unknown = [
        backend
        for backend, identity in (
            (report.source_backend, report.source_identity),
            (report.target_backend, report.target_identity),
        )
        if identity is None
    ]
    if not unknown:
        return "the stores were not proven distinct"
    return (
        f"the {' and the '.join(dict.fromkeys(unknown))} backend cannot say which store it "
        "opened, so the two could be one"
    )


# --- backup ------------------------------------------------------------------------------------


def _check_prefix(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not _PREFIX.fullmatch(value):
        raise click.BadParameter(
            "use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
            ctx=ctx,
            param=param,
        )
    return value


@click.command(
    epilog="""\b
Examples:
  sessionkeeper backup /var/backups/sessionkeeper --keep 14
  sessionkeeper backup backups --prefix myapp --quiet
""",
)
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Keep the N newest backups of this prefix in DIR and delete older ones "
    "(default: delete nothing).",
)
@click.option(
    "--prefix",
    default="sessionkeeper",
    show_default=True,
    callback=_check_prefix,
    help="The start of the file names (one prefix per store when DIR holds several).",
)
@_expired_option
@_quiet_option
@common_options
def backup(
    directory: Path,
    config_path: Path | None,
    as_json: bool,
    quiet: bool,
    include_expired: bool,
    keep: int | None,
    prefix: str,
) -> None:
    """Write a timestamped, gzip-compressed export into DIR; with --keep N, prune old ones.

    The file is DIR/PREFIX-YYYYMMDDTHHMMSS.mmmZ.jsonl.gz (UTC), created with mode 0600
    and put in place only once complete, so a backup that is interrupted leaves no file.
    Older backups of the same prefix are deleted only after the new one is written.
    Restore one with sessionkeeper import FILE. DIR is created (mode 0700) if missing.
    """
    inside = "sessionkeeper.transfer.export_sessions(manager, 'backup.jsonl.gz')"
    with (
        _source(config_path, read_only=True, what="back up", inside=inside) as manager,
        _Bars(quiet) as progress,
        _refused_target(),
    ):
        report = backup_sessions(
            manager,
            directory,
            prefix=prefix,
            keep=keep,
            include_expired=include_expired,
            progress=progress,
        )
    if as_json:
        emit_json(report.to_dict())
    elif not quiet:
        rows: list[tuple[str, object]] = [
            ("backup", report.path),
            ("sessions", report.count),
            ("digest", report.digest),
            ("older backups deleted", len(report.deleted)),
        ]
        _summary(rows)
