"""The transfers: export, import, migrate and backup, built on the export format.

Everything here streams: a writer holds one line at a time, a reader one line at a time, and a
migration one session at a time, so memory stays flat whatever the number of sessions. Export,
backup and migration read with :meth:`SessionManager.iter_sessions
<sessionkeeper.SessionManager.iter_sessions>`, which never touches a session (the Erlang
original's export recipe used ``fetch``, which extended every session's life).

The format is :mod:`._export_format` (records, header, digest), written by
:mod:`._export_writer` and read by :mod:`._export_reader`; the reports and the batched writer
the transfers share are in :mod:`._transfer_common`. The names below stay importable from here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from typing import Literal

import attrs

from ._codec import encode_session
from ._errors import (
    ExportError,
    ExportFormatError,
    ExportTargetError,
    InvalidSession,
    SameStoreError,
    SessionKeeperError,
    TransferAborted,
    VerificationFailed,
)
from ._export_format import (
    BUFFER,
    EXPORT_FORMAT,
    EXPORT_VERSION,
    ExportHeader,
    LineError,
    SessionDigest,
    is_stdio,
)
from ._export_reader import ExportReader, validate_export
from ._export_writer import ExportWriter
from ._manager import SessionManager
from ._model import Session
from ._transfer_common import (
    PROGRESS_EVERY,
    BatchWriter,
    ExportReport,
    Fingerprints,
    ImportReport,
    MigrationReport,
    Progress,
    StoreFailed,
    capped,
    estimate,
    raw_fetch,
    same,
    selected,
)

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "ExportError",
    "ExportFormatError",
    "ExportHeader",
    "ExportReader",
    "ExportReport",
    "ExportTargetError",
    "ExportWriter",
    "ImportReport",
    "LineError",
    "MigrationReport",
    "Progress",
    "SameStoreError",
    "SessionDigest",
    "TransferAborted",
    "VerificationFailed",
    "export_sessions",
    "import_sessions",
    "migrate_sessions",
    "validate_export",
]


def export_sessions(
    manager: SessionManager,
    target: str | os.PathLike[str],
    *,
    include_expired: bool = False,
    progress: Progress | None = None,
    now: int | None = None,
) -> ExportReport:
    """Write every live session of ``manager`` (with ``include_expired``, every stored one) to
    ``target`` in the export format, without touching any.

    ``target`` is a path (``.gz``: gzip-compressed) or ``"-"`` for standard output. The file
    appears under its name only once complete (see :class:`ExportWriter`). Returns the count and
    the digest written on the end line. A read failure of the store raises
    :class:`~sessionkeeper.StorageError` and leaves no file behind.

    ``now`` (ms since the Unix epoch) is the instant the export is taken at: which sessions are
    live, and the header's ``exported_at``. By default the manager's clock is read once; a
    caller that already read it (a backup names its file from that reading) passes it here.
    """
    from . import __version__

    if now is None:
        now = manager.clock()
    header = ExportHeader(
        source_backend=manager.backend_name,
        exported_at=now,
        include_expired=include_expired,
        sessionkeeper_version=__version__,
    )
    total = estimate(manager, progress)
    report = ExportReport(
        path=os.fspath(target),
        backend=manager.backend_name,
        include_expired=include_expired,
        exported_at=now,
    )
    try:
        with ExportWriter(target, header) as writer:
            for session in selected(manager, now, include_expired):
                writer.write(session)
                if progress is not None and writer.count % PROGRESS_EVERY == 0:
                    progress("export", writer.count, total)
    except OSError as exc:  # the file system: no space left, an I/O error, a closed pipe
        if isinstance(exc, BrokenPipeError):
            raise
        raise ExportError(
            f"cannot write {os.fspath(target)}: {exc.strerror or exc}", report=report
        ) from None
    if progress is not None:
        progress("export", writer.count, writer.count)
    report.count = writer.count
    report.digest = writer.digest.hexdigest()
    return report


@contextlib.contextmanager
def _spooled(source: str | os.PathLike[str]) -> Iterator[str | os.PathLike[str]]:
    """Standard input copied to a private temporary file (so it can be read twice)."""
    if not is_stdio(source):
        yield source
        return
    with tempfile.NamedTemporaryFile(prefix="sessionkeeper-import-", suffix=".jsonl") as spool:
        shutil.copyfileobj(sys.stdin.buffer, spool, BUFFER)
        spool.flush()
        yield spool.name


def import_sessions(
    manager: SessionManager,
    source: str | os.PathLike[str],
    *,
    strict: bool = False,
    existing: Literal["replace", "skip"] = "replace",
    include_expired: bool = False,
    progress: Progress | None = None,
) -> ImportReport:
    """Store the sessions of an export file into ``manager``'s store.

    Every line is validated. A bad line is counted, kept in :attr:`ImportReport.errors` with its
    line number and skipped; the good lines are imported. With ``strict`` the whole file is
    validated first and the first problem raises :class:`ExportFormatError` before anything is
    written. A session already stored exactly so is left alone (``unchanged``); one stored with
    different content is replaced (``existing="replace"``, the default) or kept
    (``existing="skip"``). Sessions expired at the time of the import are skipped unless
    ``include_expired``. Sessions are stored as the file has them, versions included (a file of
    export format version 1 gives version 1, no owner, no absolute timeout).

    Raises :class:`ExportFormatError` when the file is not an export this version can read
    (header, truncated compression), and :class:`TransferAborted` (whose ``report`` counts what
    was written) when the store fails part-way. Check :attr:`ImportReport.ok` afterwards.
    """
    if existing not in ("replace", "skip"):
        raise ValueError(f'existing must be "replace" or "skip", got {existing!r}')
    with _spooled(source) if strict else contextlib.nullcontext(source) as readable:
        if strict:
            validate_export(readable)
        with ExportReader(readable) as reader:
            report = ImportReport(
                path=os.fspath(source),
                backend=manager.backend_name,
                source_backend=reader.header.source_backend,
            )
            _import_lines(manager, reader, report, existing, include_expired, progress)
    return report


def _import_lines(
    manager: SessionManager,
    reader: ExportReader,
    report: ImportReport,
    existing: str,
    include_expired: bool,
    progress: Progress | None,
) -> None:
    now = manager.clock()
    size = reader.size

    def reject(number: int, exc: InvalidSession) -> None:  # e.g. over max_metadata_bytes
        report.rejected += 1
        capped(report.errors, LineError(number, str(exc)))

    # The ids this file put in the store (or found there exactly so): a later line for one of
    # them is a duplicate, and the last line wins.
    placed = Fingerprints()
    writer = BatchWriter(manager, reject, lambda session: placed.add(session.id.encode()))
    same_duplicates = 0
    try:
        for number, item in reader:
            if isinstance(item, LineError):
                report.rejected += 1
                capped(report.errors, item)
                continue
            report.read += 1
            if progress is not None and report.read % PROGRESS_EVERY == 0:
                progress("import", reader.position, size)
            if not include_expired and item.is_expired(now):
                report.skipped_expired += 1
                continue
            try:
                if writer.pending(item.id):
                    writer.flush()  # an earlier line's copy, to compare with what is stored
                stored = raw_fetch(manager, item.id)
            except StoreFailed:
                raise
            except SessionKeeperError as exc:
                raise StoreFailed(number, exc) from exc
            key = item.id.encode()
            if stored is not None and same(stored, item):
                if key in placed:
                    same_duplicates += 1
                else:
                    report.unchanged += 1
                    placed.add(key)
            elif key in placed:
                writer.add(item, "duplicate", number)
            elif stored is not None and existing == "skip":
                report.skipped_existing += 1
            else:
                writer.add(item, "new" if stored is None else "replace", number)
        writer.flush()
    except StoreFailed as failure:
        raise TransferAborted(
            f"line {failure.label}: the {manager.backend_name} store failed after "
            f"{writer.counts['new'] + writer.counts['replace']} sessions were written: "
            f"{failure.error}",
            report=report,
        ) from failure.error
    finally:
        report.imported, report.replaced = writer.counts["new"], writer.counts["replace"]
        report.duplicates = same_duplicates + writer.counts["duplicate"]
    report.digest = reader.digest.hexdigest()
    report.end_problem = reader.end_problem()
    if progress is not None:
        progress("import", size or reader.position, size or reader.position)


def migrate_sessions(
    source: SessionManager,
    target: SessionManager,
    *,
    include_expired: bool = False,
    delete_source: bool = False,
    progress: Progress | None = None,
) -> MigrationReport:
    """Copy every live session (with ``include_expired``, every stored one) from ``source`` to
    ``target``, verify the copy, and with ``delete_source`` remove what was verified.

    Nothing is touched: timestamps, both timeouts, owners, metadata and versions arrive exactly
    as stored (versions are data: the target's own versioning does not apply to a copy). Which
    sessions are taken is decided against one instant (the source's clock at the start), so a
    session that expires during a long migration is still copied and verified.

    *Not onto itself*: when both managers report the same
    :meth:`~sessionkeeper.SessionManager.identity` (one store reached through two spellings of
    its path or URL), :class:`SameStoreError` is raised before anything is read or written.

    *Resumable*: a session already in the target exactly so (byte for byte as encoded) is not
    written again, so running the migration again after an interruption continues where it
    stopped, and never duplicates (ids are keys) nor loses a session.

    *Verified*: the source is read again and every session looked up in the target; both sides'
    counts and :class:`SessionDigest` are in the report, and :attr:`MigrationReport.verified` is
    true only when they match exactly. A session written in the source during the migration
    makes the verification fail; running the migration again copies it.

    ``delete_source`` deletes from the source, after a verified copy only, each session this
    run copied that the target holds exactly so (the source must be open for writing). A session
    this run found already in the target is deleted only when both stores report identities
    (and so are proven distinct); otherwise it is kept and counted in
    :attr:`MigrationReport.kept`, as is a session written to the source after the copy: a store
    that cannot say what it is can never be emptied by a migration onto itself. Raises
    :class:`TransferAborted` (with the report so far) when a store fails part-way.
    """
    now = source.clock()
    report = MigrationReport(
        source_backend=source.backend_name,
        target_backend=target.backend_name,
        now=now,
        include_expired=include_expired,
    )
    moved = _Moved() if delete_source else None
    try:
        report.source_identity = source.identity()
        report.target_identity = target.identity()
        if report.source_identity is not None and report.source_identity == report.target_identity:
            raise SameStoreError(
                f"the source and the target are the same store ({report.source_identity}): "
                "migrating it onto itself copies nothing, and deleting the source would delete "
                "every session",
                report=report,
            )
        _copy(source, target, report, progress, moved)
        _verify(source, target, report, progress)
        if moved is not None and report.verified:
            distinct = report.source_identity is not None and report.target_identity is not None
            _delete_verified(source, target, report, progress, moved, distinct)
    except ExportError:
        raise
    except SessionKeeperError as exc:
        raise TransferAborted(
            f"the migration stopped after {report.copied + report.replaced} sessions were "
            f"written: {exc}",
            report=report,
        ) from exc
    return report


@attrs.define
class _Moved:
    """What one migration run did with each session, by the fingerprint of its encoded record:
    ``copied`` it wrote to the target, ``found`` already there exactly so. Only these may be
    deleted from the source (kept only with ``delete_source``: 24 to 48 bytes a session)."""

    copied: Fingerprints = attrs.field(factory=Fingerprints)
    found: Fingerprints = attrs.field(factory=Fingerprints)


def _copy(
    source: SessionManager,
    target: SessionManager,
    report: MigrationReport,
    progress: Progress | None,
    moved: _Moved | None,
) -> None:
    total = estimate(source, progress)
    done = 0

    def reject(session_id: str, exc: InvalidSession) -> None:
        report.rejected += 1
        capped(report.errors, f"session {session_id!r}: {exc}")

    def stored(session: Session) -> None:
        if moved is not None:
            moved.copied.add(encode_session(session))

    writer = BatchWriter(target, reject, stored)
    try:
        for session in selected(source, report.now, report.include_expired):
            found = raw_fetch(target, session.id)
            if found is not None and same(found, session):
                report.unchanged += 1
                if moved is not None:
                    moved.found.add(encode_session(session))
            else:
                writer.add(session, "new" if found is None else "replace", session.id)
            done += 1
            if progress is not None and done % PROGRESS_EVERY == 0:
                progress("copy", done, max(total or 0, done))
        writer.flush()
    finally:
        report.copied, report.replaced = writer.counts["new"], writer.counts["replace"]
    if progress is not None:
        progress("copy", done, done)


def _verify(
    source: SessionManager,
    target: SessionManager,
    report: MigrationReport,
    progress: Progress | None,
) -> None:
    total = report.read
    source_digest, target_digest = SessionDigest(), SessionDigest()
    for session in selected(source, report.now, report.include_expired):
        source_digest.add(session)
        stored = raw_fetch(target, session.id)
        if stored is None:
            report.missing += 1
        else:
            target_digest.add(stored)
            if not same(stored, session):
                report.differing += 1
        if progress is not None and source_digest.count % PROGRESS_EVERY == 0:
            progress("verify", source_digest.count, max(total, source_digest.count))
    if progress is not None:
        progress("verify", source_digest.count, source_digest.count)
    report.source_count, report.source_digest = source_digest.count, source_digest.hexdigest()
    report.target_count, report.target_digest = target_digest.count, target_digest.hexdigest()
    report.verified = (
        report.missing == 0 and report.differing == 0 and source_digest == target_digest
    )


def _delete_verified(
    source: SessionManager,
    target: SessionManager,
    report: MigrationReport,
    progress: Progress | None,
    moved: _Moved,
    distinct: bool,
) -> None:
    """Delete from the source what this run copied (and, when the stores are ``distinct``,
    what it found already copied), each only if the target still holds it exactly so."""
    total = report.source_count
    seen = 0
    for session in selected(source, report.now, report.include_expired):
        seen += 1
        key = encode_session(session)
        if key in moved.copied or (distinct and key in moved.found):
            stored = raw_fetch(target, session.id)
            if stored is not None and same(stored, session) and source.delete(session.id):
                report.deleted += 1
        else:
            report.kept += 1
        if progress is not None and seen % PROGRESS_EVERY == 0:
            progress("delete", seen, max(total, seen))
    if progress is not None:
        progress("delete", seen, seen)
