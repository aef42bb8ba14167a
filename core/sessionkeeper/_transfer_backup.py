"""Backups: a timestamped, gzip-compressed export into a directory, and pruning of old ones.

What ``sessionkeeper backup`` does, callable from Python (a scheduler inside the application, for
the per-process memory backend). One reading of the manager's clock names the file *and* is the
export's instant (its header's ``exported_at``), so the name never disagrees with the content.
"""

from __future__ import annotations

import contextlib
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import attrs

from ._errors import ExportTargetError
from ._manager import SessionManager
from ._transfer import export_sessions
from ._transfer_common import ExportReport, Progress

__all__ = ["BACKUP_SUFFIX", "BackupReport", "backup_name", "backup_sessions", "list_backups"]

#: The end of every backup's file name (gzip-compressed JSON Lines).
BACKUP_SUFFIX: Final = ".jsonl.gz"


@attrs.define
class BackupReport(ExportReport):
    """What :func:`backup_sessions` wrote (the export's report) and the older backups it
    deleted (``deleted``, their paths)."""

    deleted: list[str] = attrs.field(factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible."""
        return attrs.asdict(self)


def backup_name(prefix: str, now: int) -> str:
    """The file name of a backup taken at ``now`` (ms since the Unix epoch):
    ``PREFIX-YYYYMMDDTHHMMSS.mmmZ.jsonl.gz``, in UTC, so the names sort by time."""
    seconds, millis = divmod(now, 1000)
    moment = datetime.fromtimestamp(seconds, UTC)
    return f"{prefix}-{moment:%Y%m%dT%H%M%S}.{millis:03d}Z{BACKUP_SUFFIX}"


def list_backups(directory: Path, prefix: str) -> list[Path]:
    """This prefix's backups in ``directory``, oldest first (the names sort by time); a symbolic
    link or anything but a regular file is not one."""
    pattern = re.compile(
        re.escape(prefix) + r"-\d{8}T\d{6}\.\d{3}Z(?:-\d+)?" + re.escape(BACKUP_SUFFIX)
    )
    return sorted(
        p
        for p in directory.iterdir()
        if pattern.fullmatch(p.name) and p.is_file() and not p.is_symlink()
    )


def backup_sessions(
    manager: SessionManager,
    directory: str | os.PathLike[str],
    *,
    prefix: str = "sessionkeeper",
    keep: int | None = None,
    include_expired: bool = False,
    progress: Progress | None = None,
) -> BackupReport:
    """Export ``manager``'s sessions to ``directory/PREFIX-<time>.jsonl.gz``; with ``keep``,
    then delete all but the ``keep`` newest backups of this prefix there.

    ``directory`` is created (mode 0700) when missing; a name already taken (by anything, even a
    dangling symbolic link) gets a ``-1``, ``-2`` … suffix. The file is written as
    :func:`~sessionkeeper.transfer.export_sessions` writes (mode 0600, in place only once
    complete), and older backups are deleted only after it is. Raises :class:`ExportTargetError`
    when the directory cannot be created.
    """
    if keep is not None and keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    folder = Path(directory)
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportTargetError(f"cannot create {folder}: {exc.strerror or exc}") from None
    now = manager.clock()  # one reading: the file's name and the export's instant
    name = backup_name(prefix, now)
    target = folder / name
    serial = 1
    while os.path.lexists(target):  # a dangling symlink, a FIFO: taken names too
        target = folder / name.replace(BACKUP_SUFFIX, f"-{serial}{BACKUP_SUFFIX}")
        serial += 1
    exported = export_sessions(
        manager, target, include_expired=include_expired, progress=progress, now=now
    )
    report = BackupReport(**attrs.asdict(exported))
    if keep is not None:
        existing = list_backups(folder, prefix)
        for old in existing[: max(len(existing) - keep, 0)]:
            if old == target:
                continue
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
            report.deleted.append(os.fspath(old))
    return report
